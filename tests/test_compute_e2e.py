"""Every compute kind on real records, through `goodhart-agent replay` and through the daemon.

One stream exercises all five kinds: outputs carrying only text and timestamps, late labels that
carry only the audit (nothing to compute from, and no failure counted for it), and three broken
records whose failing proxies are left out and counted while the rest of each record is kept.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from compute_support import all_kinds_config, all_kinds_records, train_model, write_jsonl
from support import append_lines, parse_metrics, wait_until

pytestmark = pytest.mark.slow  # the agent in subprocesses, a model trained for the module

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("compute-e2e")
    model_path = base / "thumbs.skops"
    model = train_model(model_path)
    records, means, failures = all_kinds_records(model)
    return {"base": base, "model_path": model_path, "records": records, "means": means, "failures": failures}


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def assert_computed(samples: Samples, case: dict[str, Any]) -> None:
    for proxy, mean in case["means"].items():
        assert sample(samples, "goodhart_proxy_mean", proxy=proxy, segment="*") == pytest.approx(mean), proxy
    declared = {labels: value for (name, labels), value in samples.items() if name == "goodhart_metric_failures_total"}
    for (proxy, reason), count in case["failures"].items():
        assert declared.pop((("proxy", proxy), ("reason", reason))) == count, (proxy, reason)
    assert declared and set(declared.values()) == {0.0}  # every other reason pre-declared at 0
    assert sum(v for (name, _), v in samples.items() if name == "goodhart_records_rejected_total") == 0
    sha256 = hashlib.sha256(case["model_path"].read_bytes()).hexdigest()
    assert sample(samples, "goodhart_proxy_model_info", proxy="predicted_thumbs", version="thumbs-2026-01",
                  sha256=sha256) == 1.0
    # the learned proxy tells resolved conversations apart; the runaway regex never matched anything
    assert sample(samples, "goodhart_proxy_validity", proxy="predicted_thumbs", audit="resolved", segment="*",
                  kind="roc_auc") == 1.0
    assert sample(samples, "goodhart_proxy_validity_pairs", proxy="predicted_thumbs", audit="resolved",
                  segment="*") == 60
    assert sample(samples, "goodhart_proxy_validity", proxy="runaway", audit="resolved", segment="*",
                  kind="roc_auc") == 0.5


def test_every_kind_through_replay(case: dict[str, Any], tmp_path: Path) -> None:
    config = all_kinds_config(tmp_path / "config.yaml", case["model_path"])
    stream = write_jsonl(tmp_path / "stream.jsonl", case["records"])
    metrics = tmp_path / "metrics.txt"
    result = subprocess.run([sys.executable, "-m", "agent", "replay", "--config", str(config), str(stream),
                             "--events-out", str(tmp_path / "events.jsonl"), "--metrics-out", str(metrics)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"replayed {len(case['records'])} records (0 rejected)" in result.stderr
    assert_computed(parse_metrics(metrics.read_text()), case)


def test_every_kind_through_the_daemon(case: dict[str, Any], tmp_path: Path, agent_factory: Any) -> None:
    stream = tmp_path / "outputs.jsonl"
    stream.write_text("")
    config = all_kinds_config(tmp_path / "config.yaml", case["model_path"],
                              source={"type": "jsonl", "path": str(stream)}, state_dir=str(tmp_path / "state"),
                              schedule={"ingest_seconds": 0.1, "detect_seconds": 0.2},
                              log={"level": "WARNING"})
    agent = agent_factory(config).start()
    half = len(case["records"]) // 2
    append_lines(stream, case["records"][:half])  # tailed as it grows
    assert agent.wait_for("goodhart_records_total", float(half), source="jsonl") == half
    append_lines(stream, case["records"][half:])
    total = float(len(case["records"]))
    assert agent.wait_for("goodhart_records_total", total, source="jsonl") == total

    def validity_refreshed() -> Samples | None:  # by the next detect tick
        samples = agent.metrics()
        pairs = sample(samples, "goodhart_proxy_validity_pairs", proxy="predicted_thumbs", audit="resolved",
                       segment="*")
        return samples if pairs == 60 else None

    samples = wait_until(validity_refreshed, what="60 validity pairs for predicted_thumbs vs resolved")
    assert_computed(samples, case)
    assert agent.terminate() == 0


def test_a_model_file_replaced_under_a_running_config_is_checked_again_at_start(case: dict[str, Any],
                                                                                  tmp_path: Path) -> None:
    config = all_kinds_config(tmp_path / "config.yaml", tmp_path / "swapped.skops")
    (tmp_path / "swapped.skops").write_bytes(b"PK\x03\x04 not really a zip")
    result = subprocess.run([sys.executable, "-m", "agent", "run", "--config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    index = next(i for i, p in enumerate(yaml.safe_load(config.read_text())["proxies"])
                 if p["name"] == "predicted_thumbs")
    assert result.stderr.startswith(f"proxies.{index}.compute.path: ")
    assert "is not a skops file" in result.stderr
