"""Ingest: a source's items become records, records are joined in the store, and it all gets counted.

A batch at a time: parse every item (agent/records.py), read what the store holds for the batch's
ids, then per record fold the segment, apply the join rules in memory (agent/store/batch.py), the
counts, the window means and the output hooks (the audit sampler); the rows are written at the end
with one statement per table. The caller holds the transaction, so a batch and its source offset commit together.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable
from typing import Any

from agent.core import ALL, OTHER_SEGMENT, lookup
from agent.counters import Tally
from agent.records import Record, RecordParser, Rejection
from agent.sources.base import IngestResult
from agent.store import JoinBatch, OutputRow, Store
from agent.windows import RollingMeans

#: called for each new output inside the ingest transaction (the audit sampler queues judge work)
OutputHook = Callable[[OutputRow, Record], None]
#: a record's (input, output) excerpts, for the evidence (``evidence.keep_text``)
Excerpt = Callable[[Record], tuple[str | None, str | None]]


#: allocations between two young-generation collections (CPython's default: 700)
GC_YOUNG_THRESHOLD = 100_000
_frozen = False  # start-up's heap frozen out of collections (once a process)


def tune_collector() -> None:
    """Set the garbage collector for a process that ingests: once the agent is built (daemon, replay).

    Ingest allocates a batch's records, rows and window values at a steady pace, and nearly all of
    them live until the batch is stored (or, as rows, until the detect step reads them): at
    CPython's defaults the collector ran every 700 allocations, and a full collection every few
    batches walked the whole heap, start-up's objects and the rows held for the detect step
    included; about a fifth of ingest's CPU time on a backlog. Now what start-up built is frozen
    out of collections (after one collection, so its garbage is freed, not kept), and young
    collections run every :data:`GC_YOUNG_THRESHOLD` allocations. Memory is still reclaimed by
    reference counting as before; only cyclic garbage waits a little longer. Frozen once a process:
    an agent built later in the same process (a test's, never-down mode's next one) stays collectable.
    """
    global _frozen
    if not _frozen:
        gc.collect()
        gc.freeze()
        _frozen = True
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def excerpt_reader(input_field: str, output_field: str, chars: int) -> Excerpt:
    """The first ``chars`` characters of a record's input and output text, where they are strings."""
    def text(record: Record, path: str) -> str | None:
        value = lookup(record.body, path)
        return value[:chars] if isinstance(value, str) and value else None

    return lambda record: (text(record, input_field), text(record, output_field))


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

    def forget_uncommitted(self) -> None:
        """After a rolled-back batch: only what the store kept is known."""
        self.known = set(self.store.segments())


