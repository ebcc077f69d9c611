"""A forwarder's series: what it delivered, what failed and why, what it dropped and why, its buffer.

Built at scrape time from the persistent counters (they survive restarts, like every count) and
one read of the buffer's totals. :class:`ForwarderView` is what the exporter's shared blocks
(records, rejections, computed proxies, store size) read on a forwarder, in place of the pipeline's view.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from agent.clock import Clock
from agent.compute import Computer
from agent.counters import CounterKey
from agent.forward.client import SEND_FAILURE_REASONS
from agent.forward.forwarder import DROP_REASONS, Forwarder


class ForwarderView:
    """The read-only state a scrape of a forwarder sees."""

    def __init__(self, forwarder: Forwarder, clock: Clock) -> None:
        self._forwarder = forwarder
        self._clock = clock

    def counters(self) -> dict[CounterKey, float]:
        return self._forwarder.counters.snapshot()

    def counter(self, name: str, **labels: str) -> float:
        return self._forwarder.counters.value(name, **labels)

    def last_record_ts(self) -> dict[str, float]:
        return self._forwarder.last_record_ts

    def computers(self) -> Mapping[str, Computer]:
        return self._forwarder.parser.computers

    def store_size_bytes(self) -> int:
        return self._forwarder.store.size_bytes()

    def collect(self) -> Iterator[Metric]:
        """The ``goodhart_forward_*`` series."""
        f = self._forwarder
        records = CounterMetricFamily("goodhart_forward_records", "Records the gateway accepted (202).")
        records.add_metric([], f.counters.value("forward_records_total"))
        batches = CounterMetricFamily("goodhart_forward_batches", "Batches the gateway accepted (202).")
        batches.add_metric([], f.counters.value("forward_batches_total"))
        failures = CounterMetricFamily("goodhart_forward_send_failures", "Batches not accepted, by reason"
                                       " (they stay buffered and are sent again).", labels=["reason"])
        for reason in SEND_FAILURE_REASONS:
            failures.add_metric([reason], f.counters.value("forward_send_failures_total", reason=reason))
        dropped = CounterMetricFamily("goodhart_forward_dropped_records", "Buffered records dropped before"
                                      " the gateway accepted them, by reason.", labels=["reason"])
        for reason in DROP_REASONS:
            dropped.add_metric([reason], f.counters.value("forward_dropped_records_total", reason=reason))
        yield from (records, batches, failures, dropped)
        stats = f.store.buffer_stats()
        depth = GaugeMetricFamily("goodhart_forward_buffer_records", "Records buffered, not yet accepted.")
        depth.add_metric([], float(stats.records))
        size = GaugeMetricFamily("goodhart_forward_buffer_bytes", "Bytes of records buffered (uncompressed).")
        size.add_metric([], float(stats.bytes))
        age = GaugeMetricFamily("goodhart_forward_buffer_oldest_age_seconds",
                                "Age of the oldest buffered record; 0 when the buffer is empty.")
        oldest = stats.oldest_buffered_at
        age.add_metric([], 0.0 if oldest is None else max(0.0, self._clock.now() - oldest))
        yield from (depth, size, age)
