"""Writes that change state need a token or an explicit opt-in when reachable beyond localhost, and
``/v1/rebaseline`` reads JSON only (issue #17, item 8); the real daemon in a subprocess.

Binding 0.0.0.0 is the point of the first two tests: each agent listens only until it refuses or
is stopped, and nothing but 127.0.0.1 ever connects.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import requests
from support import AgentProcess, free_port, wait_until, write_config


def shared_push_config(tmp_path: Path, **source: Any) -> Path:
    return write_config(tmp_path / "config.yaml", source={"type": "http_push", "listen": "shared", **source},
                        state_dir=str(tmp_path / "state"), log={"level": "INFO", "format": "json"},
                        schedule={"ingest_seconds": 0.2, "detect_seconds": 0.5, "retention_seconds": 60})


def test_shared_pushes_on_a_non_loopback_listener_without_a_token_are_refused_at_start(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "agent", "run", "--config", str(shared_push_config(tmp_path)),
                          "--listen", f"0.0.0.0:{free_port()}"], capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("source.listen: ") and "source.allow_unauthenticated" in lines[0]


def test_the_explicit_opt_in_starts_and_warns(tmp_path: Path) -> None:
    port = free_port()
    agent = AgentProcess(shared_push_config(tmp_path, allow_unauthenticated=True), port, tmp_path / "agent.log")
    agent.proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config", str(agent.config), "--listen", f"0.0.0.0:{port}"],
        stdout=open(agent.log_path, "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115 - closed with the process
    try:
        agent.wait_ready()
        assert "push endpoint accepts unauthenticated records beyond localhost" in agent.log_path.read_text()
    finally:
        assert agent.terminate() == 0


def test_shared_pushes_on_a_loopback_main_listener_need_no_token(tmp_path: Path, agent_factory: Any) -> None:
    agent: AgentProcess = agent_factory(shared_push_config(tmp_path)).start()  # 127.0.0.1: no token needed
    assert "unauthenticated" not in agent.log_path.read_text()


def test_rebaseline_reads_json_only(tmp_path: Path, agent_factory: Any) -> None:
    agent: AgentProcess = agent_factory(shared_push_config(tmp_path)).start()
    url = agent.url + "/v1/rebaseline"
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"Content-Type": content_type} if content_type else {}
        resp = requests.post(url, data=b"{}", headers=headers, timeout=10)
        assert resp.status_code == 415, (content_type, resp.text)
    assert requests.post(url, json={}, timeout=10).status_code == 200
    assert agent.value("goodhart_http_errors_total", listener="main", status="415") == 3
    events = wait_until(lambda: requests.get(agent.url + "/v1/events", timeout=5).json()["events"],
                        what="the one rebaseline event")
    assert sum(e.get("event") == "rebaseline" for e in events) == 1  # type: ignore[union-attr]
