"""Never-down mode (``run --on-error serve``): a sidecar whose config cannot run stays up, says why,
and heals when the file is fixed; plain ``run`` still fails fast. Real agent subprocesses only."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests
import yaml
from support import AgentProcess, append_lines, record, wait_until, write_config

from agent.guard import early_settings

SERVE = ("--on-error", "serve", "--retry-seconds", "0.2")
T0 = time.time() - 3600


def config_file(tmp_path: Path, **extra: Any) -> tuple[Path, Path]:
    records = tmp_path / "outputs.jsonl"
    settings: dict[str, Any] = {
        "source": {"type": "jsonl", "path": str(records)}, "state_dir": str(tmp_path / "state"),
        "schedule": {"ingest_seconds": 0.2, "detect_seconds": 0.5, "retention_seconds": 60},
        "log": {"level": "INFO", "format": "json"}}
    config = write_config(tmp_path / "config.yaml", **{**settings, **extra})
    return config, records


def edit(path: Path, change: Any) -> None:
    """Rewrite the config file in one step, as a ConfigMap update does (a new file renamed in)."""
    tree = yaml.safe_load(path.read_text())
    change(tree)
    tmp = path.with_suffix(".new")
    tmp.write_text(yaml.safe_dump(tree, sort_keys=False))
    tmp.replace(path)


def log_lines(agent: AgentProcess) -> list[dict[str, Any]]:
    lines = []
    for line in agent.log_path.read_text().splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    return lines


def degraded_until_attempts(agent: AgentProcess, attempts: int) -> dict[Any, float]:
    """Metrics once the agent has tried the config ``attempts`` times and still serves degraded."""
    def tried() -> dict[Any, float] | None:
        m = agent.metrics()
        return m if (m.get(("goodhart_config_attempts_total", ())) or 0) >= attempts else None
    result = wait_until(tried, what=f"{attempts} attempts to load the config")
    assert isinstance(result, dict)
    return result


def test_a_broken_config_keeps_the_agent_up_saying_why_until_the_file_is_fixed(
        tmp_path: Path, agent_factory: Any) -> None:
    config, records = config_file(tmp_path)
    edit(config, lambda t: t["proxies"][0].update(direction="sideways"))
    append_lines(records, [record(f"c{i}", T0 + i) for i in range(5)])
    agent: AgentProcess = agent_factory(config, args=SERVE).start(wait_ready=False)
    wait_until(lambda: _answers(agent, "/healthz"), what="/healthz")
    m = degraded_until_attempts(agent, 3)
    assert agent.proc is not None and agent.proc.poll() is None  # still up after three failed attempts
    assert m[("goodhart_config_valid", ())] == 0
    assert m[("goodhart_config_problems", ())] == 1
    assert m[("goodhart_up", (("component", "source"),))] == 0
    assert m[("goodhart_build_info", (("version", __import__("agent").__version__),))] == 1
    ready = requests.get(agent.url + "/readyz", timeout=5)
    assert ready.status_code == 503 and "proxies.0.direction" in ready.text
    errors = [e for e in log_lines(agent) if e["level"] == "error"]
    assert len(errors) == 1, errors  # logged once, not once per attempt
    assert any("proxies.0.direction" in p for p in errors[0]["problems"])

    edit(config, lambda t: t["proxies"][0].update(direction="higher"))  # the ConfigMap is fixed
    wait_until(lambda: agent.value("goodhart_config_valid") == 1, what="the fixed config to load")
    assert agent.wait_for("goodhart_records_total", 5, source="jsonl") == 5
    assert requests.get(agent.url + "/readyz", timeout=5).status_code == 200
    assert agent.value("goodhart_config_problems") == 0
    assert (agent.value("goodhart_config_attempts_total") or 0) >= 4  # three failed, then the one that ran
    assert agent.terminate() == 0


def test_an_agent_that_cannot_be_assembled_stays_up_and_releases_its_state(tmp_path: Path, agent_factory: Any) -> None:
    """A judge whose key variable is not set passes load but fails assembly (after the store and its
    lock were taken): the agent says so, and the next attempt can take the same state dir."""
    judge = {"name": "judge_helpful", "llm_judge": {
        "base_url": "http://127.0.0.1:9/v1", "model": "m", "api_key_env": "GOODHART_TEST_UNSET_KEY",
        "prompt": "Rate {output} from 1 to 5.", "scale": [1, 5]}}
    config, records = config_file(tmp_path)
    edit(config, lambda t: t["audits"].append(judge))
    append_lines(records, [record("c0", T0)])
    agent: AgentProcess = agent_factory(config, args=SERVE).start(wait_ready=False)
    wait_until(lambda: _answers(agent, "/healthz"), what="/healthz")
    m = degraded_until_attempts(agent, 2)
    assert m[("goodhart_config_valid", ())] == 0
    assert m[("goodhart_up", (("component", "judge"),))] == 0
    assert "GOODHART_TEST_UNSET_KEY" in requests.get(agent.url + "/readyz", timeout=5).text
    edit(config, lambda t: t["audits"].pop())
    wait_until(lambda: agent.value("goodhart_config_valid") == 1, what="the agent to assemble")
    assert agent.wait_for("goodhart_records_total", 1, source="jsonl") == 1
    # flock conflicts within one process too: a lock the failed attempts kept would read "busy" forever.
    assert "busy" not in agent.log_path.read_text()


def test_a_state_dir_that_cannot_be_created_and_a_missing_file_keep_it_up(tmp_path: Path, agent_factory: Any) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    config, _ = config_file(tmp_path, state_dir=str(blocker / "state"))
    agent: AgentProcess = agent_factory(config, args=SERVE).start(wait_ready=False)
    wait_until(lambda: _answers(agent, "/healthz"), what="/healthz")
    degraded_until_attempts(agent, 2)
    assert "state_dir: cannot create" in requests.get(agent.url + "/readyz", timeout=5).text
    missing: AgentProcess = agent_factory(tmp_path / "nowhere.yaml", args=SERVE).start(wait_ready=False)
    wait_until(lambda: _answers(missing, "/healthz"), what="/healthz without a config file")
    assert degraded_until_attempts(missing, 2)[("goodhart_config_valid", ())] == 0
    assert "cannot read" in requests.get(missing.url + "/readyz", timeout=5).text


def test_plain_run_still_fails_fast_on_a_bad_config(tmp_path: Path) -> None:
    config, _ = config_file(tmp_path)
    edit(config, lambda t: t["proxies"][0].update(direction="sideways"))
    result = subprocess.run([sys.executable, "-m", "agent", "run", "--config", str(config), "--listen", "127.0.0.1:0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "proxies.0.direction" in result.stderr


def test_early_settings_read_what_a_broken_file_still_tells(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "listen": "127.0.0.1:12345", "log": {"format": "text", "level": "debug"},
        "forward": {"url": "http://gw:10101/v1/records"}, "proxies": "not a list",
        "audits": [{"name": "ok", "http_grader": {"url": "http://g/grade"}}, {"llm_judge": {}}, "junk"]}))
    early = early_settings(str(path), None, environ={})
    assert (early.listen, early.log_level, early.log_format) == ("127.0.0.1:12345", "DEBUG", "text")
    assert early.components == ["source", "store", "gateway", "grader:ok", "judge"]
    # The flag, then GOODHART_LISTEN, win over the file; an unreadable file keeps the defaults.
    assert early_settings(str(path), "127.0.0.1:1", environ={"GOODHART_LISTEN": "127.0.0.1:2"}).listen == "127.0.0.1:1"
    assert early_settings(str(path), None, environ={"GOODHART_LISTEN": "127.0.0.1:2"}).listen == "127.0.0.1:2"
    unreadable = early_settings(str(tmp_path / "nowhere.yaml"), None, environ={"GOODHART_LISTEN": "bad"})
    assert (unreadable.listen, unreadable.components) == ("0.0.0.0:10100", ["source", "store"])


def _answers(agent: AgentProcess, path: str) -> bool:
    assert agent.proc is not None
    if agent.proc.poll() is not None:
        raise AssertionError(f"agent exited with {agent.proc.returncode}:\n{agent.log_path.read_text()}")
    try:
        return requests.get(agent.url + path, timeout=1).status_code == 200
    except requests.ConnectionError:
        return False
