"""A FIFO at a JSONL source's path is refused with a clear error instead of hanging ingest and
SIGTERM, and a file rewritten in place is detected by more than its first bytes (issue #17, item 9);
the real daemon."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from support import AgentProcess, record, write_config

from agent.store import DB_FILENAME


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


def test_a_file_rewritten_in_place_with_the_same_first_bytes_is_read_again_from_the_top(
        tmp_path: Path, agent_factory: Any) -> None:
    path = tmp_path / "records.jsonl"
    t0 = 1_790_000_000.0
    old = [record("a0", t0), *(record(f"a{i}", t0 + i) for i in range(1, 200))]
    path.write_text("".join(json.dumps(r) + "\n" for r in old))
    config = write_config(tmp_path / "config.yaml", source={"type": "jsonl", "path": str(path)},
                          state_dir=str(tmp_path / "state"),
                          schedule={"ingest_seconds": 0.2, "detect_seconds": 0.5, "retention_seconds": 60})
    agent: AgentProcess = agent_factory(config).start()
    assert agent.wait_for("goodhart_records_total", 200, source="jsonl") == 200
    # Rewritten in place (same inode, never shorter): the same first line, then 399 new records.
    new = [record("a0", t0), *(record(f"b{i}", t0 + i) for i in range(1, 400))]
    with path.open("r+b") as f:
        f.write("".join(json.dumps(r) + "\n" for r in new).encode())
    assert agent.wait_for("goodhart_records_total", 600, source="jsonl") == 600  # before: 400 (199 lost)
    assert agent.terminate() == 0
    db = sqlite3.connect(f"file:{tmp_path / 'state' / DB_FILENAME}?mode=ro", uri=True)
    try:
        assert db.execute("SELECT COUNT(*) FROM outputs WHERE id LIKE 'b%'").fetchone()[0] == 399
    finally:
        db.close()