class Ingester:
    """Stores parsed records; every call runs inside the caller's store transaction."""

    def __init__(self, parser: RecordParser, store: Store, segments: SegmentFolder, means: RollingMeans,
                 label_ttl: float) -> None:
        self.parser = parser
        self.store = store
        self.segments = segments
        self.means = means
        self.label_ttl = label_ttl
        self.output_hooks: list[OutputHook] = []
        self.excerpt: Excerpt | None = None  # set when evidence.keep_text is on
        self.last_record_ts: dict[str, float] = {}
        # a batch's values per window-means key, added once it is stored; and by (kind, segment)
        # and name, the lists among them a value goes to (its ``*`` key's and its segment's)
        self._values: dict[tuple[str, ...], list[float]] = {}
        self._series: dict[tuple[str, str | None], dict[str, tuple[list[float], list[float] | None]]] = {}

    def parse(self, item: bytes | dict[str, Any]) -> Record | Rejection:
        return self.parser.parse_decoded(item) if isinstance(item, dict) else self.parser.parse_line(item)

    def store_items(self, source: str, items: Iterable[bytes | dict[str, Any] | Record | Rejection],
                    now: float, tally: Tally, result: IngestResult) -> None:
        """Parse (unless already parsed) and store each item, counting what happened to it.

        The whole batch is parsed first, so that what the store already holds for its ids is read
        with a few queries (:meth:`Store.join_batch`), the join is decided in memory record by
        record, and the new rows are written with one statement per table at the end."""
        parse_line = self.parser.parse_line
        parsed_items = [parse_line(item) if type(item) is bytes  # a line: the usual item
                        else item if isinstance(item, Record | Rejection) else self.parse(item) for item in items]
        if not parsed_items:
            return
        tally.count("records_total", len(parsed_items), source=source)
        batch = self.store.join_batch([p.id for p in parsed_items if isinstance(p, Record)])
        expires_at = now + self.label_ttl
        latest: float | None = None
        joined_before = result.joined
        self._values, self._series = {}, {}
        for parsed in parsed_items:
            for proxy, reason in parsed.problems:  # a computed proxy failed: the record goes on without it
                tally.count("metric_failures_total", proxy=proxy, reason=reason)
            if isinstance(parsed, Rejection):
                reject(tally, result, parsed.reason)
                continue
            ts = parsed.ts if parsed.ts is not None else now
            if self._store_record(parsed, ts, now, expires_at, tally, result, batch):
                result.accepted += 1
                latest = ts if latest is None or ts > latest else latest
        if result.joined > joined_before:
            tally.count("labels_joined_total", result.joined - joined_before)
        self.store.flush_batch(batch)
        self.means.add_at(now, self._values)
        self._values, self._series = {}, {}
        if latest is not None:
            self.last_record_ts[source] = max(self.last_record_ts.get(source, 0.0), latest)

    def _store_record(self, record: Record, ts: float, now: float, expires_at: float, tally: Tally,
                      result: IngestResult, batch: JoinBatch) -> bool:
        segment = self.segments.fold(record.segment, ts)
        if not record.is_output:
            label = batch.label(record.id, ts, record.audits, 1.0, expires_at)
            if label.duplicate:  # every value it carries is already joined
                reject(tally, result, "duplicate")
                return False
            if label.joined:
                result.joined += 1  # counted once for the batch
                self._add_means("audit", label.segment, record.audits)
            return True
        joined = batch.output(record.id, ts, segment, record.proxies, record.audits, expires_at)
        if joined.duplicate:
            reject(tally, result, "duplicate")
            return False
        if joined.early_label:
            result.joined += 1  # counted once for the batch
        self._add_means("audit", joined.segment, joined.joined)
        if joined.output is not None:
            self._add_means("proxy", segment, record.proxies)
            if self.excerpt is not None:
                input_text, output_text = self.excerpt(record)
                if input_text is not None or output_text is not None:
                    self.store.put_excerpt(record.id, ts, input_text, output_text)
            for hook in self.output_hooks:
                hook(joined.output, record)
        return True


    def _add_means(self, kind: str, segment: str | None, values: dict[str, float]) -> None:
        """A record's values for the window means: each under ``*`` and under its segment."""
        if not values:
            return
        lists = self._series.get((kind, segment))
        if lists is None:
            lists = self._series[(kind, segment)] = {}
        for name, value in values.items():
            targets = lists.get(name)
            if targets is None:
                targets = lists[name] = self._lists(kind, name, segment)
            whole, part = targets
            whole.append(value)
            if part is not None:
                part.append(value)

    def _lists(self, kind: str, name: str, segment: str | None) -> tuple[list[float], list[float] | None]:
        """The batch's value lists of ``name`` under ``*`` and under ``segment`` (None without one)."""
        values = self._values
        whole = values.setdefault((kind, name, ALL), [])
        return whole, None if segment is None else values.setdefault((kind, name, segment), [])

    def add_audit_means(self, segment: str | None, audits: dict[str, float], now: float) -> None:
        """An audit joined outside a batch (a judge's or grader's score)."""
        for name, value in audits.items():
            self.means.add(("audit", name, ALL), now, value)
            if segment is not None:
                self.means.add(("audit", name, segment), now, value)


def reject(tally: Tally, result: IngestResult, reason: str) -> None:
    tally.count("records_rejected_total", reason=reason)
    result.rejected[reason] = result.rejected.get(reason, 0) + 1
