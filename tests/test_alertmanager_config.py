"""The example alertmanager.yml: valid for the real amtool, and routing each Goodhart alert where
its severity says (only the divergence alert pages).

Without amtool these tests skip locally but fail under ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "alertmanager.yml"
RULES = ROOT / "rules" / "goodhart-rules.yml"
PAGE = "GoodhartProxyAuditDivergence"


def amtool() -> str:
    path = shutil.which("amtool")
    if path is None:
        message = "amtool not found (apt-get install prometheus-alertmanager)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([amtool(), *args], capture_output=True, text=True, timeout=60, cwd=ROOT)


def route(**labels: str) -> str:
    """The receiver(s) amtool resolves for an alert with these labels."""
    result = run("config", "routes", "test", f"--config.file={CONFIG}", *(f"{k}={v}" for k, v in labels.items()))
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


def alerts() -> dict[str, dict[str, Any]]:
    data = yaml.safe_load(RULES.read_text())
    return {r["alert"]: r for g in data["groups"] for r in g["rules"] if "alert" in r}


def test_amtool_check_config_is_clean() -> None:
    result = run("check-config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_divergence_alert_pages() -> None:
    labels = {"alertname": PAGE, "severity": alerts()[PAGE]["labels"]["severity"],
              "proxy": "thumbs_up", "audit": "resolved", "segment": "*", "job": "bot"}
    assert route(**labels) == "goodhart-page"


def test_the_divergence_alert_still_pages_when_its_severity_is_renamed_page() -> None:
    assert route(alertname=PAGE, severity="page") == "goodhart-page"


def test_every_other_alert_opens_a_ticket() -> None:
    for name, rule in alerts().items():
        if name == PAGE:
            continue
        assert route(alertname=name, severity=rule["labels"]["severity"], job="bot") == "goodhart-ticket", name


def test_a_divergence_alert_downgraded_to_warning_does_not_page() -> None:
    assert route(alertname=PAGE, severity="warning") == "goodhart-ticket"


def test_routing_is_verified_by_amtool_not_just_printed() -> None:
    """--verify.receivers makes amtool itself fail on a wrong receiver."""
    ok = run("config", "routes", "test", f"--config.file={CONFIG}", "--verify.receivers=goodhart-page",
             f"alertname={PAGE}", "severity=critical")
    wrong = run("config", "routes", "test", f"--config.file={CONFIG}", "--verify.receivers=goodhart-page",
                "alertname=GoodhartNoRecords", "severity=warning")
    assert ok.returncode == 0 and wrong.returncode != 0


def test_receivers_are_webhooks_that_send_resolved() -> None:
    data = yaml.safe_load(CONFIG.read_text())
    receivers = {r["name"]: r for r in data["receivers"]}
    assert set(receivers) == {"goodhart-page", "goodhart-ticket"}
    for receiver in receivers.values():
        hooks = receiver["webhook_configs"]
        assert hooks and all(h["send_resolved"] for h in hooks)
    assert {"alertname", "proxy", "audit", "segment"} <= set(data["route"]["group_by"])


def test_inhibitions_refer_to_real_alerts() -> None:
    data = yaml.safe_load(CONFIG.read_text())
    names = set(alerts())
    for rule in data["inhibit_rules"]:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            key, _, value = matcher.partition("=")
            value = value.lstrip("~").strip().strip('"')
            assert key.strip().rstrip("=~!") == "alertname"
            assert set(value.split("|")) <= names, value
