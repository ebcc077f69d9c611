"""check-config and config loading: CONTRACT files pass, every problem is named by its key path."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent.config import ConfigError, config_from_mapping, load_config

CONTRACT_CONFIG = """
source:
  type: jsonl
  path: /var/log/ai/outputs.jsonl
proxies:
  - name: thumbs_up
    field: proxy.thumbs_up
    direction: higher
audits:
  - name: resolved
    field: audit.resolved
  - name: judge_helpful
    llm_judge:
      base_url: http://127.0.0.1:8000/v1
      model: any-model-name
      api_key_env: JUDGE_API_KEY
      prompt: "Rate how well this reply resolves the request. Request: {input} Reply: {output}. \\
        Answer with a number from 1 to 5."
      scale: [1, 5]
  - name: grader_ok
    http_grader:
      url: http://127.0.0.1:8001/grade
      pointer: /score
audit_sampling:
  rate: 0.05
segments:
  field: labels.segment
"""

MINIMAL_CONFIG = """
proxies:
  - name: thumbs_up
    field: proxy.thumbs_up
    direction: higher
audits:
  - name: resolved
    field: audit.resolved
"""


def check_config(path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", "check-config", str(path)], capture_output=True,
                          text=True, timeout=60, env=env)


def test_contract_config_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "contract.yaml"
    path.write_text(CONTRACT_CONFIG)
    result = check_config(path)
    assert result.returncode == 0, result.stderr
    assert "false alarm" in result.stdout


def test_check_config_states_the_false_alarm_budget_in_audits_and_in_time(tmp_path: Path) -> None:
    path = tmp_path / "minimal.yaml"
    path.write_text(MINIMAL_CONFIG + "detection:\n  audits_between_false_alarms: 200000\n")
    result = subprocess.run([sys.executable, "-m", "agent", "check-config", str(path), "--audits-per-second", "0.5"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "at most 1 per 200,000 audits for the whole deployment" in result.stdout
    assert "(each test: 1 per 400,000 of its audited pairs)" in result.stdout  # 2 x 1 pair x 200,000
    assert "about one every 4.6 days at 0.5 audits/s" in result.stdout


def test_minimal_config_gets_documented_defaults(tmp_path: Path) -> None:
    path = tmp_path / "minimal.yaml"
    path.write_text(MINIMAL_CONFIG)
    assert check_config(path).returncode == 0
    config = load_config(path, environ={})
    assert config.source is None
    assert config.listen == "0.0.0.0:10100"
    assert config.detection.audits_between_false_alarms == 100_000
    assert config.segments is None


def test_every_problem_is_reported_with_its_key_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(textwrap.dedent("""
        proxys: []
        proxies:
          - name: Thumbs Up
            field: proxy.thumbs_up
            direction: sideways
        audits:
          - name: resolved
        listen: nowhere
        schedule:
          detect_seconds: -5
        """))
    result = check_config(path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert "proxys: unknown key" in lines
    prefixes = {line.split(":")[0] for line in lines}
    assert {"proxies.0.name", "proxies.0.direction", "audits.0", "listen", "schedule.detect_seconds"} <= prefixes
    assert len(lines) == 6, lines


def test_missing_required_sections_are_named(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("segments:\n  field: labels.segment\n")
    result = check_config(path)
    assert result.returncode == 2
    assert "proxies: Field required" in result.stderr
    assert "audits: Field required" in result.stderr


def test_unreadable_malformed_and_duplicate_key_files_exit_2_naming_the_file(tmp_path: Path) -> None:
    missing = check_config(tmp_path / "nope.yaml")
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"{tmp_path / 'nope.yaml'}: cannot read: No such file or directory"
    broken = tmp_path / "broken.yaml"
    broken.write_text("proxies: [\n  - a\n")
    result = check_config(broken)
    assert result.returncode == 2
    assert result.stderr.startswith(f"{broken}: not valid YAML at line 2, column 3: expected the node content")
    twice = tmp_path / "twice.yaml"
    twice.write_text("proxies:\n  - {name: a, field: proxy.a}\naudits:\n  - {name: b, field: audit.b}\n"
                     "detection:\n  reference_pairs: 50\n  reference_pairs: 500\n")
    result = check_config(twice)  # the second value would silently win
    assert result.returncode == 2
    assert result.stderr.strip() == (f"{twice}: not valid YAML at line 7, column 3: duplicate key "
                                     "'reference_pairs' (first at line 6)")


def test_duplicate_metric_names_are_rejected() -> None:
    with pytest.raises(ConfigError) as err:
        config_from_mapping({"proxies": [{"name": "x", "field": "a"}], "audits": [{"name": "x", "field": "b"}]}, {})
    assert err.value.problems == ["(top level): metric names must be unique across proxies and audits: x"]


def test_environment_overrides_apply_and_are_validated(tmp_path: Path) -> None:
    path = tmp_path / "minimal.yaml"
    path.write_text(MINIMAL_CONFIG)
    config = load_config(path, environ={"GOODHART__SCHEDULE__DETECT_SECONDS": "5", "GOODHART_STATE_DIR": "/tmp/x",
                                        "GOODHART_LOG_LEVEL": "debug"})
    assert config.schedule.detect_seconds == 5
    assert config.state_dir == "/tmp/x"
    assert config.log.level == "DEBUG"
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={"GOODHART__SCHEDULE__DETECT_SECONDS": "soon"})
    assert err.value.problems[0].startswith("schedule.detect_seconds:")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={"GOODHART__SCHEDUEL__DETECT_SECONDS": "5"})
    assert err.value.problems == ["scheduel: unknown key"]
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={"GOODHART__PROXIES__0__NAME": "x"})
    assert err.value.problems[0].startswith("GOODHART__PROXIES__0__NAME: list entries")


def test_run_without_a_source_fails_at_start_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "minimal.yaml"
    path.write_text(MINIMAL_CONFIG + f"state_dir: {tmp_path / 'state'}\n")
    result = subprocess.run([sys.executable, "-m", "agent", "run", "--config", str(path), "--listen", "127.0.0.1:0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith("source: required for run")


def run_briefly(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", "run", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=60)


def test_a_taken_address_and_an_unwritable_state_dir_are_named_at_start(tmp_path: Path) -> None:
    records = tmp_path / "outputs.jsonl"
    records.touch()
    path = tmp_path / "agent.yaml"
    path.write_text(MINIMAL_CONFIG + f"state_dir: {tmp_path / 'state'}\nsource: {{type: jsonl, path: {records}}}\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_briefly(path, "--listen", f"127.0.0.1:{port}")
    assert result.returncode == 2
    assert result.stderr.strip() == f"listen: cannot listen on 127.0.0.1:{port}: Address already in use"
    # /proc/1 exists but nobody, root included, can create a lock file in it
    path.write_text(MINIMAL_CONFIG + f"state_dir: /proc/1\nsource: {{type: jsonl, path: {records}}}\n")
    result = run_briefly(path, "--listen", "127.0.0.1:0")
    assert result.returncode == 2 and result.stderr.startswith("state_dir: cannot lock /proc/1: ")


def test_bad_usage_exits_2() -> None:
    result = subprocess.run([sys.executable, "-m", "agent", "run"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "--config" in result.stderr
