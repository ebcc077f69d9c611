"""Ingest: a source's items become records, records are joined in the store, and it all gets counted.

A batch at a time: parse every item (agent/records.py), read what the store holds for the batch's
ids, then per record fold the segment, apply the join rules in memory (agent/store/batch.py), the
counts, the window means and the output hooks (the audit sampler); the rows are written at the end
with one statement per table. The caller holds the transaction, so a batch and its source offset commit together.
"""

from __future__ import annotations

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
        self._means: list[tuple[tuple[str, ...], float, float]] = []  # a batch's values, added once it is stored

    def parse(self, item: bytes | dict[str, Any]) -> Record | Rejection:
        return self.parser.parse_decoded(item) if isinstance(item, dict) else self.parser.parse_line(item)

    def store_items(self, source: str, items: Iterable[bytes | dict[str, Any] | Record | Rejection],
                    now: float, tally: Tally, result: IngestResult) -> None:
        """Parse (unless already parsed) and store each item, counting what happened to it.

        The whole batch is parsed first, so that what the store already holds for its ids is read
        with a few queries (:meth:`Store.join_batch`), the join is decided in memory record by
        record, and the new rows are written with one statement per table at the end."""
        parsed_items = [item if isinstance(item, Record | Rejection) else self.parse(item) for item in items]
        if not parsed_items:
            return
        tally.count("records_total", len(parsed_items), source=source)
        batch = self.store.join_batch([p.id for p in parsed_items if isinstance(p, Record)])
        expires_at = now + self.label_ttl
        latest: float | None = None
        self._means.clear()
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
        self.store.flush_batch(batch)
        self.means.add_many(self._means)
        self._means.clear()
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
                self._joined(tally, result)
                self._audit_means(label.segment, record.audits, now)
            return True
        joined = batch.output(record.id, ts, segment, record.proxies, record.audits, expires_at)
        if joined.duplicate:
            reject(tally, result, "duplicate")
            return False
        if joined.early_label:
            self._joined(tally, result)
        self._audit_means(joined.segment, joined.joined, now)
        if joined.output is not None:
            self._add_proxy_means(segment, record.proxies, now)
            if self.excerpt is not None:
                input_text, output_text = self.excerpt(record)
                if input_text is not None or output_text is not None:
                    self.store.put_excerpt(record.id, ts, input_text, output_text)
            for hook in self.output_hooks:
                hook(joined.output, record)
        return True

    @staticmethod
    def _joined(tally: Tally, result: IngestResult) -> None:
        tally.count("labels_joined_total")
        result.joined += 1

    def _add_proxy_means(self, segment: str | None, proxies: dict[str, float], now: float) -> None:
        means = self._means
        for name, value in proxies.items():
            means.append((("proxy", name, ALL), now, value))
            if segment is not None:
                means.append((("proxy", name, segment), now, value))

    def _audit_means(self, segment: str | None, audits: dict[str, float], now: float) -> None:
        means = self._means
        for name, value in audits.items():
            means.append((("audit", name, ALL), now, value))
            if segment is not None:
                means.append((("audit", name, segment), now, value))

    def add_audit_means(self, segment: str | None, audits: dict[str, float], now: float) -> None:
        """An audit joined outside a batch (a judge's or grader's score)."""
        for name, value in audits.items():
            self.means.add(("audit", name, ALL), now, value)
            if segment is not None:
                self.means.add(("audit", name, segment), now, value)


def reject(tally: Tally, result: IngestResult, reason: str) -> None:
    tally.count("records_rejected_total", reason=reason)
    result.rejected[reason] = result.rejected.get(reason, 0) + 1
