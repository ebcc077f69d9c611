"""The per-pair and per-segment series: detectors, times, references, audited pairs, means, validity.

These are most of a scrape's bytes (about 20 series per pair, a pair per proxy, audit and segment),
so the daemon builds them once per detect step and serves the rendering (agent/exposition.py), while
``replay --metrics-out`` and tests collect them afresh. ``segments.max_exported`` caps the segments
whose series are exported (detection still runs on every segment): segments in alarm always, then
those in warn, then those with the most audited pairs held; how many were left out is exported.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.core import ALL, PairKey
from agent.detect.base import STATE_CODES, Verdict
from agent.view import PipelineView

log = logging.getLogger(__name__)

PAIR_LABELS = ["proxy", "audit", "segment"]
V = TypeVar("V")


def _num(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number


def concern(states: Mapping[PairKey, str], verdicts: Mapping[PairKey, Verdict]) -> dict[PairKey, int]:
    """Each pair's state as a number for ranking segments: 2 alarm, 1 warn, 0 ok or still warming up."""
    levels = {}
    for key, state in states.items():
        verdict = verdicts.get(key)
        warming = verdict is not None and verdict.warming_up and state != "alarm"
        levels[key] = 0 if warming else STATE_CODES.get(state, 0)
    return levels


def choose_segments(levels: Mapping[PairKey, int], held: Mapping[PairKey, int],
                    cap: int | None) -> tuple[frozenset[str], int]:
    """The segments whose series are exported under ``cap`` (None: all), and how many are left out.

    ``levels``: each pair's :func:`concern`; ``held``: audited pairs held in the store by pair. A
    segment with a pair in alarm is always exported, past the cap if need be: an alert must find
    its series. Then those in warn, then those with the most audited pairs held (the evidence behind
    their verdicts), then by name, so the choice is stable from one detect step to the next.
    """
    segments = {key[2] for key in levels} | {key[2] for key in held}
    segments.discard(ALL)
    if cap is None or len(segments) <= cap:
        return frozenset(segments), 0
    worst: dict[str, int] = {}
    volume: dict[str, int] = {}
    for key, level in levels.items():
        worst[key[2]] = max(worst.get(key[2], 0), level)
    for key, count in held.items():
        volume[key[2]] = volume.get(key[2], 0) + count
    order = sorted(segments, key=lambda s: (-worst.get(s, 0), -volume.get(s, 0), s))
    alarming = {s for s in segments if worst.get(s, 0) >= STATE_CODES["alarm"]}
    chosen = frozenset(order[:cap]) | alarming
    return chosen, len(segments) - len(chosen)


@dataclass(frozen=True)
class Selection:
    """Which segments one collection exports (``*``, the whole stream, always)."""

    segments: frozenset[str] | None  # None: all
    left_out: int = 0

    def shown(self, segment: str) -> bool:
        return segment == ALL or self.segments is None or segment in self.segments

    def items(self, by_pair: Mapping[PairKey, V]) -> list[tuple[PairKey, V]]:
        """The exported pairs of a mapping, sorted."""
        return sorted((key, value) for key, value in by_pair.items() if self.shown(key[2]))


EVERY_SEGMENT = Selection(None)
PairBlock = Callable[[Selection], Iterator[Metric]]


