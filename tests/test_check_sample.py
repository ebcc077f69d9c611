"""``check-config --sample``: field presence in a real log, through the real command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from support import append_lines, record, write_config


def check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", "check-config", *args], capture_output=True, text=True,
                          timeout=60)


def rows(stdout: str) -> dict[str, tuple[str, ...]]:
    """{key: (present[, numeric])} from the report's table."""
    table = {}
    for line in stdout.splitlines():
        tokens = line.split()
        keys = [i for i, t in enumerate(tokens) if (t.endswith(":") and "." in t) or t in ("id_field:", "ts_field:")]
        if line.startswith("  ") and keys and tokens[0].endswith("%"):
            table[tokens[keys[0]].rstrip(":")] = tuple(tokens[:keys[0]])
    return table


def test_a_misspelled_proxy_path_shows_at_zero_percent(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.yaml", proxies=[
        {"name": "thumbs_up", "field": "proxy.thumbs_upp", "direction": "higher"},  # the typo
        {"name": "resolution_seconds", "field": "/proxy/resolution_seconds", "direction": "lower"},
        {"name": "words", "compute": {"kind": "length", "field": "output"}}])
    log = tmp_path / "outputs.jsonl"
    lines = [record(f"r{i}", 1_790_000_000 + i, resolved=1 if i % 4 == 0 else None) for i in range(40)]
    for i, line in enumerate(lines):
        if i % 2:
            line["output"] = "some reply"
        if i == 5:
            line["proxy"]["resolution_seconds"] = "slow"
    append_lines(log, [*lines[:3], "not json", *lines[3:], json.dumps(record("beyond", 1.0))])
    result = check(str(config), "--sample", str(log), "--records", "40")
    assert result.returncode == 0, result.stderr
    table = rows(result.stdout)
    assert "sample: 40 records (1 other lines skipped)" in result.stdout
    assert table["proxies.0.field"] == ("0.0%", "0.0%")
    assert "proxies.0.field: proxy.thumbs_upp  <- never present" in result.stdout
    assert table["proxies.1.field"] == ("100.0%", "97.5%")  # one is a string
    assert table["proxies.2.compute.field"] == ("50.0%",)  # a text, not a number: presence only
    assert table["audits.0.field"] == ("25.0%", "25.0%")
    assert table["id_field"] == table["ts_field"] == table["segments.field"] == ("100.0%",)


def test_the_records_limit_and_a_bad_config_still_exit_2(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.yaml")
    log = tmp_path / "outputs.jsonl"
    append_lines(log, [record(f"r{i}", 1_790_000_000 + i) for i in range(30)])
    default = check(str(config), "--sample", str(log))
    assert default.returncode == 0 and "sample: 30 records" in default.stdout
    assert "sample: 7 records" in check(str(config), "--sample", str(log), "--records", "7").stdout
    bad = write_config(tmp_path / "bad.yaml", proxies=[{"name": "Bad Name", "field": "x", "direction": "higher"}])
    assert check(str(bad), "--sample", str(log)).returncode == 2
    missing = check(str(config), "--sample", str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 2 and "--sample" in missing.stderr
