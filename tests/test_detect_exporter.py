"""The detector series: read from typed verdicts, and the renamed counter under both names for a release."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

from prometheus_client.core import CollectorRegistry
from prometheus_client.registry import Collector

from agent.bank import Snapshot
from agent.detect.base import Estimates, Verdict
from agent.pair_metrics import EVERY_SEGMENT, PairCollector

KEY = ("thumbs_up", "resolved", "*")
LABELS = {"proxy": "thumbs_up", "audit": "resolved", "segment": "*"}


class _Detectors(Collector):
    """Only the detector block of the agent's collector, over a given snapshot."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.pairs = PairCollector(SimpleNamespace(snapshot=snapshot))  # type: ignore[arg-type]

    def collect(self) -> Any:
        yield from self.pairs._detectors(EVERY_SEGMENT)
        yield from self.pairs._times(EVERY_SEGMENT)


def _registry(**snapshot: Any) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(_Detectors(Snapshot(**snapshot)))
    return registry


def test_estimates_become_the_gap_and_correlation_series() -> None:
    verdict = Verdict("alarm", 14.0, 13.0, "audit_dropped",
                      Estimates(samples=180, gap=0.3, gap_lower=0.1, gap_upper=0.5, warn_threshold=9.0,
                                rank_corr_reference=0.6, rank_corr_window=math.nan, since=2.0))
    registry = _registry(verdicts={KEY: verdict}, states={KEY: "alarm"}, since={KEY: 5.0})
    value = registry.get_sample_value
    assert value("goodhart_divergence_gap", LABELS) == 0.3
    assert value("goodhart_divergence_gap_lower", LABELS) == 0.1
    assert value("goodhart_divergence_gap_upper", LABELS) == 0.5
    assert value("goodhart_detector_warn_threshold", LABELS) == 9.0
    assert value("goodhart_detector_samples", LABELS) == 180.0
    assert value("goodhart_rank_correlation", {**LABELS, "period": "reference"}) == 0.6
    assert value("goodhart_rank_correlation", {**LABELS, "period": "window"}) is None  # unknown: no sample
    assert value("goodhart_divergence_started_timestamp_seconds", LABELS) == 2.0  # the detector's estimate
    assert value("goodhart_divergence_raised_timestamp_seconds", LABELS) == 5.0  # when the state was entered
    assert value("goodhart_divergence_since_timestamp_seconds", LABELS) == 5.0  # deprecated, until 0.3.0


def test_both_times_are_zero_while_ok() -> None:
    verdict = Verdict("ok", 1.0, 13.0, "", Estimates(since=2.0))
    registry = _registry(verdicts={KEY: verdict}, states={KEY: "ok"}, since={KEY: 5.0})
    assert registry.get_sample_value("goodhart_divergence_started_timestamp_seconds", LABELS) == 0.0
    assert registry.get_sample_value("goodhart_divergence_raised_timestamp_seconds", LABELS) == 0.0


def test_a_warming_up_verdict_exports_nan_estimates_and_zero_samples_when_it_has_none() -> None:
    registry = _registry(verdicts={KEY: Verdict.warming()}, states={KEY: "warn"})
    assert math.isnan(registry.get_sample_value("goodhart_divergence_gap", LABELS) or 0.0)
    assert registry.get_sample_value("goodhart_detector_samples", LABELS) == 0.0
    assert registry.get_sample_value("goodhart_detector_state", LABELS) == 1.0


def test_the_audited_counter_is_exported_under_its_new_and_its_deprecated_name() -> None:
    registry = _registry(sufficient={KEY: {"audited": 42.0, "samples": 50.5}})
    assert registry.get_sample_value("goodhart_pair_audited_total", LABELS) == 42.0
    assert registry.get_sample_value("goodhart_pair_pairs_total", LABELS) == 42.0  # until 0.3.0
    assert registry.get_sample_value("goodhart_pair_samples_total", LABELS) == 50.5
