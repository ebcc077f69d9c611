"""The pipeline, top to bottom: source → record → store → audit → detect → export.

:class:`Pipeline` is a thin facade with one method per step: :meth:`ingest` (a source's batches
into the store, agent/ingest.py), :meth:`add_audit` (a judge's or grader's score joined like a
label), :meth:`detect` (the detector bank, agent/bank.py), :meth:`retention`, :meth:`rebaseline`.
The daemon's scheduler and ``replay``'s virtual scheduler call the very same methods (wired by
agent/wiring.py); neither knows anything the other does not. Steps are serialised by one lock, so
a rebaseline never sees half a step; scrapes read :attr:`view` and never wait for a step.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from agent.artifact import ArtifactError, load_artifact
from agent.bank import DetectorBank, Event, key_text
from agent.clock import Clock
from agent.config import Config, ConfigError
from agent.core import PairKey
from agent.counters import Counters
from agent.detect.base import Detector
from agent.detect.factory import detector_factory, detector_settings
from agent.ingest import Ingester, SegmentFolder, excerpt_reader
from agent.records import Record, RecordParser, Rejection
from agent.sources.base import Batch, Drained, IngestResult, Source, drain
from agent.store import OutputRow, Store
from agent.validity import ValidityTracker
from agent.view import PipelineView
from agent.windows import RollingMeans

log = logging.getLogger(__name__)

EventSink = Callable[[Event], None]
Item = bytes | dict[str, Any] | Record | Rejection


class Pipeline:
    def __init__(self, config: Config, store: Store, clock: Clock,
                 make_detector: Callable[[], Detector] | None = None) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.lock = threading.RLock()
        self.counters = Counters(store)
        means = RollingMeans(config.detection.window_seconds)
        segments = SegmentFolder(store, config.segments.max_values if config.segments else 0)
        self.ingester = Ingester(RecordParser(config), store, segments, means,
                                 config.retention.label_ttl_seconds)
        if config.evidence.keep_text:
            ev = config.evidence
            self.ingester.excerpt = excerpt_reader(ev.input_field, ev.output_field, ev.excerpt_chars)
        #: +1 for a proxy where higher is better, -1 where lower is: detectors see "better" as up
        self.directions = directions = {p.name: (-1.0 if p.direction == "lower" else 1.0) for p in config.proxies}
        #: called for each new output inside the ingest transaction (the audit sampler)
        self.output_hooks = self.ingester.output_hooks
        self.bank = DetectorBank(store, make_detector or detector_factory(config),
                                 detector_settings(config) if make_detector is None else {},
                                 directions, [a.name for a in config.audits], config.evidence.history_seconds,
                                 config.detection.implausible_spread_multiple)
        self.event_sinks: list[EventSink] = []
        #: called after every step that publishes a new detect snapshot (detect, rebaseline, reference
        #: import), outside the lock: the daemon rebuilds its per-pair exposition (agent/exposition.py)
        self.snapshot_hooks: list[Callable[[], None]] = []
        self.view = PipelineView(store, self.counters, self.bank, means, ValidityTracker(
            directions, config.detection.validity_pairs), self.ingester, clock, config.evidence)
        self._checkpointed_at: float | None = None
        self._load()

    def _load(self) -> None:
        changed = self.bank.load()
        now = self.clock.now()
        if changed:
            pairs = [list(k) for k in changed]
            log.warning("detection settings changed: these pairs start a new reference",
                        extra={"fields": {"pairs": pairs, "settings": self.bank.settings}})
            self.store.append_event(now, {"ts": now, "event": "settings_changed", "pairs": pairs})
        if self.config.detection.reference_file:
            self.import_references(self.config.detection.reference_file, force=False,
                                   where="detection.reference_file: ")
        self.bank.refresh(now)

    def import_references(self, path: str, force: bool, where: str = "") -> list[PairKey]:
        """Start the pairs of a reference artifact from it (ConfigError naming ``where`` and the file
        when it does not fit this config). Without ``force`` (``detection.reference_file`` at start)
        a pair already started from this very file is left alone: a restart resumes its detector, and
        a rebaseline since the import stands. ``reference import`` forces."""
        try:
            artifact = load_artifact(path, self.config)
        except ArtifactError as err:
            raise ConfigError([f"{where}{path} {err}"]) from None
        done = self.store.reference_imports()
        keys = [key for key in sorted(artifact.pairs)
                if force or (row := done.get(key_text(key))) is None or row.artifact != artifact.digest]
        with self.lock:
            now = self.clock.now()
            self.bank.start_from({key: artifact.pairs[key] for key in keys})
            with self.store.transaction():
                self.store.record_imports([key_text(key) for key in keys], artifact.digest, now)
                if keys:
                    self.store.append_event(now, {"ts": now, "event": "reference_imported", "file": str(path),
                                                  "pairs": [list(k) for k in keys]})
                self._checkpoint(now)
            self.bank.refresh(now)
        self._published()
        log.info("reference artifact", extra={"fields": {"file": str(path), "pairs_in_file": len(artifact.pairs),
                                                         "pairs_started_from_it": len(keys)}})
        return keys

    # -- ingest ----------------------------------------------------------------------------------------
    def ingest(self, source: Source, max_batches: int | None = None) -> int:
        """Drain a source batch by batch; returns how many items were read."""
        return self.drain(source, max_batches).items

    def drain(self, source: Source, max_batches: int | None = None) -> Drained:
        """Up to ``max_batches`` batches of a source; says whether more are waiting."""
        max_items = next((s.max_batch_records for s in self.config.source_list if s.source_name == source.name), 5000)
        return drain(source, self.ingest_batch, max_items, max_batches)

    def ingest_batch(self, source_name: str, batch: Batch) -> IngestResult:
        """Store one batch read from a source and its offset in a single transaction."""
        return self.store_items(source_name, batch.items, batch.too_large, batch.offset)

    def store_items(self, source_name: str, items: Sequence[Item], too_large: int = 0,
                    offset: dict[str, Any] | None = None) -> IngestResult:
        """Store raw, decoded or already parsed items, and the source offset after them, in one transaction.

        One record the store refuses must not stop a stream (the batch would fail on every retry):
        such a batch is stored again one record at a time, and only the records the store still
        refuses are rejected as ``unstorable``. A store that refuses everything (disk full, locked)
        raises, and the source retries the batch later.
        """
        with self.lock:
            try:
                return self._store_batch(source_name, items, too_large, offset)
            except sqlite3.OperationalError:
                raise  # the store as a whole: nothing to isolate
            except Exception:
                if len(items) <= 1 and offset is None and not too_large:
                    raise
                log.exception("a batch failed to store: storing it record by record",
                              extra={"fields": {"source": source_name, "records": len(items)}})
                return self._store_one_by_one(source_name, items, too_large, offset)

    def _store_batch(self, source_name: str, items: Sequence[Item], too_large: int,
                     offset: dict[str, Any] | None) -> IngestResult:
        result = IngestResult()
        try:
            with self.counters.counting() as tally:
                self.ingester.store_items(source_name, items, self.clock.now(), tally, result)
                if too_large:
                    tally.count("records_total", too_large, source=source_name)
                    tally.count("records_rejected_total", too_large, reason="too_large")
                    result.rejected["too_large"] = result.rejected.get("too_large", 0) + too_large
                if offset is not None:
                    self.store.set_offset(source_name, offset)
        except Exception:
            self.ingester.segments.forget_uncommitted()
            raise
        return result

    def _store_one_by_one(self, source_name: str, items: Sequence[Item], too_large: int,
                          offset: dict[str, Any] | None) -> IngestResult:
        total = IngestResult()
        for item in items:
            try:
                one = self._store_batch(source_name, [item], 0, None)
            except sqlite3.OperationalError:
                raise
            except Exception:
                one = IngestResult(rejected={"unstorable": 1})
                with self.counters.counting() as tally:
                    tally.count("records_total", source=source_name)
                    tally.count("records_rejected_total", reason="unstorable")
            total.accepted += one.accepted
            total.joined += one.joined
            for reason, n in one.rejected.items():
                total.rejected[reason] = total.rejected.get(reason, 0) + n
        last = self._store_batch(source_name, [], too_large, offset)  # what the source may move past
        for reason, n in last.rejected.items():
            total.rejected[reason] = total.rejected.get(reason, 0) + n
        return total

    def ingest_items(self, source_name: str, items: Iterable[bytes | dict[str, Any]]) -> IngestResult:
        """Store decoded or raw items (a push or a pull page) in one transaction."""
        return self.store_items(source_name, list(items))

    def parse(self, item: bytes | dict[str, Any]) -> Record | Rejection:
        """One item as the ingest step would read it (``replay`` needs the times before storing)."""
        return self.ingester.parse(item)

    def add_audit(self, output: OutputRow, audits: dict[str, float], weight: float) -> int:
        """An audit produced by a judge or grader: joined like a label, with its sampling weight."""
        with self.lock, self.store.transaction():
            inserted = self.store.insert_pairs(output, audits, weight)
            if inserted:
                self.ingester.add_audit_means(output.segment, audits, self.clock.now())
        return inserted

    # -- detect ----------------------------------------------------------------------------------------
    def detect(self) -> list[Event]:
        """Feed new outputs and audited outputs to the detectors, take verdicts, emit state changes."""
        with self.lock:
            now = self.clock.now()
            fitted = self.bank.snapshot.references.keys()
            self.bank.feed()
            events = self.bank.judge(now)
            # A new fit is saved at once (even when the state did not change), so a reference export
            # next to the running daemon finds every fitted reference.
            refitted = self.bank.snapshot.references.keys() != fitted
            every = self.config.schedule.checkpoint_seconds
            with self.counters.counting() as tally:
                for (kind, metric), count in self.bank.take_implausible().items():
                    tally.count("implausible_values_total", count, kind=kind, metric=metric)
                for event in [*self.bank.fitted_events(set(fitted), now), *events]:
                    self.store.append_event(now, event)
                self.store.append_verdicts(self.bank.take_history())
                if events or refitted or self._checkpointed_at is None or now - self._checkpointed_at >= every:
                    self._checkpoint(now)
        self._published()
        self._emit(events)
        return events

    def checkpoint(self) -> None:
        """Save detector state with the cursors it corresponds to (the daemon does so on shutdown)."""
        with self.lock, self.store.transaction():
            self._checkpoint(self.clock.now())

    def _checkpoint(self, now: float) -> None:
        self.bank.checkpoint()
        self._checkpointed_at = now

    def _published(self) -> None:
        for hook in self.snapshot_hooks:
            try:
                hook()
            except Exception:  # a hook must never break detection
                log.exception("snapshot hook failed")

    def _emit(self, events: list[Event]) -> None:
        for event in events:
            for sink in self.event_sinks:
                try:
                    sink(event)
                except Exception:  # a sink must never break detection
                    log.exception("event sink failed")

    # -- operator actions ------------------------------------------------------------------------------
    def rebaseline(self, proxy: str | None = None, audit: str | None = None,
                   segment: str | None = None) -> list[Event]:
        """Forget the reference of the matching pairs after an intended change; recorded as an event."""
        with self.lock:
            now = self.clock.now()
            keys = self.bank.with_span(self.bank.matching(proxy, audit, segment))
            self.bank.rebaseline(now, keys)
            events = self.bank.judge(now, keys, cause="rebaseline")
            with self.store.transaction():
                self._checkpoint(now)
                self.store.append_event(now, {"ts": now, "event": "rebaseline", "pairs": [list(k) for k in keys]})
                self.store.record_rebaselines([key_text(k) for k in keys], now)  # an imported file is not re-applied
                for event in events:
                    self.store.append_event(now, event)
        log.info("rebaseline", extra={"fields": {"pairs": len(keys)}})
        self._published()
        self._emit(events)
        return events

    # -- retention -------------------------------------------------------------------------------------
    def retention(self) -> dict[str, int]:
        with self.lock:
            now = self.clock.now()
            r = self.config.retention
            dropped = self.store.expire(now, now - r.pairs_max_age_seconds, r.max_pending, r.max_pairs,
                                        r.max_events, remember_ids_seconds=r.label_ttl_seconds,
                                        max_seen_ids=r.max_seen_ids)
            self.store.expire_evidence(now - r.pairs_max_age_seconds, r.max_pairs, self.config.evidence.max_history)
            with self.counters.counting() as tally:
                for kind in ("output", "label"):
                    if dropped.get(kind):
                        tally.count("labels_expired_total", dropped[kind], kind=kind)
        return dropped