class PairCollector(Collector):
    """The per-pair series from the view's last detect snapshot; ``max_segments``: the cap (None: none)."""

    def __init__(self, view: PipelineView, max_segments: int | None = None) -> None:
        self.view = view
        self.max_segments = max_segments

    def blocks(self) -> tuple[PairBlock, ...]:
        return (self._detectors, self._times, self._references, self._pairs, self._means, self._validity,
                self._segments)

    def select(self) -> Selection:
        """The segments exported now; all of them when the store cannot say how many pairs each holds."""
        try:
            held = self.view.store_stats().pair_counts
        except Exception:
            log.exception("audited pair counts unavailable: segments chosen by state only")
            held = {}
        snap = self.view.snapshot
        segments, left_out = choose_segments(concern(snap.states, snap.verdicts), held, self.max_segments)
        return Selection(segments, left_out)

    def collect(self) -> Iterator[Metric]:
        selection = self.select()
        for block in self.blocks():
            try:
                yield from block(selection)
            except Exception:  # a scrape never fails as a whole
                log.exception("collector block failed", extra={"fields": {"block": block.__name__}})

    def _segments(self, selection: Selection) -> Iterator[Metric]:
        exported = GaugeMetricFamily("goodhart_segments_exported", "Segments whose per-pair series are exported"
                                     " (at most segments.max_exported, plus those in alarm).")
        exported.add_metric([], float(len(selection.segments or ())))
        left_out = GaugeMetricFamily("goodhart_segments_left_out", "Segments detected but whose per-pair series"
                                     " are left out of the export by segments.max_exported.")
        left_out.add_metric([], float(selection.left_out))
        yield from (exported, left_out)

    def _detectors(self, selection: Selection) -> Iterator[Metric]:
        snap = self.view.snapshot

        def family(name: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=PAIR_LABELS)

        alarm = family("goodhart_divergence_alarm", "1 while the pair is in alarm, else 0.")
        state = family("goodhart_detector_state", "Detector state: 0 ok, 1 warn, 2 alarm.")
        statistic = family("goodhart_detector_statistic", "The decision statistic.")
        threshold = family("goodhart_detector_threshold", "The alarm threshold of the decision statistic.")
        warn = family("goodhart_detector_warn_threshold", "The warn threshold of the decision statistic.")
        gap = family("goodhart_divergence_gap",
                     "Audit the reference predicts from the proxy minus audit observed, audit units.")
        gap_lo = family("goodhart_divergence_gap_lower", "Lower end of the gap's 95% interval.")
        gap_hi = family("goodhart_divergence_gap_upper", "Upper end of the gap's 95% interval.")
        samples = family("goodhart_detector_samples", "Audited outputs the detector's verdict used.")
        corr = GaugeMetricFamily("goodhart_rank_correlation", "Rank correlation of proxy and audit.",
                                 labels=[*PAIR_LABELS, "period"])
        for key, verdict in selection.items(snap.verdicts):
            labels = list(key)
            current = snap.states.get(key, verdict.state)
            code = STATE_CODES.get(current, 1)
            alarm.add_metric(labels, 1.0 if current == "alarm" else 0.0)
            state.add_metric(labels, float(code))
            statistic.add_metric(labels, _num(verdict.statistic))
            threshold.add_metric(labels, _num(verdict.threshold))
            e = verdict.estimates
            warn.add_metric(labels, _num(e.warn_threshold))
            gap.add_metric(labels, _num(e.gap))
            gap_lo.add_metric(labels, _num(e.gap_lower))
            gap_hi.add_metric(labels, _num(e.gap_upper))
            samples.add_metric(labels, _num(e.samples or 0))
            for period, value in (("reference", e.rank_corr_reference), ("window", e.rank_corr_window)):
                if value is not None and math.isfinite(value):  # unknown: no sample, not NaN
                    corr.add_metric([*labels, period], value)
        yield from (alarm, state, statistic, threshold, warn, gap, gap_lo, gap_hi, samples, corr)

        # Old series names still exported for one release (docs/metrics.md, "Deprecated").
        deprecated = {"audited": "pairs"}  # goodhart_pair_pairs_total: removed in 0.3.0
        families: dict[str, CounterMetricFamily] = {}
        for key, sums in selection.items(snap.sufficient):
            for stat, value in sorted(sums.items()):
                for name in filter(None, (stat, deprecated.get(stat))):
                    fam = families.get(name)
                    if fam is None:
                        fam = families[name] = CounterMetricFamily(
                            f"goodhart_pair_{name}", f"Per-pair sufficient statistic '{name}' for pooling replicas"
                            + (f" (deprecated: use goodhart_pair_{stat}_total)." if name != stat else "."),
                            labels=PAIR_LABELS)
                    fam.add_metric(list(key), float(value))
        yield from families.values()

    def _times(self, selection: Selection) -> Iterator[Metric]:
        """The two times of a divergence, named apart: when it started (the detector's estimate of
        the excursion's start) and when the pair's current state was raised."""
        snap = self.view.snapshot
        started = GaugeMetricFamily("goodhart_divergence_started_timestamp_seconds",
                                    "Estimated start of the current divergence: the oldest audited output of the"
                                    " detector's current excursion; 0 while ok or unknown.", labels=PAIR_LABELS)
        raised = GaugeMetricFamily("goodhart_divergence_raised_timestamp_seconds",
                                   "When the pair entered its current warn or alarm state; 0 while ok.",
                                   labels=PAIR_LABELS)
        since = GaugeMetricFamily("goodhart_divergence_since_timestamp_seconds",
                                  "Deprecated (removed in 0.3.0): use goodhart_divergence_raised_timestamp_seconds.",
                                  labels=PAIR_LABELS)
        for key, verdict in selection.items(snap.verdicts):
            current = snap.states.get(key, verdict.state)
            entered = snap.since.get(key)
            at = float(entered) if current != "ok" and entered else 0.0
            raised.add_metric(list(key), at)
            since.add_metric(list(key), at)
            start = verdict.estimates.since
            known = current != "ok" and start is not None and math.isfinite(start)
            started.add_metric(list(key), float(start) if known else 0.0)  # type: ignore[arg-type]
        yield from (started, raised, since)


    def _references(self, selection: Selection) -> Iterator[Metric]:
        """Where each fitted reference came from and the time span of the audited outputs behind it."""
        refs = self.view.snapshot.references
        info = InfoMetricFamily("goodhart_reference", "A pair's reference: origin fitted (here, after warm-up) or "
                                "imported (from a reference artifact); absent while warming up.", labels=PAIR_LABELS)
        start = GaugeMetricFamily("goodhart_reference_start_timestamp_seconds",
                                  "Time of the oldest audited output the pair's reference was fitted on.",
                                  labels=PAIR_LABELS)
        end = GaugeMetricFamily("goodhart_reference_end_timestamp_seconds",
                                "Time of the newest audited output the pair's reference was fitted on.",
                                labels=PAIR_LABELS)
        for key, ref in selection.items(refs):
            info.add_metric(list(key), {"origin": ref.origin})
            if ref.first_ts is not None and ref.last_ts is not None:  # not recorded by older agents
                start.add_metric(list(key), ref.first_ts)
                end.add_metric(list(key), ref.last_ts)
        yield from (info, start, end)


    def _pairs(self, selection: Selection) -> Iterator[Metric]:
        snap = self.view.snapshot
        stats = self.view.store_stats()
        pairs = GaugeMetricFamily("goodhart_audited_pairs", "Audited pairs held in the store.", labels=PAIR_LABELS)
        keys = set(stats.pair_counts) | {k for k in snap.verdicts if k[2] == ALL}
        for key in sorted(k for k in keys if selection.shown(k[2])):
            pairs.add_metric(list(key), float(stats.pair_counts.get(key, 0)))
        yield pairs
        pending = GaugeMetricFamily("goodhart_pending_outputs", "Outputs waiting for their labels.")
        pending.add_metric([], float(stats.pending_outputs))
        yield pending
        labels = GaugeMetricFamily("goodhart_pending_labels", "Labels that arrived before their outputs, waiting.")
        labels.add_metric([], float(stats.pending_labels))
        yield labels

    def _validity(self, selection: Selection) -> Iterator[Metric]:
        """How much each proxy is still worth (agent/validity.py)."""
        validity = GaugeMetricFamily(
            "goodhart_proxy_validity", "How much the proxy is still worth for the audit over the newest audited"
            " pairs: ROC AUC (kind roc_auc, binary audits; 0.5 worthless) or Spearman (kind spearman; 0 worthless).",
            labels=[*PAIR_LABELS, "kind"])
        used = GaugeMetricFamily("goodhart_proxy_validity_pairs", "Audited pairs the validity was computed over.",
                                 labels=PAIR_LABELS)
        for key, v in selection.items(self.view.proxy_validity()):
            validity.add_metric([*key, v.kind], v.value)
            used.add_metric(list(key), float(v.pairs))
        yield validity
        yield used

    def _means(self, selection: Selection) -> Iterator[Metric]:
        proxy = GaugeMetricFamily("goodhart_proxy_mean", "Window mean of a proxy, in its own units.",
                                  labels=["proxy", "segment"])
        audit = GaugeMetricFamily("goodhart_audit_mean", "Window mean of an audit, in its own units.",
                                  labels=["audit", "segment"])
        for (kind, name, segment), value in sorted(self.view.window_means().items()):
            if not selection.shown(segment):
                continue
            (proxy if kind == "proxy" else audit).add_metric([name, segment], value)
        yield proxy
        yield audit
