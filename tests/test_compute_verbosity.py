"""The verbosity hack caught by one line of config (examples/verbosity.yaml): answers get longer
after a model change, the audited resolution rate does not improve, and the length proxy's
validity falls toward a coin. Replayed with the real CLI on the example's own generated stream."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import parse_metrics

from agent.config import DetectionConfig

ROOT = Path(__file__).resolve().parent.parent
T0, CHANGE_AT = 1_790_000_000.0, 3500


def replay(stream: Path, out: Path) -> tuple[dict[tuple[str, tuple[tuple[str, str], ...]], float], list[dict]]:
    events, metrics = out / f"{stream.stem}.events.jsonl", out / f"{stream.stem}.metrics.txt"
    result = subprocess.run([sys.executable, "-m", "agent", "replay", "--config", str(ROOT / "examples/verbosity.yaml"),
                             str(stream), "--events-out", str(events), "--metrics-out", str(metrics)],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    return parse_metrics(metrics.read_text()), [json.loads(line) for line in events.read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict, list[dict]]]:
    base = tmp_path_factory.mktemp("verbosity")
    stream = base / "full.jsonl"
    subprocess.run([sys.executable, str(ROOT / "examples/verbosity_stream.py"), "--out", str(stream),
                    "--outputs", "6000", "--change-at", str(CHANGE_AT)], check=True, timeout=60)
    lines = stream.read_text().splitlines(keepends=True)
    before = base / "before.jsonl"
    before.write_text("".join(line for line in lines if json.loads(line)["ts"] < T0 + CHANGE_AT))
    return {"before": replay(before, base), "after": replay(stream, base)}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_answers_get_longer_and_the_audit_does_not_improve(runs: dict[str, tuple[dict, list[dict]]]) -> None:
    before, after = runs["before"][0], runs["after"][0]
    words_before = value(before, "goodhart_proxy_mean", proxy="answer_words", segment="*")
    words_after = value(after, "goodhart_proxy_mean", proxy="answer_words", segment="*")
    assert 60 < words_before < 80 and words_after > 3 * words_before
    resolved_before = value(before, "goodhart_audit_mean", audit="resolved", segment="*")
    resolved_after = value(after, "goodhart_audit_mean", audit="resolved", segment="*")
    assert resolved_after < resolved_before + 0.03


def test_the_length_proxy_loses_its_validity(runs: dict[str, tuple[dict, list[dict]]]) -> None:
    labels = {"proxy": "answer_words", "audit": "resolved", "kind": "roc_auc"}
    before = value(runs["before"][0], "goodhart_proxy_validity", segment="*", **labels)
    after = value(runs["after"][0], "goodhart_proxy_validity", segment="*", **labels)
    assert before > 0.7 and after < 0.62 and before - after > 0.12
    for segment in ("billing", "technical", "account"):  # in every segment, not just overall
        assert value(runs["after"][0], "goodhart_proxy_validity", segment=segment, **labels) < before - 0.05
    # the apology proxy was never informative and nothing happened to it
    apology = {"proxy": "apology", "audit": "resolved", "segment": "*", "kind": "roc_auc"}
    assert abs(value(runs["after"][0], "goodhart_proxy_validity", **apology) - 0.5) < 0.06


@pytest.mark.skipif(DetectionConfig().detector != "decoupling", reason="the default detector ignores the proxy")
def test_the_default_detector_alarms_on_the_length_proxy_after_the_change(
        runs: dict[str, tuple[dict, list[dict]]]) -> None:
    alarms = [e for e in runs["after"][1] if e["state"] == "alarm"]
    assert all(e["ts"] > T0 + CHANGE_AT for e in alarms)
    assert any(e["proxy"] == "answer_words" and e["audit"] == "resolved" and e["segment"] == "*" for e in alarms)
    assert not [e for e in runs["before"][1] if e["state"] == "alarm"]
