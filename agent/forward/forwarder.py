"""The forwarder: a source's records, validated and enriched here, buffered durably, sent to the gateway.

Ingest (:meth:`Forwarder.store_items`) parses each item with the same :class:`RecordParser` as any
agent (so rejections and computed-proxy failures are counted where they happen), encodes the
accepted records with the pod's identity and computed values (agent/forward/enrich.py) and, in one
store transaction, appends them to the buffer, applies the buffer's bounds, writes the counts and
the source offset: a crash neither loses nor doubles a record between the source and the buffer.

The send step (:meth:`Forwarder.send_step`, scheduled every ``forward.flush_seconds``) POSTs the
oldest buffered records and removes them, in one transaction with their count, only after the
gateway's 202: delivery is at least once, and a batch sent again after a crash is a duplicate the
gateway recognises by id. Failures wait ``Retry-After`` (429, 503) or back off with jitter; a body
the gateway refuses for good is split until the one record it refuses is found and dropped.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from agent.clock import Clock
from agent.config import Config, ForwardConfig
from agent.counters import Counters, Tally
from agent.forward.client import GatewayClient, Outcome
from agent.forward.enrich import Enricher
from agent.http.client import backoff_delay
from agent.ingest import reject
from agent.records import Record, RecordParser, Rejection
from agent.sources.base import Drained, IngestResult, Source, drain
from agent.store import BufferedBatch, Store

log = logging.getLogger(__name__)

#: every reason a buffered record can be dropped for; the exporter declares them all at zero
DROP_REASONS = ("buffer_full", "too_old", "refused")
MAX_BATCHES_PER_STEP = 100  # bounds one send step so shutdown never waits long behind it


class Forwarder:
    def __init__(self, config: Config, store: Store, clock: Clock, client: GatewayClient,
                 identity: dict[str, str], should_stop: Callable[[], bool] = lambda: False,
                 rng: random.Random | None = None, monotonic: Callable[[], float] = time.monotonic) -> None:
        if config.forward is None:
            raise ValueError("a forwarder needs the forward: section")
        self.config = config
        self.settings: ForwardConfig = config.forward
        self.store = store
        self.clock = clock
        self.client = client
        self.parser = RecordParser(config)
        self.counters = Counters(store)
        self.enricher = Enricher(config, list(self.parser.computers), identity)
        self.should_stop = should_stop
        self._rng = rng or random.Random()
        self._monotonic = monotonic
        self._last_record_ts: dict[str, float] = {}
        self._in_flight = 0  # last seq of the batch being sent; never evicted
        self._attempt = 0
        self._next_attempt_at = 0.0
        self._limit = self.settings.batch_records
        #: False after a send that did not reach the gateway or was not authorised
        self.gateway_up = True

    # -- ingest: source → buffer --------------------------------------------------------------------
    def ingest(self, source: Source, max_batches: int | None = None) -> int:
        """Drain a source batch by batch into the buffer; returns how many items were read."""
        return self.drain(source, max_batches).items

    def drain(self, source: Source, max_batches: int | None = None) -> Drained:
        """Up to ``max_batches`` batches of a source into the buffer; says whether more are waiting."""
        max_items = self.config.source.max_batch_records if self.config.source else 5000
        return drain(source, lambda name, batch: self.store_items(name, batch.items, batch.too_large, batch.offset),
                     max_items, max_batches)

    def ingest_items(self, source_name: str, items: Iterable[bytes | dict[str, Any]]) -> IngestResult:
        """A push source's items, buffered before it answers (the ``Ingest`` callable)."""
        return self.store_items(source_name, list(items))

    def store_items(self, source_name: str, items: Sequence[bytes | dict[str, Any]], too_large: int = 0,
                    offset: dict[str, Any] | None = None) -> IngestResult:
        """Parse, enrich and buffer items, with their counts and the source offset, in one transaction."""
        result = IngestResult()
        now = self.clock.now()
        bodies: list[bytes] = []
        newest = None
        with self.counters.counting() as tally:
            for item in items:
                tally.count("records_total", source=source_name)
                parsed = self.parser.parse_decoded(item) if isinstance(item, dict) else self.parser.parse_line(item)
                for proxy, reason in parsed.problems:
                    tally.count("metric_failures_total", proxy=proxy, reason=reason)
                if isinstance(parsed, Rejection):
                    reject(tally, result, parsed.reason)
                    continue
                bodies.append(self.enricher.encode(parsed, now))
                result.accepted += 1
                newest = max(newest or 0.0, _record_ts(parsed, now))
            if too_large:
                tally.count("records_total", too_large, source=source_name)
                tally.count("records_rejected_total", too_large, reason="too_large")
                result.rejected["too_large"] = result.rejected.get("too_large", 0) + too_large
            if bodies:
                self.store.buffer_records(bodies, now)
                self._evict(tally, now)
            if offset is not None:
                self.store.set_offset(source_name, offset)
        if newest is not None:
            self._last_record_ts[source_name] = max(self._last_record_ts.get(source_name, 0.0), newest)
        return result

    def _evict(self, tally: Tally, now: float) -> None:
        """Apply the buffer's bounds inside the caller's transaction; count what they drop."""
        s = self.settings
        dropped = self.store.evict_buffered(s.max_buffer_bytes, now - s.max_buffer_age_seconds, self._in_flight)
        for reason, count in dropped.items():
            if count:
                tally.count("forward_dropped_records_total", count, reason=reason)
                log.warning("forward buffer dropped records", extra={"fields": {"reason": reason, "records": count}})

    # -- send: buffer → gateway ---------------------------------------------------------------------
    def send_step(self) -> int:
        """Send buffered batches until the buffer is empty, a send fails, or the agent stops; returns records sent."""
        with self.counters.counting() as tally:  # the age bound holds even when nothing new arrives
            self._evict(tally, self.clock.now())
        if self._monotonic() < self._next_attempt_at:
            return 0
        sent = 0
        for _ in range(MAX_BATCHES_PER_STEP):
            if self.should_stop():
                break
            with self.store.lock:  # an eviction sees the batch as in flight from the moment it is read
                batch = self.store.buffered_batch(self._limit, self.settings.batch_bytes)
                if batch is None:
                    break
                self._in_flight = batch.last
            try:
                outcome = self.client.send(batch.bodies)
                self._settle(batch, outcome)
            finally:
                self._in_flight = 0
            if outcome.ok:
                sent += len(batch.bodies)
            elif not outcome.refused:
                break
        return sent

    def _settle(self, batch: BufferedBatch, outcome: Outcome) -> None:
        n = len(batch.bodies)
        self.gateway_up = outcome.reached
        if outcome.ok:
            with self.counters.counting() as tally:
                self.store.ack_buffered(batch.first, batch.last)
                tally.count("forward_records_total", n)
                tally.count("forward_batches_total")
            self._attempt = 0
            self._limit = min(self.settings.batch_records, self._limit * 2)
            return
        with self.counters.counting() as tally:
            tally.count("forward_send_failures_total", reason=outcome.reason)
            if outcome.refused and n == 1:  # the gateway will never take this record: drop it, counted
                self.store.ack_buffered(batch.first, batch.last)
                tally.count("forward_dropped_records_total", reason="refused")
        if outcome.refused:
            self._limit = max(1, n // 2)  # split until the refused record is alone
            log.warning("gateway refused a batch", extra={"fields": {"status": outcome.status, "records": n}})
            return
        self._attempt += 1
        delay = outcome.retry_after
        if delay is None:
            s = self.settings
            delay = backoff_delay(self._attempt, s.backoff_initial_seconds, s.backoff_max_seconds, self._rng)
        self._next_attempt_at = self._monotonic() + delay
        log.warning("forward failed, will retry", extra={"fields": {
            "reason": outcome.reason, "status": outcome.status, "retry_in_seconds": round(delay, 2)}})

    @property
    def last_record_ts(self) -> dict[str, float]:
        """Time of the newest record buffered, by source."""
        return dict(self._last_record_ts)

    def close(self) -> None:
        self.client.close()


def _record_ts(record: Record, now: float) -> float:
    return record.ts if record.ts is not None else now
