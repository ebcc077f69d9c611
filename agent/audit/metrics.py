"""The audit series: persistent counters (store + the pipeline's mirror), a latency histogram, gauges.

Counters live in the store's ``counters`` table, written in the same transaction as the queue
change they count, so they survive restarts; the pipeline keeps the in-memory mirror the exporter
reads. The latency histogram is in memory only (a restart starts it again, which ``rate()``
handles). Every reason is pre-declared at zero so ``rate()`` and alerts see the series from the start.

This module imports neither the service nor the pipeline: the families are built from what the
caller passes in at scrape time (a counter reader, one :class:`AuditState` per audit).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from agent.audit.producer import TERMINAL_REASONS, TRANSIENT_REASONS
from agent.counters import CounterKey, Counters

#: counter increments by (name, sorted labels): the shape of the pipeline's counter mirror
Counts = dict[CounterKey, float]
#: reads one persistent counter, as ``Pipeline.counter(name, **labels)``
CounterReader = Callable[..., float]

LATENCY_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SKIP_REASONS: tuple[str, ...] = ("budget", "queue_full", "error")
TOKEN_KINDS: tuple[str, ...] = ("prompt", "completion")


def count(counts: Counts, name: str, by: float = 1.0, **labels: str) -> None:
    key = (name, tuple(sorted(labels.items())))
    counts[key] = counts.get(key, 0.0) + by


def add_counts(counters: Counters, counts: Counts) -> None:
    """Persist with the caller's store transaction, and mirror into the pipeline's counters."""
    counters.add(counts)


@dataclass(frozen=True)
class AuditState:
    """One judge or grader audit as a scrape sees it."""

    name: str
    kind: str                      # the producer's kind: "judge" or "grader"
    remaining: dict[str, float]    # budget tokens per window, now
    capacity: dict[str, float]     # budget cap per window
    depth: int                     # queue rows not finished
    circuit_open: bool


class LatencyHistograms:
    """One cumulative-bucket histogram per audit, built into a family at scrape time."""

    def __init__(self, audits: Iterable[str], buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self._lock = threading.Lock()
        self._counts = {a: [0] * (len(buckets) + 1) for a in audits}
        self._sums = dict.fromkeys(self._counts, 0.0)

    def observe(self, audit: str, seconds: float) -> None:
        if not math.isfinite(seconds) or audit not in self._counts:
            return
        index = next((i for i, le in enumerate(self.buckets) if seconds <= le), len(self.buckets))
        with self._lock:
            self._counts[audit][index] += 1
            self._sums[audit] += seconds

    def family(self) -> HistogramMetricFamily:
        fam = HistogramMetricFamily("goodhart_audit_latency_seconds",
                                    "Duration of one request to a judge or grader, any outcome.", labels=["audit"])
        with self._lock:
            for audit, counts in sorted(self._counts.items()):
                cumulative, running = [], 0
                for le, n in zip([*map(str, self.buckets), "+Inf"], counts, strict=True):
                    running += n
                    cumulative.append((le, float(running)))
                fam.add_metric([audit], cumulative, self._sums[audit])
        return fam


def _counter_families(audits: Sequence[AuditState], counter: CounterReader) -> Iterator[Metric]:
    requested = CounterMetricFamily("goodhart_audits_requested",
                                    "Audits queued for a judge or grader (sampled, within budget).", labels=["audit"])
    succeeded = CounterMetricFamily("goodhart_audits_succeeded", "Audits that returned a usable score.",
                                    labels=["audit"])
    failed = CounterMetricFamily("goodhart_audits_failed", "Audits that failed for good, by reason.",
                                 labels=["audit", "reason"])
    retries = CounterMetricFamily("goodhart_audit_retries", "Requests that failed and will be retried, by reason.",
                                  labels=["audit", "reason"])
    skipped = CounterMetricFamily("goodhart_audits_skipped", "Sampled outputs not queued (budget, queue full).",
                                  labels=["audit", "reason"])
    cost = CounterMetricFamily("goodhart_audit_cost", "Estimated cost of audits, in the configured price units.",
                               labels=["audit"])
    tokens = CounterMetricFamily("goodhart_judge_tokens", "Tokens spent by LLM judges.", labels=["audit", "kind"])
    for name in (a.name for a in audits):
        requested.add_metric([name], counter("audits_requested_total", audit=name))
        succeeded.add_metric([name], counter("audits_succeeded_total", audit=name))
        cost.add_metric([name], counter("audit_cost_total", audit=name))
        for reason in TERMINAL_REASONS:
            failed.add_metric([name, reason], counter("audits_failed_total", audit=name, reason=reason))
        for reason in TRANSIENT_REASONS:
            retries.add_metric([name, reason], counter("audit_retries_total", audit=name, reason=reason))
        for reason in SKIP_REASONS:
            skipped.add_metric([name, reason], counter("audits_skipped_total", audit=name, reason=reason))
    for audit in audits:
        if audit.kind == "judge":
            for kind in TOKEN_KINDS:
                tokens.add_metric([audit.name, kind], counter("judge_tokens_total", audit=audit.name, kind=kind))
    yield from (requested, succeeded, failed, retries, skipped, cost, tokens)


def _gauge_families(audits: Sequence[AuditState]) -> Iterator[Metric]:
    remaining = GaugeMetricFamily("goodhart_audit_budget_remaining",
                                  "Audits the budget allows right now (token bucket level).",
                                  labels=["audit", "window"])
    capacity = GaugeMetricFamily("goodhart_audit_budget_capacity", "Audits per window the budget allows.",
                                 labels=["audit", "window"])
    depth = GaugeMetricFamily("goodhart_audit_queue_depth", "Audits queued and not finished yet.", labels=["audit"])
    circuit = GaugeMetricFamily("goodhart_audit_circuit_open", "1 while the circuit breaker holds requests back.",
                                labels=["audit"])
    for audit in audits:
        for window, level in audit.remaining.items():
            remaining.add_metric([audit.name, window], level)
        for window, cap in audit.capacity.items():
            capacity.add_metric([audit.name, window], cap)
        depth.add_metric([audit.name], float(audit.depth))
        circuit.add_metric([audit.name], 1.0 if audit.circuit_open else 0.0)
    yield from (remaining, capacity, depth, circuit)


def audit_families(audits: Sequence[AuditState], counter: CounterReader,
                   latency: LatencyHistograms) -> Iterator[Metric]:
    """Every audit series from the state passed in (used as an ``AgentCollector`` extra block)."""
    yield from _counter_families(audits, counter)
    yield latency.family()
    yield from _gauge_families(audits)
