"""Fleet mode end to end: real gateway and forwarder processes (`goodhart-agent run`), real files, real kills.

The gateway is an ordinary agent with an `http_push` source; each forwarder tails its own JSONL file
and has `forward:` set. What the gateway holds is read from its SQLite file (read-only, beside the
running process), so "exactly once" is checked on the stored outputs, not on a counter.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from support import AgentProcess, append_lines, free_port, wait_until

from agent.cli import main
from agent.store import DB_FILENAME

T0 = 1_790_000_000.0
PROXIES = [{"name": "thumbs_up", "field": "proxy.thumbs_up"},
           {"name": "words", "compute": {"kind": "length", "field": "output", "unit": "words"}}]
AUDITS = [{"name": "resolved", "field": "audit.resolved"}]


def gateway_config(tmp: Path, push_port: int, **source: Any) -> Path:
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump({
        "source": {"type": "http_push", "listen": f"127.0.0.1:{push_port}", **source},
        "state_dir": str(tmp / "gateway"), "proxies": PROXIES, "audits": AUDITS,
        "segments": {"field": "labels.pod"}, "schedule": {"detect_seconds": 1}}))
    return path


def forwarder_config(tmp: Path, name: str, push_port: int, **forward: Any) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "source": {"type": "jsonl", "path": str(tmp / f"{name}.jsonl")},
        "state_dir": str(tmp / f"{name}-state"), "proxies": PROXIES, "audits": AUDITS,
        "segments": {"field": "labels.pod"}, "schedule": {"ingest_seconds": 0.2},
        "forward": {"url": f"http://127.0.0.1:{push_port}/v1/records", "flush_seconds": 0.2,
                    "backoff_initial_seconds": 0.2, "backoff_max_seconds": 1.0, **forward}}))
    return path


def records(start: int, n: int, prefix: str = "c") -> list[dict[str, Any]]:
    return [{"id": f"{prefix}{i:06d}", "ts": T0 + i, "output": "thanks that fixed it",
             "proxy": {"thumbs_up": i % 2}, **({"audit": {"resolved": 1}} if i % 3 == 0 else {})}
            for i in range(start, start + n)]


def gateway_ids(tmp: Path) -> list[str]:
    """Output ids the gateway has stored (its database read beside the running process)."""
    db = sqlite3.connect(f"file:{tmp / 'gateway' / DB_FILENAME}?mode=ro", uri=True)
    try:
        return [r[0] for r in db.execute("SELECT id FROM outputs")]
    except sqlite3.OperationalError:
        return []  # not created yet
    finally:
        db.close()


def start_forwarder(agent_factory: Any, config: Path, pod: str, **env: str) -> AgentProcess:
    proc: AgentProcess = agent_factory(config)
    proc.env = {"POD_NAME": pod, "POD_NAMESPACE": "shop", **env}
    return proc.start()


def metric(proc: AgentProcess, name: str, **labels: str) -> float:
    return proc.value(name, **labels) or 0.0


@pytest.mark.slow
def test_records_cross_a_forwarder_once_with_the_pods_identity_and_no_detection(
        tmp_path: Path, agent_factory: Any) -> None:
    push = free_port()
    gateway: AgentProcess = agent_factory(gateway_config(tmp_path, push)).start()
    fwd = start_forwarder(agent_factory, forwarder_config(tmp_path, "a", push), "bot-a")
    append_lines(tmp_path / "a.jsonl", [*records(0, 500), "not json"])
    wait_until(lambda: len(gateway_ids(tmp_path)) == 500, what="500 outputs at the gateway")
    wait_until(lambda: metric(fwd, "goodhart_forward_records_total") == 500, what="500 acknowledged")
    assert sorted(gateway_ids(tmp_path)) == [f"c{i:06d}" for i in range(500)]
    assert metric(fwd, "goodhart_records_total", source="jsonl") == 501
    assert metric(fwd, "goodhart_records_rejected_total", reason="not_json") == 1  # rejected where it was read
    assert metric(gateway, "goodhart_records_total", source="http_push") == 500
    assert metric(gateway, "goodhart_records_rejected_total", reason="duplicate") == 0
    assert metric(fwd, "goodhart_up", component="gateway") == 1
    # The pod's identity arrived (the gateway segments by labels.pod), computed proxies came along.
    wait_until(lambda: gateway.value("goodhart_audited_pairs", proxy="words", audit="resolved", segment="bot-a"),
               what="pairs in the forwarder's pod segment")
    # A forwarder runs no detectors and buys no audits, and serves no detection routes.
    series = {name for name, _ in fwd.metrics()}
    assert "goodhart_divergence_alarm" not in series and "goodhart_audits_requested_total" not in series
    tasks = {dict(labels)["task"] for name, labels in fwd.metrics() if name == "goodhart_job_runs_total"}
    assert tasks == {"ingest", "forward", "store_probe"}  # and the store's write probe (/readyz)
    assert requests.get(fwd.url + "/v1/events", timeout=5).status_code == 404
    assert fwd.terminate() == 0 and gateway.terminate() == 0


@pytest.mark.slow
def test_a_gateway_down_for_a_while_gets_everything_afterwards_once(tmp_path: Path, agent_factory: Any) -> None:
    push = free_port()
    gateway: AgentProcess = agent_factory(gateway_config(tmp_path, push)).start()
    fwd = start_forwarder(agent_factory, forwarder_config(tmp_path, "a", push, batch_records=100), "bot-a")
    append_lines(tmp_path / "a.jsonl", records(0, 400))
    wait_until(lambda: len(gateway_ids(tmp_path)) == 400, what="the first 400 delivered")
    gateway.kill()  # SIGKILL: the outage starts
    append_lines(tmp_path / "a.jsonl", records(400, 600))
    wait_until(lambda: metric(fwd, "goodhart_forward_buffer_records") == 600, what="600 buffered")
    wait_until(lambda: metric(fwd, "goodhart_up", component="gateway") == 0, what="the gateway reported down")
    time.sleep(10)  # the outage lasts 10 s (the scenario, not a wait for a state); retries back off meanwhile
    failures = metric(fwd, "goodhart_forward_send_failures_total", reason="connection")
    assert 3 <= failures < 100  # retried, with backoff (at most 1 s apart here), not in a tight loop
    assert metric(fwd, "goodhart_forward_buffer_oldest_age_seconds") >= 10
    gateway.start()
    wait_until(lambda: metric(fwd, "goodhart_forward_buffer_records") == 0, what="the buffer drained")
    ids = gateway_ids(tmp_path)
    assert len(ids) == 1000 and len(set(ids)) == 1000
    assert metric(fwd, "goodhart_forward_records_total") == 1000
    assert sum(metric(fwd, "goodhart_forward_dropped_records_total", reason=r)
               for r in ("buffer_full", "too_old", "refused")) == 0
    assert metric(fwd, "goodhart_up", component="gateway") == 1


@pytest.mark.slow
def test_a_full_buffer_drops_the_oldest_counted_and_stays_bounded(tmp_path: Path, agent_factory: Any) -> None:
    push = free_port()  # no gateway yet: everything buffers
    limit = 64 << 10
    fwd = start_forwarder(agent_factory, forwarder_config(tmp_path, "a", push, max_buffer_bytes=limit,
                                                          batch_bytes=8192), "bot-a")
    assert fwd.proc is not None
    append_lines(tmp_path / "a.jsonl", records(0, 1000))
    wait_until(lambda: metric(fwd, "goodhart_records_total", source="jsonl") == 1000, what="1000 read")
    rss_before = vm_rss_kib(fwd.proc.pid)
    total = 1000
    for chunk in range(1000, 21_000, 5000):  # 20,000 more records, about 3 MB, into a 64 KiB buffer
        append_lines(tmp_path / "a.jsonl", records(chunk, 5000))
        total += 5000
        wait_until(lambda n=total: metric(fwd, "goodhart_records_total", source="jsonl") == n, what=f"{total} read")
    # The bound, plus at most the one batch a send is holding (never evicted mid-send; docs/fleet.md).
    assert metric(fwd, "goodhart_forward_buffer_bytes") <= limit + 8192
    # Once that send has failed, the next flush evicts the held batch too if it no longer fits.
    wait_until(lambda: metric(fwd, "goodhart_forward_buffer_bytes") <= limit, what="the buffer within its bound")
    buffered = metric(fwd, "goodhart_forward_buffer_records")
    dropped = metric(fwd, "goodhart_forward_dropped_records_total", reason="buffer_full")
    assert dropped > 0 and buffered + dropped == total
    assert metric(fwd, "goodhart_store_size_bytes") < 4 << 20  # the file reuses its pages
    growth_mib = (vm_rss_kib(fwd.proc.pid) - rss_before) / 1024
    assert growth_mib < 32, f"RSS grew {growth_mib:.0f} MiB"
    # The gateway comes up: what was kept (the newest) arrives, once.
    agent_factory(gateway_config(tmp_path, push)).start()
    wait_until(lambda: metric(fwd, "goodhart_forward_buffer_records") == 0, timeout=60, what="the buffer drained")
    ids = gateway_ids(tmp_path)
    assert len(ids) == len(set(ids)) == buffered == metric(fwd, "goodhart_forward_records_total")
    assert max(ids) == f"c{total - 1:06d}"  # the oldest were dropped, the newest kept


@pytest.mark.slow
def test_kill_9_of_a_forwarder_mid_stream_loses_and_doubles_nothing(tmp_path: Path, agent_factory: Any) -> None:
    push = free_port()
    agent_factory(gateway_config(tmp_path, push)).start()
    config = forwarder_config(tmp_path, "a", push, batch_records=20)
    fwd = start_forwarder(agent_factory, config, "bot-a")
    append_lines(tmp_path / "a.jsonl", records(0, 3000))
    wait_until(lambda: metric(fwd, "goodhart_forward_records_total") >= 100, what="delivery under way")
    fwd.kill()  # SIGKILL mid-stream: no shutdown hook runs
    delivered_before = len(gateway_ids(tmp_path))
    assert delivered_before < 3000, "the stream finished before the kill; make it longer"
    append_lines(tmp_path / "a.jsonl", records(3000, 1000))
    again = start_forwarder(agent_factory, config, "bot-a")
    wait_until(lambda: len(gateway_ids(tmp_path)) == 4000, timeout=60, what="all 4000 at the gateway")
    wait_until(lambda: metric(again, "goodhart_forward_buffer_records") == 0, what="the buffer drained")
    ids = gateway_ids(tmp_path)
    assert sorted(ids) == [f"c{i:06d}" for i in range(4000)]  # nothing lost, nothing doubled
    # Read once from the file: the offset was committed with the buffered records.
    assert metric(again, "goodhart_records_total", source="jsonl") == 4000


@pytest.mark.slow
def test_a_wrong_token_is_counted_and_the_gateway_reported_down(tmp_path: Path, agent_factory: Any) -> None:
    push = free_port()
    gateway: AgentProcess = agent_factory(gateway_config(tmp_path, push, token_env="GW_TOKEN"))
    gateway.env = {"GW_TOKEN": "right-token"}
    gateway.start()
    fwd = start_forwarder(agent_factory, forwarder_config(tmp_path, "a", push, token_env="FWD_TOKEN"), "bot-a",
                          FWD_TOKEN="wrong-token")
    append_lines(tmp_path / "a.jsonl", records(0, 10))
    wait_until(lambda: metric(fwd, "goodhart_forward_send_failures_total", reason="unauthorized") >= 1,
               what="a 401 counted")
    assert metric(fwd, "goodhart_up", component="gateway") == 0
    assert metric(fwd, "goodhart_forward_buffer_records") == 10  # kept for when the token is fixed
    assert metric(gateway, "goodhart_source_errors_total", reason="unauthorized") >= 1
    assert gateway_ids(tmp_path) == []
    log_text = (tmp_path / "agent-1.log").read_text()
    assert "wrong-token" not in log_text and "right-token" not in log_text


def test_check_config_says_a_forwarder_is_one_and_names_bad_forward_keys(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = forwarder_config(tmp_path, "a", 10101)
    assert main(["check-config", str(good)]) == 0
    assert "ok: forwarder to http://127.0.0.1:10101/v1/records" in capsys.readouterr().out
    tree = yaml.safe_load(good.read_text())
    tree["forward"].update({"batch_records": 0, "url": "gateway:10101", "colour": "blue"})
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(tree))
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    for key in ("forward.batch_records:", "forward.url:", "forward.colour: unknown key"):
        assert key in err, err


def test_a_forwarder_without_its_token_refuses_to_start(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_TOKEN", raising=False)
    config = forwarder_config(tmp_path, "a", 10101, token_env="NO_SUCH_TOKEN")
    assert main(["check-config", str(config)]) == 0  # where check-config runs may not hold the secret: a warning
    assert "warning: forward.token_env: environment variable NO_SUCH_TOKEN is not set" in capsys.readouterr().err
    assert main(["check-config", "--strict", str(config)]) == 2
    run = subprocess.run([sys.executable, "-m", "agent", "run", "--config", str(config), "--listen",
                          f"127.0.0.1:{free_port()}"], capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in os.environ.items() if k != "NO_SUCH_TOKEN"})
    assert run.returncode == 2
    assert "forward.token_env: environment variable NO_SUCH_TOKEN is not set" in run.stderr


def vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")
