"""The pipeline, top to bottom: source → record → store → audit → detect → export.

:class:`Pipeline` owns one step of each kind: :meth:`ingest` (a source's batch into the store,
joined with labels), :meth:`detect` (new outputs and pairs from the store into the detectors, then
the alarm state machine), :meth:`retention`. The daemon's scheduler and ``replay``'s virtual clock
call the very same methods; neither knows anything the other does not. Steps are serialised by one
lock, so a scrape or a rebaseline never sees half a step.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from agent.alarms import AlarmBook, PairKey
from agent.clock import Clock
from agent.config import Config
from agent.detect.base import Detector, PairObservation, Verdict
from agent.detect.factory import detector_factory, detector_settings
from agent.records import Record, RecordParser, Rejection
from agent.sources.base import Batch, IngestResult, Source
from agent.store import OutputRow, Store
from agent.validity import Validity, ValidityTracker
from agent.windows import RollingMeans

log = logging.getLogger(__name__)

OTHER_SEGMENT = "other"
ALL = "*"
Event = dict[str, Any]
EventSink = Callable[[Event], None]
OutputHook = Callable[[OutputRow, Record], None]
#: counter values by (name, sorted labels), as persisted in the store's ``counters`` table
Counts = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass
class JobStats:
    runs: int = 0
    errors: int = 0
    last_duration: float = 0.0


@dataclass
class Snapshot:
    """What the exporter shows, rebuilt at the end of every detect step."""

    verdicts: dict[PairKey, Verdict] = field(default_factory=dict)
    states: dict[PairKey, str] = field(default_factory=dict)  # after the alarm latch
    since: dict[PairKey, float | None] = field(default_factory=dict)
    sufficient: dict[PairKey, dict[str, float]] = field(default_factory=dict)
    taken_at: float = 0.0
    generation: int = 0


@dataclass(frozen=True)
class StoreStats:
    """Aggregates read from the store (so they survive restarts); computed lazily for scrapes."""

    pair_counts: dict[PairKey, int]
    pending_outputs: int
    pending_labels: int


class SegmentFolder:
    """Keeps segment labels bounded: the first ``max_values`` distinct values, then ``other``."""

    def __init__(self, store: Store, max_values: int) -> None:
        self.store = store
        self.max_values = max_values
        self.known = set(store.segments())

    def fold(self, value: str | None, ts: float) -> str | None:
        if value is None or value in self.known:
            return value
        if len(self.known) >= self.max_values or value == OTHER_SEGMENT:
            return OTHER_SEGMENT
        self.known.add(value)
        self.store.add_segment(value, ts)
        return value


class Pipeline:
    def __init__(self, config: Config, store: Store, clock: Clock,
                 make_detector: Callable[[], Detector] | None = None) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.lock = threading.RLock()
        self.parser = RecordParser(config)
        self.segments = SegmentFolder(store, config.segments.max_values if config.segments else 0)
        self.make_detector = make_detector or detector_factory(config)
        self.detector_settings = detector_settings(config) if make_detector is None else {}
        self.directions = {p.name: (-1.0 if p.direction == "lower" else 1.0) for p in config.proxies}
        self.audit_names = [a.name for a in config.audits]
        self.label_ttl = config.retention.label_ttl_seconds
        self.means = RollingMeans(config.detection.window_seconds)
        self.validity = ValidityTracker(self.directions, config.detection.validity_pairs)
        self.detectors: dict[PairKey, Detector] = {}
        self.alarms = AlarmBook()
        self.event_sinks: list[EventSink] = []
        self.output_hooks: list[OutputHook] = []
        self.jobs: dict[str, JobStats] = defaultdict(JobStats)
        self.last_record_ts: dict[str, float] = {}
        self.counters: Counts = {}
        self.snapshot = Snapshot()
        self._store_stats: tuple[int, StoreStats] | None = None
        self._stats_lock = threading.Lock()
        self._dirty: set[PairKey] = set()  # detectors changed since their state was last saved
        self._cursors = {name: store.get_cursor(name) for name in ("detect.outputs", "detect.pairs")}
        self._checkpointed_at: float | None = None
        self._load()

    # -- state across restarts ---------------------------------------------------------------------
    def _load(self) -> None:
        for name, labels, value in self.store.counters():
            self.counters[(name, tuple(sorted(labels.items())))] = value
        changed: list[PairKey] = []
        for key_text, state in sorted(self.store.load_detectors().items()):
            key: PairKey = tuple(json.loads(key_text))  # type: ignore[assignment]
            if state.get("settings", {}) != self.detector_settings:
                # A detector calibrated for other settings would silently break the documented
                # false-alarm budget: start it afresh, as after a rebaseline.
                changed.append(key)
                continue
            detector = self.make_detector()
            detector.load_state(state["detector"])
            self.detectors[key] = detector
            self.alarms.load(key, state["alarm"])
        if changed:
            log.warning("detection settings changed: these pairs start a new reference",
                        extra={"fields": {"pairs": [list(k) for k in changed], "settings": self.detector_settings}})
            self.store.append_event(self.clock.now(), {"ts": self.clock.now(), "event": "settings_changed",
                                                       "pairs": [list(k) for k in changed]})
        for proxy in self.directions:
            for audit in self.audit_names:
                self._detector((proxy, audit, ALL))
        self._refresh_snapshot(self.clock.now(), {})

    def _detector(self, key: PairKey) -> Detector:
        """The detector for ``key``, created on first use; marked as changed, since it is about to be."""
        detector = self.detectors.get(key)
        if detector is None:
            detector = self.detectors[key] = self.make_detector()
        self._dirty.add(key)
        return detector

    def _count(self, pending: Counts, name: str,
               by: float = 1.0, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        pending[key] = pending.get(key, 0.0) + by

    def counter(self, name: str, **labels: str) -> float:
        return self.counters.get((name, tuple(sorted(labels.items()))), 0.0)

    # -- ingest ----------------------------------------------------------------------------------------
    def ingest(self, source: Source, max_batches: int | None = None) -> int:
        """Drain a source batch by batch; returns how many items were read."""
        total = 0
        batches = 0
        while max_batches is None or batches < max_batches:
            batch = source.read(self.config.source.max_batch_records if self.config.source else 5000)
            if not batch.items and not batch.too_large and batch.checkpoint is None:
                break
            self.ingest_batch(source.name, batch)
            source.commit(batch.checkpoint)
            total += len(batch.items)
            batches += 1
        return total

    def ingest_batch(self, source_name: str, batch: Batch) -> IngestResult:
        """Store one batch and its checkpoint in a single transaction."""
        with self.lock:
            pending: Counts = {}
            try:
                with self.store.transaction():
                    result = self._ingest_items(source_name, batch.items, pending)
                    if batch.too_large:
                        self._count(pending, "records_total", batch.too_large, source=source_name)
                        self._count(pending, "records_rejected_total", batch.too_large, reason="too_large")
                        result.rejected["too_large"] = result.rejected.get("too_large", 0) + batch.too_large
                    for (name, labels), by in pending.items():
                        self.store.incr(name, labels, by)
                    if batch.checkpoint is not None:
                        self.store.set_offset(source_name, batch.checkpoint)
            except Exception:
                self.segments.known = set(self.store.segments())  # forget what the rollback undid
                raise
            # Mirrored only once committed, and under the lock, so concurrent pushes add up.
            for key, by in pending.items():
                self.counters[key] = self.counters.get(key, 0.0) + by
        return result

    def ingest_items(self, source_name: str, items: Iterable[bytes | dict[str, Any]]) -> IngestResult:
        """Store decoded or raw items (a push or a pull page) in one transaction."""
        return self.ingest_batch(source_name, Batch(items=list(items)))

    def _ingest_items(self, source_name: str, items: Iterable[bytes | dict[str, Any]],
                      pending: Counts) -> IngestResult:
        result = IngestResult()
        now = self.clock.now()
        for item in items:
            self._count(pending, "records_total", source=source_name)
            parsed = self.parser.parse_decoded(item) if isinstance(item, dict) else self.parser.parse_line(item)
            for proxy, reason in parsed.problems:  # a computed proxy failed: the record goes on without it
                self._count(pending, "metric_failures_total", proxy=proxy, reason=reason)
            if isinstance(parsed, Rejection):
                self._reject(pending, result, parsed.reason)
                continue
            ts = parsed.ts if parsed.ts is not None else now
            segment = self.segments.fold(parsed.segment, ts)
            if parsed.is_output:
                accepted = self._ingest_output(parsed, ts, segment, now, pending, result)
            else:
                accepted = self._ingest_label(parsed, ts, now, pending, result)
            if accepted:
                result.accepted += 1
                self.last_record_ts[source_name] = max(self.last_record_ts.get(source_name, 0.0), ts)
        return result

    def _reject(self, pending: Counts, result: IngestResult,
                reason: str) -> None:
        self._count(pending, "records_rejected_total", reason=reason)
        result.rejected[reason] = result.rejected.get(reason, 0) + 1

    def _ingest_output(self, record: Record, ts: float, segment: str | None, now: float,
                       pending: Counts, result: IngestResult) -> bool:
        output = self.store.insert_output(record.id, ts, segment, record.proxies, now + self.label_ttl)
        if output is None:  # seen before: only new audit values it carries still count
            known = self.store.get_output(record.id)
            if known is None or not record.audits or not self.store.insert_pairs(known, record.audits, 1.0):
                self._reject(pending, result, "duplicate")
                return False
            self._add_audit_means(known, record.audits, now)
            return True
        for name, value in record.proxies.items():
            self.means.add(("proxy", name, ALL), now, value)
            if segment is not None:
                self.means.add(("proxy", name, segment), now, value)
        audits = dict(record.audits)
        early = self.store.take_early_label(record.id)
        weight = 1.0
        if early is not None:
            audits = {**early[0], **audits}
            weight = early[1]
            self._count(pending, "labels_joined_total")
            result.joined += 1
        if audits and self.store.insert_pairs(output, audits, weight):
            self._add_audit_means(output, audits, now)
        for hook in self.output_hooks:
            hook(output, record)
        return True

    def _ingest_label(self, record: Record, ts: float, now: float,
                      pending: Counts, result: IngestResult) -> bool:
        output = self.store.get_output(record.id)
        if output is None:
            self.store.put_early_label(record.id, ts, record.audits, 1.0, now + self.label_ttl)
            return True
        if not self.store.insert_pairs(output, record.audits, 1.0):
            self._reject(pending, result, "duplicate")  # every value it carries is already joined
            return False
        self._count(pending, "labels_joined_total")
        result.joined += 1
        self._add_audit_means(output, record.audits, now)
        return True

    def _add_audit_means(self, output: OutputRow, audits: dict[str, float], now: float) -> None:
        for name, value in audits.items():
            self.means.add(("audit", name, ALL), now, value)
            if output.segment is not None:
                self.means.add(("audit", name, output.segment), now, value)

    def add_audit(self, output: OutputRow, audits: dict[str, float], weight: float) -> int:
        """An audit produced by a judge or grader: joined like a label, with its sampling weight."""
        with self.lock, self.store.transaction():
            inserted = self.store.insert_pairs(output, audits, weight)
            if inserted:
                self._add_audit_means(output, audits, self.clock.now())
        return inserted

    # -- detect -------------------------------------------------------------------------------------------
    def detect(self) -> list[Event]:
        """Feed new outputs and pairs to the detectors, take verdicts, emit state changes."""
        with self.lock:
            now = self.clock.now()
            out_cursor = self._cursors["detect.outputs"]
            pair_cursor = self._cursors["detect.pairs"]
            while rows := self.store.outputs_since(out_cursor):
                for row in rows:
                    self._feed_output(row.ts, row.segment, row.proxies)
                out_cursor = rows[-1].seq
            while pairs := self.store.pairs_since(pair_cursor):
                for pair in pairs:
                    obs = PairObservation(pair.ts, pair.proxy_value * self.directions.get(pair.proxy, 1.0),
                                          pair.audit_value, pair.weight)
                    self._detector((pair.proxy, pair.audit, ALL)).observe_pair(obs)
                    if pair.segment is not None:
                        self._detector((pair.proxy, pair.audit, pair.segment)).observe_pair(obs)
                pair_cursor = pairs[-1].seq
            verdicts: dict[PairKey, Verdict] = {}
            events: list[Event] = []
            for key in sorted(self.detectors):
                verdict = self.detectors[key].verdict(now)
                verdicts[key] = verdict
                event = self.alarms.update(key, verdict, now)
                if event is not None:
                    events.append(event)
                    self._dirty.add(key)
            self._cursors.update({"detect.outputs": out_cursor, "detect.pairs": pair_cursor})
            with self.store.transaction():
                for event in events:
                    self.store.append_event(now, event)
                every = self.config.schedule.checkpoint_seconds
                if events or self._checkpointed_at is None or now - self._checkpointed_at >= every:
                    self._checkpoint(now)
            self._refresh_snapshot(now, verdicts)
        self._emit(events)
        return events

    def _feed_output(self, ts: float, segment: str | None, proxies: dict[str, float]) -> None:
        for proxy, value in proxies.items():
            oriented = value * self.directions.get(proxy, 1.0)
            for audit in self.audit_names:
                self._detector((proxy, audit, ALL)).observe_proxy(ts, oriented)
                if segment is not None:
                    self._detector((proxy, audit, segment)).observe_proxy(ts, oriented)

    def checkpoint(self) -> None:
        """Save detector state with the cursors it corresponds to (the daemon does so on shutdown)."""
        with self.lock, self.store.transaction():
            self._checkpoint(self.clock.now())

    def _checkpoint(self, now: float) -> None:
        """Detectors and cursors in one transaction: after a crash, the detectors resume at the
        last checkpoint and are re-fed what the store received since, so nothing is seen twice."""
        self._save_detectors()
        for name, value in self._cursors.items():
            self.store.set_cursor(name, value)
        self._checkpointed_at = now

    def _save_detectors(self) -> None:
        """Persist the detectors that changed (verdicts do not change a detector's state)."""
        self.store.save_detectors({
            json.dumps(list(key)): {"detector": self.detectors[key].state_dict(), "alarm": self.alarms.to_dict(key),
                                    "settings": self.detector_settings}
            for key in sorted(self._dirty)})
        self._dirty.clear()

    def _refresh_snapshot(self, now: float, verdicts: dict[PairKey, Verdict]) -> None:
        self.snapshot = Snapshot(
            verdicts=verdicts or dict(self.snapshot.verdicts),
            states={key: self.alarms.state(key).state for key in self.detectors},
            since={key: self.alarms.state(key).since for key in self.detectors},
            sufficient={key: det.sufficient_statistics() for key, det in self.detectors.items()},
            taken_at=now, generation=self.snapshot.generation + 1)

    def store_stats(self) -> StoreStats:
        """Pair and pending counts as of the last detect step, queried at most once per step.

        Not under the pipeline lock: a scrape must not wait for a whole detect step.
        """
        with self._stats_lock:
            cached = self._store_stats
            if cached is not None and cached[0] == self.snapshot.generation:
                return cached[1]
            pending_outputs, pending_labels = self.store.pending_counts()
            stats = StoreStats(self.store.pair_counts(), pending_outputs, pending_labels)
            self._store_stats = (self.snapshot.generation, stats)
            return stats

    def proxy_validity(self) -> dict[PairKey, Validity]:
        """How much each proxy is still worth, brought up to date with the store when asked.

        Computed for scrapes (and replay's --metrics-out), not on every detect step: replay
        would otherwise spend a third of its time ranking windows nobody reads.
        """
        with self._stats_lock:
            return self.validity.compute(self.store, list(self.detectors))

    def window_means(self) -> dict[tuple[str, ...], float]:
        return self.means.means(self.clock.now())

    def _emit(self, events: list[Event]) -> None:
        for event in events:
            for sink in self.event_sinks:
                try:
                    sink(event)
                except Exception:  # a sink must never break detection
                    log.exception("event sink failed")

    # -- operator actions --------------------------------------------------------------------------------
    def rebaseline(self, proxy: str | None = None, audit: str | None = None,
                   segment: str | None = None) -> list[Event]:
        """Forget the reference of the matching pairs after an intended change; recorded as an event."""
        with self.lock:
            now = self.clock.now()
            keys = [k for k in sorted(self.detectors)
                    if (proxy is None or k[0] == proxy) and (audit is None or k[1] == audit)
                    and (segment is None or k[2] == segment)]
            events: list[Event] = []
            for key in keys:
                self._detector(key).rebaseline(now)
                verdict = self.detectors[key].verdict(now)
                event = self.alarms.update(key, verdict, now)
                if event is not None:
                    event["cause"] = "rebaseline"
                    events.append(event)
            record = {"ts": now, "event": "rebaseline", "pairs": [list(k) for k in keys]}
            with self.store.transaction():
                self._checkpoint(now)
                self.store.append_event(now, record)
                for event in events:
                    self.store.append_event(now, event)
            self._refresh_snapshot(now, {**self.snapshot.verdicts,
                                         **{k: self.detectors[k].verdict(now) for k in keys}})
        log.info("rebaseline", extra={"fields": {"pairs": len(keys)}})
        self._emit(events)
        return events

    # -- retention -----------------------------------------------------------------------------------------
    def retention(self) -> dict[str, int]:
        with self.lock:
            now = self.clock.now()
            r = self.config.retention
            dropped = self.store.expire(now, now - r.pairs_max_age_seconds, r.max_pending, r.max_pairs,
                                        r.max_events, remember_ids_seconds=self.label_ttl,
                                        max_seen_ids=r.max_seen_ids)
            pending: Counts = {}
            for kind in ("output", "label"):
                if dropped.get(kind):
                    self._count(pending, "labels_expired_total", dropped[kind], kind=kind)
            with self.store.transaction():
                for (name, labels), by in pending.items():
                    self.store.incr(name, labels, by)
            for key, by in pending.items():
                self.counters[key] = self.counters.get(key, 0.0) + by
        return dropped

    # -- bookkeeping for the scheduler ---------------------------------------------------------------------
    def run_job(self, name: str, step: Callable[[], object]) -> None:
        """Run one step, timing it; errors are logged and counted, never raised into the scheduler."""
        started = time.perf_counter()
        stats = self.jobs[name]
        try:
            step()
        except Exception:
            stats.errors += 1
            log.exception("job failed", extra={"fields": {"job": name}})
        finally:
            stats.runs += 1
            stats.last_duration = time.perf_counter() - started
