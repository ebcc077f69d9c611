"""Shared fixtures; the helpers themselves live in ``support.py`` (importable as ``support``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import AgentProcess, free_port


@pytest.fixture
def agent_factory(tmp_path: Path) -> Iterator[Any]:
    """Builds :class:`AgentProcess` instances and kills whatever is left at the end."""
    started: list[AgentProcess] = []

    def make(config: Path, port: int | None = None, args: tuple[str, ...] = ()) -> AgentProcess:
        proc = AgentProcess(config, port or free_port(), tmp_path / f"agent-{len(started)}.log", args)
        started.append(proc)
        return proc

    yield make
    for proc in started:
        proc.stop_quietly()
