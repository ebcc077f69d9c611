"""One absurd value can neither page nor blind, and an absurd timestamp is rejected (issue #17, item 4).

Each test replays a seeded support-bot stream with ``agent replay`` (the daemon's pipeline on the
records' clock) and injects one value. Against this stream the detector of main before the bounds
already held (the same replays with ``detection.implausible_spread_multiple: 0`` alarm and stay
quiet just the same), so the replays guard against regressions; that the bounds act is shown
through the daemon, which counts the value it kept out.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
from support import AgentProcess, record, support_bot_stream, write_config


def replay(tmp_path: Path, stream: Path, name: str, multiple: float | None = None) -> tuple[list[dict[str, Any]], str]:
    overrides: dict[str, Any] = {}
    if multiple is not None:
        overrides["detection"] = {"implausible_spread_multiple": multiple}
    config = write_config(tmp_path / f"{name}.yaml", **overrides)
    events = tmp_path / f"{name}-events.jsonl"
    run = subprocess.run([sys.executable, "-m", "agent", "replay", "--config", str(config), str(stream),
                          "--events-out", str(events)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    return [json.loads(line) for line in events.read_text().splitlines()], run.stderr


def poison(stream: Path, after: int, proxy: str, value: float) -> str:
    """Set ``proxy`` of the first audited output at or after output ``after`` to ``value``; its id."""
    lines = [json.loads(line) for line in stream.read_text().splitlines()]
    labelled = {obj["id"] for obj in lines if "audit" in obj}
    outputs = [obj for obj in lines if "proxy" in obj]
    target = next(obj for obj in outputs[after:] if obj["id"] in labelled)
    target["proxy"][proxy] = value
    stream.write_text("".join(json.dumps(obj) + "\n" for obj in lines))
    return str(target["id"])


def alarms(events: list[dict[str, Any]], proxy: str) -> list[dict[str, Any]]:
    return [e for e in events if e["state"] == "alarm" and e["proxy"] == proxy and e["segment"] == "*"]


@pytest.mark.slow
def test_one_huge_audited_proxy_in_a_stable_stream_raises_no_alarm(tmp_path: Path) -> None:
    stream = support_bot_stream(tmp_path / "stable.jsonl", 3000, seed=5)
    poison(stream, 1500, "resolution_seconds", 1e300)
    events, _ = replay(tmp_path, stream, "bounded")
    assert not [e for e in events if e["state"] == "alarm"], events


@pytest.mark.slow
def test_one_huge_negative_value_in_the_reference_does_not_hide_a_later_change(tmp_path: Path) -> None:
    stream = support_bot_stream(tmp_path / "change.jsonl", 6000, seed=3, change_at=3500)
    poison(stream, 100, "resolution_seconds", -1e308)
    events, _ = replay(tmp_path, stream, "bounded")
    found = alarms(events, "resolution_seconds")
    assert found and all(e["ts"] > 1_790_000_000.0 + 3500 for e in found)


def test_a_timestamp_far_in_the_future_or_before_2000_is_rejected(tmp_path: Path) -> None:
    stream = support_bot_stream(tmp_path / "short.jsonl", 50, seed=1)
    with stream.open("a") as f:
        for i, ts in enumerate((1e300, 4_102_444_800, 86_400)):  # 1e300, 2100-01-01, 1970-01-02
            f.write(json.dumps({"id": f"bad-{i}", "ts": ts, "proxy": {"thumbs_up": 1}}) + "\n")
    _, stderr = replay(tmp_path, stream, "ts")
    lines = len(stream.read_text().splitlines())
    assert stderr.strip().splitlines()[-1].startswith(f"replayed {lines} records (3 rejected)"), stderr


def test_the_daemon_keeps_one_absurd_value_out_of_the_detectors_and_counts_it(tmp_path: Path,
                                                                             agent_factory: Any) -> None:
    config = write_config(tmp_path / "config.yaml", source={"type": "http_push", "listen": "shared"},
                          state_dir=str(tmp_path / "state"),
                          schedule={"ingest_seconds": 0.2, "detect_seconds": 0.2, "retention_seconds": 60})
    agent: AgentProcess = agent_factory(config).start()
    t0 = 1_790_000_000.0
    normal = [record(f"n{i}", t0 + i, thumbs=i % 2, seconds=60.0 + i % 7, resolved=i % 2) for i in range(40)]
    absurd = record("absurd", t0 + 41, seconds=1e300, resolved=1)
    resp = requests.post(agent.url + "/v1/records", json=[*normal, absurd], timeout=10)
    assert resp.status_code == 202 and resp.json()["accepted"] == 41  # stored: only the detectors skip it
    assert agent.wait_for("goodhart_implausible_values_total", 1, kind="proxy", metric="resolution_seconds") == 1
    bad_ts = requests.post(agent.url + "/v1/records", json=[{**record("future", t0), "ts": 1e300}], timeout=10)
    assert bad_ts.json()["reasons"] == {"bad_timestamp": 1}
