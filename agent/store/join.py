"""Outputs, early labels and audited outputs: the join of an output with its audit values, in one place.

An output waits for its labels until its time-to-live; a label that arrives first waits as an
*early label* and is joined the moment its output arrives. One output and one audit value make one
audited output per proxy (a row of ``pairs``); the first value for an (id, proxy, audit) wins, so a
re-delivered label is a duplicate. Ids of outputs that retention dropped are remembered in
``seen_ids`` so that a late re-delivery is still a duplicate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from agent.store.database import Database, OutputRow, PairRow


@dataclass
class KnownIds:
    """What the store held for a batch's ids before it, read with one query per table for the whole
    batch instead of one per record, and kept current as the batch is stored (it is only valid
    inside the batch's transaction): ids remembered after retention, ids with an early label, and
    the outputs the batch's labels name (``None``: no output)."""

    seen: set[str] = field(default_factory=set)
    early: set[str] = field(default_factory=set)
    outputs: dict[str, OutputRow | None] = field(default_factory=dict)


@dataclass(frozen=True)
class OutputJoin:
    """What storing one output did: ``output`` is set when it is new; ``joined`` are the audit values
    joined now (from the record itself or an early label); ``duplicate`` when it changed nothing."""

    output: OutputRow | None
    joined: dict[str, float] = field(default_factory=dict)
    segment: str | None = None
    early_label: bool = False
    duplicate: bool = False


@dataclass(frozen=True)
class LabelJoin:
    """What storing one label did: joined to its output (``segment`` is the output's), kept waiting
    for an output not seen yet, or a duplicate of values already joined."""

    joined: bool = False
    waiting: bool = False
    duplicate: bool = False
    segment: str | None = None


class JoinTables(Database):
    def known_ids(self, output_ids: list[str], label_ids: list[str]) -> KnownIds:
        """One query per table for a batch (see :class:`KnownIds`); call inside its transaction."""
        known = KnownIds()
        with self.lock:
            for start in range(0, len(output_ids), 500):
                chunk = output_ids[start:start + 500]
                marks = ",".join("?" * len(chunk))
                known.seen.update(r[0] for r in self.conn.execute(
                    f"SELECT id FROM seen_ids WHERE id IN ({marks})", chunk))
                known.early.update(r[0] for r in self.conn.execute(
                    f"SELECT id FROM early_labels WHERE id IN ({marks})", chunk))
            for start in range(0, len(label_ids), 500):
                chunk = label_ids[start:start + 500]
                known.outputs.update(dict.fromkeys(chunk))
                rows = self.conn.execute("SELECT seq, id, ts, segment, proxies FROM outputs"
                                         f" WHERE id IN ({','.join('?' * len(chunk))})", chunk)
                known.outputs.update((r[1], OutputRow(r[0], r[1], r[2], r[3], json.loads(r[4]))) for r in rows)
        return known

    def join_output(self, rid: str, ts: float, segment: str | None, proxies: dict[str, float],
                    audits: dict[str, float], expires_at: float, known_ids: KnownIds | None = None) -> OutputJoin:
        """Store an output with any audit values it or an early label carries.

        A re-delivered output only counts for audit values not joined before.
        """
        with self.transaction():
            output = self.insert_output(rid, ts, segment, proxies, expires_at,
                                        check_seen=known_ids is None or rid in known_ids.seen)
            if output is None:
                known = self.get_output(rid)
                if known is None or not audits or not self.insert_pairs(known, audits, 1.0):
                    return OutputJoin(None, duplicate=True)
                return OutputJoin(None, dict(audits), known.segment)
            if known_ids is not None:
                known_ids.outputs[rid] = output
            early = self.take_early_label(rid) if known_ids is None or rid in known_ids.early else None
            weight = 1.0
            if early is not None:
                audits, weight = {**early[0], **audits}, early[1]
            joined = dict(audits) if audits and self.insert_pairs(output, audits, weight) else {}
            return OutputJoin(output, joined, segment, early_label=early is not None)

    def join_label(self, rid: str, ts: float, audits: dict[str, float], weight: float,
                   expires_at: float, known_ids: KnownIds | None = None) -> LabelJoin:
        """Join a (late) label to its output, or keep it until the output arrives."""
        with self.transaction():
            output = self.get_output(rid) if known_ids is None or rid not in known_ids.outputs \
                else known_ids.outputs[rid]
            if output is None:
                self.put_early_label(rid, ts, audits, weight, expires_at)
                if known_ids is not None:
                    known_ids.early.add(rid)
                return LabelJoin(waiting=True)
            if not self.insert_pairs(output, audits, weight):
                return LabelJoin(duplicate=True)
            return LabelJoin(joined=True, segment=output.segment)

    # -- the rows -----------------------------------------------------------------------
    def insert_output(self, rid: str, ts: float, segment: str | None, proxies: dict[str, float],
                      expires_at: float, check_seen: bool = True) -> OutputRow | None:
        """Store an output; None when its id is already known (a re-delivery), even when its row has
        already been dropped by retention (see :meth:`expire`); ``check_seen=False`` when the caller
        knows the id is not among those (:meth:`known_ids`)."""
        with self.transaction() as conn:
            if check_seen and conn.execute("SELECT 1 FROM seen_ids WHERE id = ?", (rid,)).fetchone() is not None:
                return None
            cur = conn.execute(
                "INSERT OR IGNORE INTO outputs(id, ts, segment, proxies, expires_at) VALUES (?,?,?,?,?)",
                (rid, ts, segment, json.dumps(proxies, sort_keys=True), expires_at))
            if cur.rowcount == 0:
                return None
            seq = cur.lastrowid
        assert seq is not None
        return OutputRow(seq, rid, ts, segment, proxies)

    def get_output(self, rid: str) -> OutputRow | None:
        with self.lock:
            row = self.conn.execute(
                "SELECT seq, id, ts, segment, proxies FROM outputs WHERE id = ?", (rid,)).fetchone()
        return None if row is None else OutputRow(row[0], row[1], row[2], row[3], json.loads(row[4]))

    def put_early_label(self, rid: str, ts: float, audits: dict[str, float], weight: float,
                        expires_at: float) -> None:
        """Keep a label whose output has not arrived yet; later labels add to earlier ones."""
        with self.transaction() as conn:
            row = conn.execute("SELECT audits FROM early_labels WHERE id = ?", (rid,)).fetchone()
            merged = {**json.loads(row[0]), **audits} if row else dict(audits)
            conn.execute(
                "INSERT OR REPLACE INTO early_labels(id, ts, audits, weight, expires_at) VALUES (?,?,?,?,?)",
                (rid, ts, json.dumps(merged, sort_keys=True), weight, expires_at))

    def take_early_label(self, rid: str) -> tuple[dict[str, float], float] | None:
        with self.transaction() as conn:
            row = conn.execute("SELECT audits, weight FROM early_labels WHERE id = ?", (rid,)).fetchone()
            if row is None:
                return None
            conn.execute("DELETE FROM early_labels WHERE id = ?", (rid,))
        return json.loads(row[0]), float(row[1])

    def insert_pairs(self, output: OutputRow, audits: dict[str, float], weight: float) -> int:
        """Join an output with audit values: one pair per (proxy, audit); first label wins."""
        rows = [(output.id, proxy, audit, output.segment, output.ts, pv, av, weight)
                for audit, av in sorted(audits.items()) for proxy, pv in sorted(output.proxies.items())]
        if not rows:
            return 0
        with self.transaction() as conn:
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO pairs(id, proxy, audit, segment, ts, proxy_value, audit_value, weight)"
                " VALUES (?,?,?,?,?,?,?,?)", rows)
            inserted = conn.total_changes - before
            if inserted:
                conn.execute("UPDATE outputs SET labelled = 1 WHERE id = ?", (output.id,))
        return inserted

    # -- reading for the detectors and the exporter -------------------------------------------------------------------
    def outputs_since(self, seq: int, limit: int = 50_000) -> list[OutputRow]:
        with self.lock:
            rows = self.conn.execute(
                "SELECT seq, id, ts, segment, proxies FROM outputs WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, limit)).fetchall()
        return [OutputRow(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]

    def pairs_since(self, seq: int, limit: int = 50_000) -> list[PairRow]:
        with self.lock:
            rows = self.conn.execute(
                "SELECT seq, proxy, audit, segment, ts, proxy_value, audit_value, weight FROM pairs"
                " WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)).fetchall()
        return [PairRow(*r) for r in rows]

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
