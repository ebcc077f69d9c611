"""What the commands share: loading the config as ``run`` would, durations in words, a read-only store."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from agent.compute import load_and_build
from agent.config import Config

if TYPE_CHECKING:
    from agent.store import Store


def _load(path: str) -> Config:
    """The validated config, its computed proxies built once to prove they can be (a bad regex or
    model exits 2 here, with its key path, before anything starts)."""
    config, _ = load_and_build(path)
    return config


def _duration(seconds: float) -> str:
    for unit, size in (("days", 86400.0), ("hours", 3600.0), ("minutes", 60.0)):
        if seconds >= size:
            return f"{seconds / size:,.1f} {unit}"
    return f"{seconds:.0f} seconds"


def _open_state(state_dir: str) -> Store | None:
    """The store in ``state_dir``, read-only (a daemon may be running on it); None with a message when absent."""
    from pathlib import Path

    from agent.store import DB_FILENAME, Store

    if not (Path(state_dir) / DB_FILENAME).exists():
        print(f"goodhart-agent: no store at {state_dir} (state_dir; a replay keeps one with --state-dir)",
              file=sys.stderr)
        return None
    return Store(state_dir, read_only=True)
