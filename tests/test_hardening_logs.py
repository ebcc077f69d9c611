"""DEBUG logs carry no query string and no key-looking value (issue #17, item 10): the real daemon
pulling from a URL with ``?api_key=`` from a real server that answers 500, so the HTTP client's DEBUG
line quotes the request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from support import AgentProcess, wait_until, write_config

from agent.http.server import HttpServer, Response

SECRET = "hunter2-not-a-real-key-0123456789"


def test_a_pull_urls_api_key_never_reaches_the_log(tmp_path: Path, agent_factory: Any) -> None:
    upstream = HttpServer("127.0.0.1", 0)
    upstream.route("GET", "/v1/records", lambda _: Response.text("down\n", 500))
    upstream.start(poll_interval=0.05)
    url = f"http://127.0.0.1:{upstream.port}/v1/records?api_key={SECRET}&page_size=10"
    config = write_config(tmp_path / "config.yaml", source={"type": "http_pull", "url": url, "poll_seconds": 0.2,
                                                            "backoff_initial_seconds": 0.2},
                          state_dir=str(tmp_path / "state"), log={"level": "DEBUG", "format": "json"},
                          schedule={"ingest_seconds": 0.2, "detect_seconds": 0.5, "retention_seconds": 60})
    try:
        agent: AgentProcess = agent_factory(config).start()
        wait_until(lambda: '/v1/records?<redacted> HTTP/1.1\\" 500' in agent.log_path.read_text(),
                   what="the HTTP client's DEBUG line for a pull, redacted")
        assert agent.terminate() == 0
    finally:
        upstream.stop()
    log = agent.log_path.read_text()
    assert SECRET not in log and "hunter2" not in log
