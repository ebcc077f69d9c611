"""replay: the daemon's pipeline on the records' own clock; deterministic, CONTRACT events, exit 0."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import append_lines, record, support_bot_stream, write_config

EVENT_KEYS = {"ts", "proxy", "audit", "segment", "state", "previous", "statistic", "threshold"}


def run_replay(config: Path, stream: Path, events: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", "replay", "--config", str(config), str(stream),
                           "--events-out", str(events)], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def goodhart_stream(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("replay")
    stream = support_bot_stream(base / "stream.jsonl", 6000, seed=3, change_at=3500)
    config = write_config(base / "config.yaml")
    return config, stream


def read_events(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_replay_is_deterministic(goodhart_stream: tuple[Path, Path], tmp_path: Path) -> None:
    config, stream = goodhart_stream
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert run_replay(config, stream, first).returncode == 0
    assert run_replay(config, stream, second).returncode == 0
    assert first.read_bytes() == second.read_bytes()
    assert first.stat().st_size > 0


@pytest.mark.slow
def test_events_carry_the_contract_fields_and_alarm_after_the_change(goodhart_stream: tuple[Path, Path],
                                                                        tmp_path: Path) -> None:
    config, stream = goodhart_stream
    events_path = tmp_path / "events.jsonl"
    result = run_replay(config, stream, events_path)
    assert result.returncode == 0, result.stderr
    lines = len(stream.read_text().splitlines())  # outputs plus their labels
    assert result.stderr.strip().splitlines()[-1].startswith(f"replayed {lines} records (0 rejected)")
    events = read_events(events_path)
    for event in events:
        assert set(event) >= EVENT_KEYS, event
        assert event["state"] in ("ok", "warn", "alarm") and event["previous"] in ("ok", "warn", "alarm")
        assert event["state"] != event["previous"]
        assert isinstance(event["ts"], float)
    alarms = [e for e in events if e["state"] == "alarm" and e["segment"] == "*"]
    assert alarms, "the gamed bot must raise an alarm on the whole stream"
    change_ts = 1_790_000_000.0 + 3500
    assert all(float(e["ts"]) > change_ts for e in alarms)  # type: ignore[arg-type]
    assert {e["proxy"] for e in alarms} == {"thumbs_up", "resolution_seconds"}
    timestamps = [float(e["ts"]) for e in events]  # type: ignore[arg-type]
    assert timestamps == sorted(timestamps)


def test_detect_steps_follow_virtual_time(tmp_path: Path) -> None:
    """A 10-minute detect interval over a 1-hour stream gives state changes only on 10-minute ticks."""
    stream = support_bot_stream(tmp_path / "s.jsonl", 3600, seed=5, interval=1.0, label_delay=1.0, label_fraction=1)
    config = write_config(tmp_path / "c.yaml", schedule={"detect_seconds": 600})
    events_path = tmp_path / "e.jsonl"
    assert run_replay(config, stream, events_path).returncode == 0
    first_ts = 1_790_000_000.0
    for event in read_events(events_path):
        offset = float(event["ts"]) - first_ts  # type: ignore[arg-type]
        assert offset % 600 == 0 or offset >= 3600, offset  # ticks, or the final step at the stream's end


def test_bad_lines_are_counted_and_replay_still_exits_0(tmp_path: Path) -> None:
    stream = tmp_path / "mixed.jsonl"
    append_lines(stream, [record("a", 1_790_000_000.0, resolved=1), "garbage", '{"id": 5}', "",
                          record("b", 1_790_000_001.0, resolved=0)])
    config = write_config(tmp_path / "c.yaml")
    result = run_replay(config, stream, tmp_path / "e.jsonl")
    assert result.returncode == 0
    assert "replayed 4 records (2 rejected)" in result.stderr


def test_missing_input_is_a_usage_error(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml")
    result = run_replay(config, tmp_path / "nope.jsonl", tmp_path / "e.jsonl")
    assert result.returncode == 2
    assert "no such file" in result.stderr
