"""The daemon end to end: a subprocess tailing a file, observed only through /metrics and signals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from support import AgentProcess, append_lines, free_port, label, record, wait_until, write_config

from agent.config import config_from_mapping
from agent.daemon import PUSH_ONLY_INGEST_SECONDS, ingest_every
from agent.ingest import IngestResult
from agent.sources.http_push import HttpPushSource
from agent.sources.jsonl import JsonlSource
from agent.sources.otlp import OtlpSource

T0 = time.time() - 3600  # recent: older pairs would fall to the 30-day retention


def daemon_config(tmp_path: Path, **extra: Any) -> tuple[Path, Path]:
    records = tmp_path / "outputs.jsonl"
    config = write_config(tmp_path / "config.yaml", source={"type": "jsonl", "path": str(records)},
                          state_dir=str(tmp_path / "state"),
                          schedule={"ingest_seconds": 0.2, "detect_seconds": 0.5, "retention_seconds": 60},
                          log={"level": "INFO", "format": "json"}, **extra)
    return config, records


def ingest_runs(agent: AgentProcess) -> float:
    return agent.value("goodhart_job_runs_total", task="ingest") or 0.0


def wait_for_ingest_ticks(agent: AgentProcess, ticks: int) -> None:
    """Wait until the ingest job has run ``ticks`` more times than it had so far."""
    target = ingest_runs(agent) + ticks
    wait_until(lambda: ingest_runs(agent) >= target, what=f"{ticks} more ingest ticks")


def test_counts_rejections_and_pairs_appear_on_metrics(tmp_path: Path, agent_factory: Any) -> None:
    config, records = daemon_config(tmp_path)
    good = [record(f"c{i}", T0 + i, resolved=i % 2) for i in range(10)]
    bad = ["{not json", json.dumps({"proxy": {"thumbs_up": 1}}), '{"id": "z", "proxy": {"thumbs_up": NaN}}',
           json.dumps({"id": "y", "ts": "last tuesday", "proxy": {"thumbs_up": 1}}), json.dumps([1])]
    append_lines(records, good[:5] + bad + good[5:])
    agent: AgentProcess = agent_factory(config).start()
    assert agent.wait_for("goodhart_records_total", 15, source="jsonl") == 15
    m = agent.metrics()
    for reason in ("not_json", "no_id", "bad_metric", "bad_timestamp", "not_object"):
        assert m[("goodhart_records_rejected_total", (("reason", reason),))] == 1, reason
    assert m[("goodhart_records_rejected_total", (("reason", "too_large"),))] == 0
    assert agent.wait_for("goodhart_audited_pairs", 10, audit="resolved", proxy="thumbs_up", segment="*") == 10
    assert agent.value("goodhart_build_info", version=__import__("agent").__version__) == 1
    assert agent.value("goodhart_up", component="source") == 1
    # A healthy agent runs its config, loaded at the first attempt.
    assert (m[("goodhart_config_valid", ())], m[("goodhart_config_attempts_total", ())]) == (1, 1)
    assert m[("goodhart_config_problems", ())] == 0
    assert agent.value("goodhart_last_record_timestamp_seconds", source="jsonl") == T0 + 9


def test_late_labels_join_whether_they_come_before_or_after_their_output(tmp_path: Path, agent_factory: Any) -> None:
    config, records = daemon_config(tmp_path)
    append_lines(records, [label("early", T0, 1), record("late", T0 + 1), label("orphan", T0 + 2, 0)])
    agent: AgentProcess = agent_factory(config).start()
    assert agent.wait_for("goodhart_pending_labels", 2) == 2  # "early" and "orphan" wait for their outputs
    append_lines(records, [record("early", T0 + 3), label("late", T0 + 4, 1)])
    assert agent.wait_for("goodhart_audited_pairs", 2, audit="resolved", proxy="thumbs_up", segment="*") == 2
    assert agent.wait_for("goodhart_pending_labels", 1) == 1  # only the orphan still waits
    assert agent.value("goodhart_labels_joined_total") == 2
    assert agent.value("goodhart_pending_outputs") == 0


@pytest.mark.slow
def test_rotation_and_truncation_lose_nothing(tmp_path: Path, agent_factory: Any) -> None:
    config, records = daemon_config(tmp_path)
    append_lines(records, [record(f"a{i}", T0 + i) for i in range(5)])
    agent: AgentProcess = agent_factory(config).start()
    assert agent.wait_for("goodhart_records_total", 5, source="jsonl") == 5
    append_lines(records, [record("a5", T0 + 5)])  # written just before the rename: must still be read
    os.rename(records, tmp_path / "outputs.jsonl.1")
    append_lines(records, [record(f"b{i}", T0 + 10 + i) for i in range(3)])
    assert agent.wait_for("goodhart_records_total", 9, source="jsonl") == 9
    with open(records, "r+b") as f:
        f.truncate(0)
    append_lines(records, [record("c0", T0 + 20)])
    assert agent.wait_for("goodhart_records_total", 10, source="jsonl") == 10
    assert agent.value("goodhart_records_rejected_total", reason="duplicate") == 0


@pytest.mark.slow
def test_create_mode_rotation_keeps_what_the_writer_adds_to_the_old_file(tmp_path: Path,
                                                                         agent_factory: Any) -> None:
    """logrotate ``create``: the app appends to the renamed file until it reopens its log."""
    config, records = daemon_config(tmp_path)
    append_lines(records, [record(f"a{i}", T0 + i) for i in range(3)])
    agent: AgentProcess = agent_factory(config).start()
    assert agent.wait_for("goodhart_records_total", 3, source="jsonl") == 3
    with open(records, "a", encoding="utf-8") as app_log:  # the application's handle, kept across the rename
        os.rename(records, tmp_path / "outputs.jsonl.1")
        append_lines(records, [record("b0", T0 + 10)])
        wait_for_ingest_ticks(agent, 3)  # the agent has noticed the rotation by now
        app_log.write(json.dumps(record("a3", T0 + 3)) + "\n")
        app_log.write(json.dumps(record("a4", T0 + 4)))  # its last record, without a newline
    assert agent.wait_for("goodhart_records_total", 6, source="jsonl") == 6
    assert agent.value("goodhart_records_rejected_total", reason="not_json") == 0
    assert agent.value("goodhart_records_rejected_total", reason="duplicate") == 0
    assert agent.wait_for("goodhart_pending_outputs", 6) == 6  # a3, a4 and b0 all stored


@pytest.mark.slow
def test_kill_9_mid_stream_then_restart_counts_every_record_once(tmp_path: Path, agent_factory: Any) -> None:
    config, records = daemon_config(tmp_path)
    total = 3000
    lines: list[Any] = [label("before-crash", T0, 1)]
    lines += [record(f"k{i}", T0 + i, resolved=i % 2) for i in range(total)]
    port_agent: AgentProcess = agent_factory(config).start()
    for start in range(0, len(lines), 300):  # keep writing while the agent ingests, one chunk behind
        append_lines(records, lines[start:start + 300])
        behind = max(start - 300, 0)
        wait_until(lambda n=behind: (port_agent.value("goodhart_records_total", source="jsonl") or 0) >= n,
                   what=f"the agent to ingest the first {behind} lines")
    port_agent.kill()  # the last lines are still being read: killed mid-stream
    append_lines(records, [record("before-crash", T0 + total)])  # its label was read before the crash
    restarted: AgentProcess = agent_factory(config, port_agent.port).start()
    expected = len(lines) + 1
    assert restarted.wait_for("goodhart_records_total", expected, timeout=30, source="jsonl") == expected
    assert restarted.wait_for("goodhart_audited_pairs", total + 1, timeout=30, audit="resolved",
                              proxy="thumbs_up", segment="*") == total + 1
    wait_for_ingest_ticks(restarted, 5)  # several more ingest ticks: still exactly once
    assert restarted.value("goodhart_records_total", source="jsonl") == expected
    assert restarted.value("goodhart_records_rejected_total", reason="duplicate") == 0


def test_a_backlog_is_read_on_at_once_instead_of_one_capped_step_per_interval(tmp_path: Path,
                                                                             agent_factory: Any) -> None:
    """One ingest step reads at most 20 batches; with 10 records a batch and an hour between runs,
    1,000 waiting records are all read only if the job reads on while a step stops at its cap."""
    records = tmp_path / "outputs.jsonl"
    config = write_config(tmp_path / "config.yaml", state_dir=str(tmp_path / "state"),
                          source={"type": "jsonl", "path": str(records), "max_batch_records": 10},
                          schedule={"ingest_seconds": 3600, "detect_seconds": 0.5, "retention_seconds": 60})
    append_lines(records, [record(f"b{i}", T0 + i) for i in range(1000)])
    agent: AgentProcess = agent_factory(config).start()
    assert agent.wait_for("goodhart_records_total", 1000, source="jsonl") == 1000
    wait_until(lambda: ingest_runs(agent) >= 1, what="the first ingest run to end")
    assert ingest_runs(agent) == 1  # all of it in the run at start


@pytest.mark.slow
def test_sigterm_exits_0_after_a_clean_stop_and_restart_resumes(tmp_path: Path, agent_factory: Any) -> None:
    config, records = daemon_config(tmp_path)
    append_lines(records, [record(f"s{i}", T0 + i) for i in range(20)])
    agent: AgentProcess = agent_factory(config).start()
    assert agent.wait_for("goodhart_records_total", 20, source="jsonl") == 20
    assert agent.terminate(timeout=25) == 0  # within Kubernetes' 30 s grace period, or terminate() raises
    log_lines = [json.loads(line) for line in agent.log_path.read_text().splitlines() if line.startswith("{")]
    assert any(entry["msg"] == "agent stopped" for entry in log_lines)
    append_lines(records, [record("s20", T0 + 20)])
    again: AgentProcess = agent_factory(config).start()
    assert again.wait_for("goodhart_records_total", 21, source="jsonl") == 21


def test_http_surface(tmp_path: Path, agent_factory: Any) -> None:
    config, records = daemon_config(tmp_path)
    append_lines(records, [record("h1", T0)])
    agent: AgentProcess = agent_factory(config).start()
    index = requests.get(agent.url + "/", timeout=5)
    assert index.status_code == 200 and 'href="/metrics"' in index.text
    assert requests.get(agent.url + "/healthz", timeout=5).text == "ok\n"
    assert requests.get(agent.url + "/readyz", timeout=5).status_code == 200
    assert requests.get(agent.url + "/nope", timeout=5).status_code == 404
    assert requests.post(agent.url + "/metrics", timeout=5).status_code == 405
    metrics = requests.get(agent.url + "/metrics", timeout=5)
    assert metrics.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    bad = requests.post(agent.url + "/v1/rebaseline", data=b"[", headers={"Content-Type": "application/json"},
                        timeout=5)
    assert bad.status_code == 400
    ok = requests.post(agent.url + "/v1/rebaseline", json={"proxy": "thumbs_up"}, timeout=5)
    assert ok.status_code == 200 and ok.json()["rebaselined"] is True
    typo = requests.post(agent.url + "/v1/rebaseline", json={"proxy": "thumbsup"}, timeout=5)
    assert typo.status_code == 404 and typo.json() == {"error": "no such proxy 'thumbsup'"}
    events = requests.get(agent.url + "/v1/events", timeout=5).json()["events"]
    assert any(e.get("event") == "rebaseline" for e in events)


def rebaseline_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", "rebaseline", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.slow
def test_rebaseline_cli_online_offline_and_never_behind_a_running_daemons_back(tmp_path: Path,
                                                                               agent_factory: Any) -> None:
    config, records = daemon_config(tmp_path)
    append_lines(records, [record("r1", T0, resolved=1)])
    agent: AgentProcess = agent_factory(config).start()
    online = rebaseline_cli(config, "--url", agent.url, "--proxy", "thumbs_up")
    assert online.returncode == 0 and "rebaselined through" in online.stdout
    typo = rebaseline_cli(config, "--url", agent.url, "--proxy", "thumbsup")
    assert typo.returncode == 2 and "no such proxy 'thumbsup'" in typo.stderr
    unreachable = rebaseline_cli(config, "--url", f"http://127.0.0.1:{free_port()}")
    assert unreachable.returncode == 1 and "does not answer" in unreachable.stderr
    second: AgentProcess = agent_factory(config)
    second.start(wait_ready=False)
    assert second.proc is not None and second.proc.wait(timeout=60) == 2  # one agent per state_dir
    assert "state_dir: another goodhart-agent holds" in second.log_path.read_text()
    assert agent.terminate() == 0
    offline = rebaseline_cli(config, "--url", f"http://127.0.0.1:{free_port()}")
    assert offline.returncode == 0 and "rebaselined in the store" in offline.stdout
    typo = rebaseline_cli(config, "--url", f"http://127.0.0.1:{free_port()}", "--segment", "biling")
    assert typo.returncode == 2 and "no such segment 'biling'" in typo.stderr


def test_an_agent_fed_only_by_pushes_runs_its_ingest_job_once_a_minute_not_every_second(tmp_path: Path) -> None:
    """Pushed records are stored as they arrive: reading push sources every second found nothing."""
    config = config_from_mapping({"state_dir": str(tmp_path), "schedule": {"ingest_seconds": 0.5},
                                  "proxies": [{"name": "p", "field": "p"}], "audits": [{"name": "a", "field": "a"}]},
                                 {})
    push, otlp = HttpPushSource(no_ingest, listen="127.0.0.1:0"), OtlpSource(no_ingest, listen="127.0.0.1:0")
    try:
        assert ingest_every(config, [push]) == ingest_every(config, [push, otlp]) == PUSH_ONLY_INGEST_SECONDS
        assert ingest_every(config, [push, JsonlSource(tmp_path / "x.jsonl", 1000)]) == 0.5
    finally:
        push.close()
        otlp.close()


def no_ingest(source: str, items: list[bytes | dict[str, Any]]) -> IngestResult:
    return IngestResult()
