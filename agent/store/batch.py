"""The join of a whole batch at once: read what the store holds for its ids, decide in memory, write once.

:class:`JoinBatch` applies the join rules of agent/store/join.py record by record, in order, to
sets read with a few queries for the whole batch (ids remembered after retention, outputs, early
labels, audited outputs already joined); :meth:`JoinBatch.flush` then writes the new rows with one
multi-row statement per table. Sequence numbers are given here, as SQLite's AUTOINCREMENT would
have given them (the next after the largest ever used), so a row's number is known before it is
written and the rows can go straight to the detect step's :class:`~agent.store.feed.FeedLog`.
Only valid inside one transaction, which the caller holds from the reads to the flush.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import NamedTuple

from agent.store.database import OutputRow, PairRow

#: ids per ``IN (...)`` query, well under SQLite's variable limit (a power of two, see :func:`_chunks`)
CHUNK = 512
#: rows per multi-row ``INSERT``: one statement for many rows costs far less than one per row
#: (``executemany`` binds and steps a statement per row); 100 rows of 9 values stay under every
#: SQLite's variable limit
ROWS_PER_INSERT = 100


@dataclass
class EarlyLabel:
    audits: dict[str, float]
    weight: float
    ts: float
    expires_at: float


class OutputJoin(NamedTuple):
    """What storing one output did: ``output`` is set when it is new; ``joined`` are the audit values
    joined now (from the record itself or an early label); ``duplicate`` when it changed nothing.
    (One per record: a named tuple costs a fraction of a dataclass to make.)"""

    output: OutputRow | None
    joined: dict[str, float]
    segment: str | None = None
    early_label: bool = False
    duplicate: bool = False


class LabelJoin(NamedTuple):
    """What storing one label did: joined to its output (``segment`` is the output's), kept waiting
    for an output not seen yet, or a duplicate of values already joined."""

    joined: bool = False
    waiting: bool = False
    duplicate: bool = False
    segment: str | None = None


#: a ``%`` template per tuple of sorted names: ``{"a": %r, "b": %r}``
_TEMPLATES: dict[tuple[str, ...], str] = {}


def encode_sorted(values: dict[str, float]) -> str:
    """``json.dumps(values, sort_keys=True)`` of a dict whose names are already in order, byte for
    byte, without the encoder's per-call cost: a template per set of names, filled with the values'
    ``repr`` (what json writes for a finite float)."""
    names = tuple(values)
    template = _TEMPLATES.get(names)
    if template is None:
        if len(_TEMPLATES) > 1000:  # names are configured; a bound all the same
            _TEMPLATES.clear()
        template = _TEMPLATES[names] = "{" + ", ".join(
            json.dumps(name).replace("%", "%%") + ": %r" for name in names) + "}"
    numbers = tuple(values.values())
    for value in numbers:
        if type(value) is not float or not math.isfinite(value):
            return json.dumps(values, sort_keys=True)
    return template % numbers


def _chunks(ids: list[str]) -> Iterable[tuple[list[str], str]]:
    """The ids in chunks of at most :data:`CHUNK`, each padded to a power of two by repeating its
    last id (``IN`` answers the same): a few SQL texts only, so every query stays prepared in the
    connection's statement cache, where one text per batch size (replay's batches are cut at each
    detect step) pushed them out."""
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start:start + CHUNK]
        size = 1 << (len(chunk) - 1).bit_length()
        chunk += chunk[-1:] * (size - len(chunk))
        yield chunk, ",".join("?" * size)


def insert_rows(conn: sqlite3.Connection, head: str, width: int, rows: Sequence[Sequence[object]]) -> None:
    """``{head} VALUES (?, ...)`` for every row, in order, :data:`ROWS_PER_INSERT` rows a statement;
    the rows short of a whole statement one by one (two SQL texts only, each prepared once)."""
    one = "(" + ",".join("?" * width) + ")"
    whole = len(rows) - len(rows) % ROWS_PER_INSERT
    if whole:
        conn.executemany(f"{head} VALUES {','.join([one] * ROWS_PER_INSERT)}",
                         [list(chain.from_iterable(rows[start:start + ROWS_PER_INSERT]))
                          for start in range(0, whole, ROWS_PER_INSERT)])
    if whole < len(rows):
        conn.executemany(f"{head} VALUES {one}", rows[whole:])


def next_seqs(conn: sqlite3.Connection) -> tuple[int, int]:
    """The numbers AUTOINCREMENT would give the next output and the next audited output (one more
    than the largest ever used: ``sqlite_sequence``, or the largest row should it lag)."""
    row = conn.execute(
        "SELECT (SELECT seq FROM sqlite_sequence WHERE name = 'outputs'), (SELECT max(seq) FROM outputs),"
        " (SELECT seq FROM sqlite_sequence WHERE name = 'pairs'), (SELECT max(seq) FROM pairs)").fetchone()
    return max(row[0] or 0, row[1] or 0) + 1, max(row[2] or 0, row[3] or 0) + 1


class JoinBatch:
    """The join rules over one batch's ids, decided in memory and written by :meth:`flush`."""

    def __init__(self, conn: sqlite3.Connection, ids: Iterable[str]) -> None:
        self.conn = conn
        self.seen: set[str] = set()
        self.outputs: dict[str, OutputRow] = {}
        self.early: dict[str, EarlyLabel] = {}
        self.pair_keys: set[tuple[str, str, str]] = set()
        self._read(list(dict.fromkeys(ids)))
        self.first_output, self.first_pair = self._next_output, self._next_pair = next_seqs(conn)
        self.new_outputs: list[OutputRow] = []
        self._output_rows: list[list[object]] = []
        self._new_index: dict[str, int] = {}
        self.new_pairs: list[PairRow] = []
        self._pair_rows: list[tuple[object, ...]] = []
        self._labelled: set[str] = set()
        self._early_changed: set[str] = set()

    def _read(self, ids: list[str]) -> None:
        execute = self.conn.execute
        for chunk, marks in _chunks(ids):
            self.seen.update(r[0] for r in execute(f"SELECT id FROM seen_ids WHERE id IN ({marks})", chunk))
            for seq, rid, ts, segment, proxies in execute(
                    f"SELECT seq, id, ts, segment, proxies FROM outputs WHERE id IN ({marks})", chunk):
                self.outputs[rid] = OutputRow(seq, rid, ts, segment, json.loads(proxies))
            for rid, ts, audits, weight, expires_at in execute(
                    f"SELECT id, ts, audits, weight, expires_at FROM early_labels WHERE id IN ({marks})", chunk):
                self.early[rid] = EarlyLabel(json.loads(audits), float(weight), ts, expires_at)
            self.pair_keys.update(execute(f"SELECT id, proxy, audit FROM pairs WHERE id IN ({marks})", chunk))

    # -- the join rules, one record at a time ----------------------------------------------------------
    def output(self, rid: str, ts: float, segment: str | None, proxies: dict[str, float],
               audits: dict[str, float], expires_at: float) -> OutputJoin:
        """An output with any audit values it or an early label carries; a re-delivered output
        (its id stored or remembered) only counts for audit values not joined before."""
        if rid in self.seen or rid in self.outputs:
            known = self.outputs.get(rid)
            if known is None or not audits or not self.pairs(known, audits, 1.0):
                return OutputJoin(None, {}, duplicate=True)
            return OutputJoin(None, dict(audits), known.segment)
        seq = self._next_output
        self._next_output += 1
        # as the detect step would read it back: numbers as stored, names in order
        ordered = dict(sorted(proxies.items()))
        output = self.outputs[rid] = OutputRow(seq, rid, float(ts), segment, ordered)
        self._new_index[rid] = len(self._output_rows)
        self.new_outputs.append(output)
        self._output_rows.append([seq, rid, ts, segment, encode_sorted(ordered), 0, expires_at])
        early = self.early.pop(rid, None)
        weight = 1.0
        if early is not None:
            self._early_changed.add(rid)
            audits, weight = {**early.audits, **audits}, early.weight
        joined = dict(audits) if audits and self.pairs(output, audits, weight) else {}
        return OutputJoin(output, joined, segment, early_label=early is not None)

    def label(self, rid: str, ts: float, audits: dict[str, float], weight: float, expires_at: float) -> LabelJoin:
        """A (late) label joined to its output, or kept until the output arrives (adding to an earlier one)."""
        output = self.outputs.get(rid)
        if output is None:
            before = self.early.get(rid)
            merged = {**before.audits, **audits} if before is not None else dict(audits)
            self.early[rid] = EarlyLabel(merged, weight, ts, expires_at)
            self._early_changed.add(rid)
            return LabelJoin(waiting=True)
        if not self.pairs(output, audits, weight):
            return LabelJoin(duplicate=True)
        return LabelJoin(joined=True, segment=output.segment)

    def pairs(self, output: OutputRow, audits: dict[str, float], weight: float) -> int:
        """Join an output with audit values: one pair per (proxy, audit); the first value wins."""
        keys = self.pair_keys
        inserted = 0
        rid, segment, ts, weight_ = output.id, output.segment, float(output.ts), float(weight)
        for audit, audit_value in sorted(audits.items()):
            for proxy, proxy_value in sorted(output.proxies.items()):
                key = (rid, proxy, audit)
                if key in keys:
                    continue
                keys.add(key)
                seq = self._next_pair
                self.new_pairs.append(PairRow(seq, proxy, audit, segment, ts, float(proxy_value),
                                              float(audit_value), weight_))
                self._pair_rows.append((seq, rid, proxy, audit, segment, output.ts, proxy_value, audit_value,
                                        weight))
                self._next_pair = seq + 1
                inserted += 1
        if inserted:
            index = self._new_index.get(output.id)
            if index is None:
                self._labelled.add(output.id)
            else:
                self._output_rows[index][5] = 1
        return inserted

    # -- writing ----------------------------------------------------------------------------------------
    def flush(self) -> None:
        """Write what the batch decided, one statement per table (the caller's transaction commits it)."""
        conn = self.conn
        if self._output_rows:
            insert_rows(conn, "INSERT INTO outputs(seq, id, ts, segment, proxies, labelled, expires_at)", 7,
                        self._output_rows)
        if self._labelled:
            conn.executemany("UPDATE outputs SET labelled = 1 WHERE id = ?", [(i,) for i in sorted(self._labelled)])
        if self.new_pairs:
            insert_rows(conn, "INSERT INTO pairs(seq, id, proxy, audit, segment, ts, proxy_value, audit_value,"
                        " weight)", 9, self._pair_rows)
        waiting = [rid for rid in sorted(self._early_changed) if rid in self.early]
        gone = [(rid,) for rid in sorted(self._early_changed) if rid not in self.early]
        if waiting:
            conn.executemany(
                "INSERT OR REPLACE INTO early_labels(id, ts, audits, weight, expires_at) VALUES (?,?,?,?,?)",
                [(rid, e.ts, json.dumps(e.audits, sort_keys=True), e.weight, e.expires_at)
                 for rid in waiting for e in (self.early[rid],)])
        if gone:
            conn.executemany("DELETE FROM early_labels WHERE id = ?", gone)
