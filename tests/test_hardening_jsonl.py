"""A FIFO at a JSONL source's path is refused with a clear error instead of hanging ingest and
SIGTERM (issue #17, item 9); the real daemon."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from support import AgentProcess, write_config


def test_a_fifo_at_the_source_path_is_refused_counted_and_does_not_hold_up_shutdown(tmp_path: Path,
                                                                                   agent_factory: Any) -> None:
    fifo = tmp_path / "records.jsonl"
    os.mkfifo(fifo)
    config = write_config(tmp_path / "config.yaml", source={"type": "jsonl", "path": str(fifo)},
                          state_dir=str(tmp_path / "state"),
                          schedule={"ingest_seconds": 0.2, "detect_seconds": 0.5, "retention_seconds": 60})
    agent: AgentProcess = agent_factory(config).start()
    assert (agent.wait_for("goodhart_source_errors_total", 1, reason="not_regular_file") or 0) >= 1
    assert agent.value("goodhart_up", component="source") == 0
    assert agent.terminate(timeout=30) == 0  # before: open() of the FIFO blocked ingest, and shutdown with it
    log = agent.log_path.read_text()
    assert "source path is not a regular file" in log and log.count("not a regular file") == 1
