"""/readyz tells whether the store takes writes, and a corrupt store stops the start with one line
naming the file (issue #17, item 7); the real daemon on a real SQLite file."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import requests
from support import AgentProcess, record, wait_until, write_config

from agent.store import DB_FILENAME

T0 = 1_790_000_000.0


def push_config(tmp_path: Path) -> Path:
    return write_config(tmp_path / "config.yaml", source={"type": "http_push", "listen": "shared"},
                        state_dir=str(tmp_path / "state"),
                        schedule={"ingest_seconds": 0.2, "detect_seconds": 0.5, "retention_seconds": 60},
                        log={"level": "INFO", "format": "json"})


def readyz(agent: AgentProcess) -> tuple[int, str]:
    resp = requests.get(agent.url + "/readyz", timeout=10)
    return resp.status_code, resp.text


def test_readyz_is_503_with_the_reason_while_the_store_refuses_writes_and_200_again_after(
        tmp_path: Path, agent_factory: Any) -> None:
    agent: AgentProcess = agent_factory(push_config(tmp_path)).start()
    holder = sqlite3.connect(tmp_path / "state" / DB_FILENAME, isolation_level=None, timeout=1)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the store: no write of the agent can land
    try:
        _, text = wait_until(lambda: (r := readyz(agent))[0] == 503 and r, timeout=30,
                             what="/readyz not ready while the store is locked")  # type: ignore[misc]
        assert "store not writable" in text and "locked" in text
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    wait_until(lambda: readyz(agent)[0] == 200, timeout=30, what="/readyz ready again")
    assert requests.post(agent.url + "/v1/records", json=[record("r1", T0)], timeout=10).status_code == 202


def corrupt_an_index(db_path: Path) -> None:
    """Overwrite an index's root page past its header with garbage: the file still opens."""
    conn = sqlite3.connect(db_path)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE type = 'index' AND tbl_name = 'outputs' "
                        "AND rootpage > 1 ORDER BY rootpage LIMIT 1").fetchone()[0]
    conn.close()
    with open(db_path, "r+b") as f:
        f.seek((root - 1) * page_size + 8)
        f.write(b"\xff" * (page_size - 16))


def test_a_corrupt_store_stops_the_start_with_one_line_naming_the_file(tmp_path: Path, agent_factory: Any) -> None:
    config = push_config(tmp_path)
    agent: AgentProcess = agent_factory(config).start()
    outputs = [record(f"o{i}", T0 + i) for i in range(300)]
    assert requests.post(agent.url + "/v1/records", json=outputs, timeout=10).status_code == 202
    assert agent.terminate() == 0
    db_path = tmp_path / "state" / DB_FILENAME
    corrupt_an_index(db_path)
    run = subprocess.run([sys.executable, "-m", "agent", "run", "--config", str(config), "--listen", "127.0.0.1:0"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode in (1, 2), run
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(db_path) in lines[0] and "corrupt" in lines[0], run.stderr
