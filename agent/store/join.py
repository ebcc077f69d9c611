"""Outputs, early labels and audited outputs: the join of an output with its audit values, in one place.

An output waits for its labels until its time-to-live; a label that arrives first waits as an
*early label* and is joined the moment its output arrives. One output and one audit value make one
audited output per proxy (a row of ``pairs``); the first value for an (id, proxy, audit) wins, so a
re-delivered label is a duplicate. Ids of outputs that retention dropped are remembered in
``seen_ids`` so that a late re-delivery is still a duplicate.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from agent.store.batch import JoinBatch, LabelJoin, OutputJoin
from agent.store.database import Database, OutputRow, PairRow
from agent.store.feed import FeedLog

__all__ = ["JoinBatch", "JoinTables", "LabelJoin", "OutputJoin"]


class JoinTables(Database):
    _feed_logs: tuple[FeedLog[OutputRow], FeedLog[PairRow]] | None = None

    @property
    def feed_logs(self) -> tuple[FeedLog[OutputRow], FeedLog[PairRow]]:
        """The outputs and audited outputs just stored, for the detect step (agent/store/feed.py)."""
        if self._feed_logs is None:
            self._feed_logs = (FeedLog(), FeedLog())
        return self._feed_logs

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """As :meth:`Database.transaction`; a failure also drops the feed logs, which may hold rows
        it rolls back."""
        try:
            with super().transaction() as conn:
                yield conn
        except BaseException:
            for feed in self.feed_logs:
                feed.clear()
            raise

    def join_batch(self, ids: Iterable[str]) -> JoinBatch:
        """What the store holds for a batch's ids, read with a few queries; call inside the batch's
        transaction, store its records through the returned batch in order, then :meth:`flush_batch`."""
        with self.lock:
            return JoinBatch(self.conn, ids)

    def flush_batch(self, batch: JoinBatch) -> None:
        """Write a batch's rows, and keep them for the detect step."""
        with self.transaction():
            batch.flush()
            outputs, pairs = self.feed_logs
            outputs.extend(batch.first_output - 1, batch.new_outputs)
            pairs.extend(batch.first_pair - 1, batch.new_pairs)

    def release_feed(self, outputs_seq: int, pairs_seq: int) -> None:
        """The detectors have read up to these sequence numbers: the feed logs let go of those rows."""
        with self.lock:
            outputs, pairs = self.feed_logs
            outputs.release(outputs_seq)
            pairs.release(pairs_seq)

    # -- one record at a time (a batch of one) -------------------------------------------------------------
    def join_output(self, rid: str, ts: float, segment: str | None, proxies: dict[str, float],
                    audits: dict[str, float], expires_at: float) -> OutputJoin:
        """Store an output with any audit values it or an early label carries.

        A re-delivered output only counts for audit values not joined before.
        """
        with self.transaction():
            batch = self.join_batch([rid])
            joined = batch.output(rid, ts, segment, proxies, audits, expires_at)
            self.flush_batch(batch)
        return joined

    def join_label(self, rid: str, ts: float, audits: dict[str, float], weight: float,
                   expires_at: float) -> LabelJoin:
        """Join a (late) label to its output, or keep it until the output arrives."""
        with self.transaction():
            batch = self.join_batch([rid])
            joined = batch.label(rid, ts, audits, weight, expires_at)
            self.flush_batch(batch)
        return joined

    def insert_output(self, rid: str, ts: float, segment: str | None, proxies: dict[str, float],
                      expires_at: float) -> OutputRow | None:
        """Store an output; None when its id is already known (a re-delivery), even when its row has
        already been dropped by retention (see :meth:`expire`). Early labels are left alone."""
        with self.transaction():
            batch = self.join_batch([rid])
            batch.early.clear()
            output = batch.output(rid, ts, segment, proxies, {}, expires_at).output
            self.flush_batch(batch)
        return output

    def insert_pairs(self, output: OutputRow, audits: dict[str, float], weight: float) -> int:
        """Join an output with audit values: one pair per (proxy, audit); first label wins."""
        with self.transaction():
            batch = self.join_batch([output.id])
            inserted = batch.pairs(output, audits, weight)
            self.flush_batch(batch)
        return inserted

    def get_output(self, rid: str) -> OutputRow | None:
        with self.lock:
            row = self.conn.execute(
                "SELECT seq, id, ts, segment, proxies FROM outputs WHERE id = ?", (rid,)).fetchone()
        return None if row is None else OutputRow(row[0], row[1], row[2], row[3], json.loads(row[4]))

    def put_early_label(self, rid: str, ts: float, audits: dict[str, float], weight: float,
                        expires_at: float) -> None:
        """Keep a label whose output has not arrived yet; later labels add to earlier ones."""
        with self.transaction():
            batch = self.join_batch([rid])
            batch.outputs.clear()
            batch.label(rid, ts, audits, weight, expires_at)
            self.flush_batch(batch)

    def take_early_label(self, rid: str) -> tuple[dict[str, float], float] | None:
        with self.transaction() as conn:
            row = conn.execute("SELECT audits, weight FROM early_labels WHERE id = ?", (rid,)).fetchone()
            if row is None:
                return None
            conn.execute("DELETE FROM early_labels WHERE id = ?", (rid,))
        return json.loads(row[0]), float(row[1])

    # -- reading for the detectors and the exporter -------------------------------------------------------------------
    def outputs_since(self, seq: int, limit: int = 50_000) -> list[OutputRow]:
        """Outputs after ``seq``, in order: those just stored from memory, others from SQLite."""
        with self.lock:
            held = self._held(0, seq, limit)
            if held is not None:
                return held  # type: ignore[return-value]
            rows = self.conn.execute(
                "SELECT seq, id, ts, segment, proxies FROM outputs WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, limit)).fetchall()
        return [OutputRow(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]

    def pairs_since(self, seq: int, limit: int = 50_000) -> list[PairRow]:
        """Audited outputs after ``seq``, in order: those just stored from memory, others from SQLite."""
        with self.lock:
            held = self._held(1, seq, limit)
            if held is not None:
                return held  # type: ignore[return-value]
            rows = self.conn.execute(
                "SELECT seq, proxy, audit, segment, ts, proxy_value, audit_value, weight FROM pairs"
                " WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)).fetchall()
        return [PairRow(*r) for r in rows]

    def _held(self, table: int, seq: int, limit: int) -> list[OutputRow] | list[PairRow] | None:
        """The feed log's rows after ``seq``; None when SQLite must answer: the log does not reach
        back to ``seq``, or ``seq`` is behind the checkpointed cursor (retention may have dropped
        rows there that the log still holds)."""
        feed = self.feed_logs[table]
        if feed.base is None or seq < feed.base:
            return None
        row = self.conn.execute("SELECT value FROM cursors WHERE name = ?",
                                (("detect.outputs", "detect.pairs")[table],)).fetchone()
        if row is not None and seq < row[0]:
            return None
        return feed.since(seq, limit)

    def recent_pairs(self, proxy: str, audit: str, segment: str | None, limit: int) -> list[tuple[int, float, float]]:
        """The newest ``limit`` pairs of one (proxy, audit, segment) as (seq, proxy value, audit value),
        newest first; ``segment=None`` means the pairs without a segment. Served by the pairs_key index."""
        with self.lock:
            rows = self.conn.execute(
                "SELECT seq, proxy_value, audit_value FROM pairs WHERE proxy = ? AND audit = ? AND segment IS ?"
                " ORDER BY seq DESC LIMIT ?", (proxy, audit, segment, limit)).fetchall()
        return [(int(r[0]), float(r[1]), float(r[2])) for r in rows]

    def max_seq(self, table: str) -> int:
        if table not in ("outputs", "pairs"):
            raise ValueError(table)
        with self.lock:
            row = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
        return int(row[0]) if row else 0

    def pair_counts(self) -> dict[tuple[str, str, str], int]:
        """Audited pairs held per (proxy, audit, segment), with segment ``*`` for all."""
        with self.lock:
            per_segment = self.conn.execute(
                "SELECT proxy, audit, segment, count(*) FROM pairs GROUP BY proxy, audit, segment").fetchall()
        counts: dict[tuple[str, str, str], int] = {}
        for proxy, audit, segment, n in per_segment:
            counts[(proxy, audit, "*")] = counts.get((proxy, audit, "*"), 0) + n
            if segment is not None:
                counts[(proxy, audit, segment)] = n
        return counts

    def pending_counts(self) -> tuple[int, int]:
        """(outputs still waiting for a label, labels still waiting for their output)."""
        with self.lock:
            outputs = self.conn.execute("SELECT count(*) FROM outputs WHERE labelled = 0").fetchone()[0]
            labels = self.conn.execute("SELECT count(*) FROM early_labels").fetchone()[0]
        return int(outputs), int(labels)
