"""Judges in the real daemon: killed mid-audit and restarted, nothing paid for is lost or paid twice;
the key stays out of logs and /metrics; a missing key is caught at start."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from audit_servers import COMPLETION_TOKENS, FakeJudge, score_for
from support import AgentProcess, append_lines

KEY = "sk-live-DO-NOT-LEAK-7f3a9c"
AUDIT = "judge_helpful"
N = 30


@pytest.fixture
def slow_judge() -> Iterator[FakeJudge]:
    server = FakeJudge(api_key=KEY, delay_seconds=0.25)
    server.start()
    yield server
    server.stop()


def judge_config(tmp_path: Path, base_url: str, **judge: Any) -> tuple[Path, Path]:
    records = tmp_path / "outputs.jsonl"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "source": {"type": "jsonl", "path": str(records)},
        "proxies": [{"name": "thumbs_up", "field": "proxy.thumbs_up"}],
        "audits": [{"name": AUDIT, "llm_judge": {
            "base_url": base_url, "model": "judge-test", "api_key_env": "JUDGE_API_KEY",
            "prompt": "id={id} Reply: {output}. Rate 1 to 5.", "scale": [1, 5], "concurrency": 2,
            "price_per_1k_completion_tokens": 1.0, **judge}}],
        "audit_sampling": {"rate": 1.0},
        "state_dir": str(tmp_path / "state"),
        "schedule": {"ingest_seconds": 0.1, "audit_seconds": 0.1, "detect_seconds": 1},
        "log": {"level": "DEBUG", "format": "json"}}))
    return config, records


def stored_results(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT id FROM audit_queue WHERE result IS NOT NULL").fetchall()
    return {r[0] for r in rows}


@pytest.mark.slow
def test_kill_mid_audit_and_restart_loses_nothing_and_pays_once(
        tmp_path: Path, slow_judge: FakeJudge, agent_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUDGE_API_KEY", KEY)
    config, records = judge_config(tmp_path, slow_judge.base_url)
    ids = [f"delay-{i:03d}" for i in range(N)]
    append_lines(records, [{"id": rid, "ts": time.time(), "output": f"reply {rid}", "proxy": {"thumbs_up": 1}}
                           for rid in ids])
    first: AgentProcess = agent_factory(config).start()
    deadline = time.monotonic() + 20
    while not (sum(slow_judge.replied.values()) >= 8 and slow_judge.in_flight() > 0):
        assert time.monotonic() < deadline, "the judge never got busy"
        time.sleep(0.01)
    first.kill()  # SIGKILL: no shutdown code runs
    db = tmp_path / "state" / "goodhart.db"
    before = stored_results(db)
    assert 0 < len(before) < N

    second: AgentProcess = agent_factory(config).start()
    assert second.wait_for("goodhart_audits_succeeded_total", N, timeout=30, audit=AUDIT) == N
    assert second.wait_for("goodhart_audit_queue_depth", 0, audit=AUDIT) == 0
    with sqlite3.connect(db) as conn:
        joined = dict(conn.execute("SELECT id, audit_value FROM pairs WHERE audit = ?", (AUDIT,)).fetchall())
    assert joined == {rid: score_for(rid) for rid in ids}  # every score, joined exactly once
    assert all(slow_judge.calls[rid] == 1 for rid in before)  # a stored score is never asked for again
    repeated = {rid for rid in ids if slow_judge.calls[rid] > 1}
    assert len(repeated) <= 2 and all(slow_judge.calls[rid] == 2 for rid in repeated)  # only what was in flight
    assert all(len(slow_judge.keys_by_id[rid]) == 1 for rid in ids)  # ...and with the same Idempotency-Key
    assert second.value("goodhart_judge_tokens_total", audit=AUDIT, kind="completion") == N * COMPLETION_TOKENS
    assert second.value("goodhart_audits_requested_total", audit=AUDIT) == N
    assert second.value("goodhart_up", component="judge") == 1

    metrics_text = requests.get(second.url + "/metrics", timeout=5).text
    assert second.terminate() == 0
    logs = first.log_path.read_text() + second.log_path.read_text()
    assert "audit" in logs and KEY not in logs and KEY not in metrics_text
    assert slow_judge.unauthorized == 0


def test_judge_health_metrics_and_the_circuit_on_metrics(
        tmp_path: Path, agent_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    judge = FakeJudge(api_key=KEY)
    judge.start()
    try:
        monkeypatch.setenv("JUDGE_API_KEY", KEY)
        config, records = judge_config(tmp_path, judge.base_url, circuit_breaker={"failure_threshold": 2},
                                       budget={"per_minute": 100})
        append_lines(records, [{"id": f"down-{i}", "ts": time.time(), "proxy": {"thumbs_up": 1}} for i in range(5)])
        agent: AgentProcess = agent_factory(config).start()
        assert agent.wait_for("goodhart_audit_circuit_open", 1, audit=AUDIT) == 1
        m = agent.metrics()
        assert m[("goodhart_up", (("component", "judge"),))] == 0
        assert m[("goodhart_audit_retries_total", (("audit", AUDIT), ("reason", "server_error")))] == 2
        assert m[("goodhart_audits_failed_total", (("audit", AUDIT), ("reason", "unparseable")))] == 0
        assert m[("goodhart_audit_budget_capacity", (("audit", AUDIT), ("window", "minute")))] == 100
        assert 95 <= m[("goodhart_audit_budget_remaining", (("audit", AUDIT), ("window", "minute")))] < 100
        assert m[("goodhart_audit_latency_seconds_count", (("audit", AUDIT),))] == 2
        assert m[("goodhart_audit_queue_depth", (("audit", AUDIT),))] == 5
        assert ("goodhart_job_runs_total", (("task", "audit"),)) in m
    finally:
        judge.stop()


@pytest.mark.slow
def test_a_missing_key_stops_run_but_only_warns_in_check_config(tmp_path: Path) -> None:
    config, records = judge_config(tmp_path, "http://127.0.0.1:9/v1")
    records.touch()
    env = {k: v for k, v in os.environ.items() if k != "JUDGE_API_KEY"}
    line = "audits.0.llm_judge.api_key_env: environment variable JUDGE_API_KEY is not set"
    run = subprocess.run([sys.executable, "-m", "agent", "run", "--config", str(config), "--listen", "127.0.0.1:0"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert run.returncode == 2 and run.stderr.strip() == line
    check = subprocess.run([sys.executable, "-m", "agent", "check-config", str(config)],
                           capture_output=True, text=True, timeout=60, env=env)
    assert check.returncode == 0 and f"warning: {line}" in check.stderr
    assert check.stdout.startswith("ok:")


def test_check_config_strict_refuses_what_run_refuses(tmp_path: Path) -> None:
    config, _records = judge_config(tmp_path, "http://127.0.0.1:9/v1")
    env = {k: v for k, v in os.environ.items() if k != "JUDGE_API_KEY"}
    strict = [sys.executable, "-m", "agent", "check-config", str(config), "--strict"]
    refused = subprocess.run(strict, capture_output=True, text=True, timeout=60, env=env)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.strip() == "audits.0.llm_judge.api_key_env: environment variable JUDGE_API_KEY is not set"
    passed = subprocess.run(strict, capture_output=True, text=True, timeout=60, env={**env, "JUDGE_API_KEY": KEY})
    assert passed.returncode == 0 and passed.stdout.startswith("ok:") and passed.stderr == ""
