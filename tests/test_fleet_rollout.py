"""The fleet issue, end to end: a rollout replaces every sidecar, and the reference survives it.

A gateway and three forwarders (each its own state dir, each tailing its own JSONL file) carry a
support bot's healthy traffic; the gateway fits its references on it. Then the rollout: the three
forwarders are killed (-9) and replaced by three new ones with *new* state dirs and new files
(new pods, new emptyDirs), whose traffic is the new model version's, which games its proxies. On
the way the gateway itself is killed (-9) and restarted. The gateway must hold every record
exactly once and alarm on the gamed pair, about as soon as one agent replaying the same records
would. (A sidecar per pod, as before fleet mode, would have fitted its reference on the new
version and stayed quiet.)
"""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import AgentProcess, append_lines, free_port, wait_until

from agent.config import config_from_mapping
from agent.demo_world import SupportBot
from agent.replay import replay
from agent.store import DB_FILENAME

T0 = 1_790_000_000.0
HEALTHY, GAMED, CHUNK = 1200, 900, 20
PAIR = {"proxy": "thumbs_up", "audit": "resolved", "segment": "*"}
COMMON = {"proxies": [{"name": "thumbs_up", "field": "proxy.thumbs_up"},
                      {"name": "resolution_seconds", "field": "proxy.resolution_seconds", "direction": "lower"}],
          "audits": [{"name": "resolved", "field": "audit.resolved"}],
          "segments": {"field": "labels.segment"}}


def stream() -> list[dict[str, Any]]:
    """Every conversation audited (the reviewer's verdict in the record), one per second of record time."""
    bot = SupportBot(11)
    out = []
    for i in range(HEALTHY + GAMED):
        record, resolved = bot.conversation(T0 + i, gamed=i >= HEALTHY)
        out.append({**record, "audit": {"resolved": resolved}})
    return out


def gateway_ids(tmp: Path) -> list[str]:
    db = sqlite3.connect(f"file:{tmp / 'gateway' / DB_FILENAME}?mode=ro", uri=True)
    try:
        return [r[0] for r in db.execute("SELECT id FROM outputs")]
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()


def write_config(path: Path, body: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({**COMMON, **body}))
    return path


@pytest.mark.slow
def test_a_rollout_of_sidecars_keeps_the_reference_and_the_gateway_alarms(tmp_path: Path,
                                                                          agent_factory: Any) -> None:
    records = stream()
    push = free_port()
    gateway_cfg = write_config(tmp_path / "gateway.yaml", {
        "source": {"type": "http_push", "listen": f"127.0.0.1:{push}"}, "state_dir": str(tmp_path / "gateway"),
        "schedule": {"detect_seconds": 0.5, "checkpoint_seconds": 1}})

    def forwarder(name: str) -> AgentProcess:
        cfg = write_config(tmp_path / f"{name}.yaml", {
            "source": {"type": "jsonl", "path": str(tmp_path / f"{name}.jsonl")},
            "state_dir": str(tmp_path / f"{name}-state"), "schedule": {"ingest_seconds": 0.2},
            "forward": {"url": f"http://127.0.0.1:{push}/v1/records", "flush_seconds": 0.2,
                        "backoff_initial_seconds": 0.2, "backoff_max_seconds": 1.0}})
        (tmp_path / f"{name}.jsonl").touch()
        proc: AgentProcess = agent_factory(cfg)
        proc.env = {"POD_NAME": f"bot-{name}", "POD_NAMESPACE": "shop"}
        return proc.start()

    def send(pods: list[str], batch: list[dict[str, Any]]) -> None:
        for k, pod in enumerate(pods):  # round robin, as a Service spreads conversations over pods
            append_lines(tmp_path / f"{pod}.jsonl", batch[k::len(pods)])

    gateway: AgentProcess = agent_factory(gateway_cfg).start()
    old = ["a", "b", "c"]
    old_procs = [forwarder(p) for p in old]
    send(old, records[:HEALTHY])
    wait_until(lambda: len(gateway_ids(tmp_path)) == HEALTHY, timeout=60, what="the healthy traffic at the gateway")
    wait_until(lambda: gateway.value("goodhart_reference_info", **PAIR, origin="fitted"), timeout=30,
               what="the gateway's reference fitted on the old version")

    for proc in old_procs:  # the rollout: old pods gone without a goodbye, new pods with empty state
        proc.kill()
    new = ["d", "e", "f"]
    [forwarder(p) for p in new]
    alarmed_after: int | None = None
    start = HEALTHY
    while start < HEALTHY + GAMED:
        if start == HEALTHY + CHUNK:  # the gateway dies once on the way; the forwarders hold on
            gateway.kill()
            gateway = agent_factory(gateway_cfg, port=gateway.port).start()
        size = CHUNK if alarmed_after is None else HEALTHY + GAMED - start  # after the alarm: the rest at once
        send(new, records[start:start + size])
        start += size
        wait_until(lambda w=start: len(gateway_ids(tmp_path)) >= w, timeout=60, what=f"{start} outputs stored")
        runs = gateway.value("goodhart_job_runs_total", task="detect") or 0.0
        wait_until(lambda r=runs, g=gateway: (g.value("goodhart_job_runs_total", task="detect") or 0.0) >= r + 2,
                   what="two detect steps over what arrived")
        if alarmed_after is None and gateway.value("goodhart_divergence_alarm", **PAIR) == 1:
            alarmed_after = start - HEALTHY
    assert alarmed_after is not None, "the gateway never alarmed on the gamed proxy"

    ids = gateway_ids(tmp_path)
    assert len(ids) == len(set(ids)) == HEALTHY + GAMED  # every record, exactly once
    assert set(ids) == {r["id"] for r in records}
    # The reference is still the one fitted on the old version: no new fit after the rollout.
    assert gateway.value("goodhart_reference_end_timestamp_seconds", **PAIR) < T0 + HEALTHY

    # One agent replaying the same records in time order: how many gamed records it needed.
    replay_input = tmp_path / "all.jsonl"
    append_lines(replay_input, records)
    events = io.StringIO()
    replay(config_from_mapping({**COMMON, "schedule": {"detect_seconds": 0.5}}, {}), replay_input, events,
           progress=io.StringIO())
    alarms = [e for e in map(yaml.safe_load, events.getvalue().splitlines())
              if e.get("state") == "alarm" and all(e[k] == v for k, v in PAIR.items())]
    assert alarms, "the single agent replay must alarm too"
    replay_after = int(alarms[0]["ts"] - (T0 + HEALTHY)) + 1
    ratio = alarmed_after / replay_after
    print(f"gamed records before the alarm: gateway {alarmed_after} (in chunks of {CHUNK}), "
          f"single-agent replay {replay_after}, ratio {ratio:.2f}")
    assert alarmed_after <= replay_after + 2 * CHUNK  # the gateway sees what arrived, a chunk at a time


def test_without_a_gateway_a_new_sidecar_fits_its_reference_on_the_new_version_and_stays_quiet(
        tmp_path: Path) -> None:
    """The failure fleet mode exists for: a fresh sidecar after the rollout sees only the new version."""
    after_rollout = tmp_path / "new-pod.jsonl"
    append_lines(after_rollout, stream()[HEALTHY:])
    events = io.StringIO()
    replay(config_from_mapping({**COMMON, "schedule": {"detect_seconds": 0.5}}, {}), after_rollout, events,
           progress=io.StringIO())
    states = [e["state"] for e in map(yaml.safe_load, events.getvalue().splitlines())
              if all(e.get(k) == v for k, v in PAIR.items())]
    assert states and "alarm" not in states  # it learned the gamed relation as its baseline
