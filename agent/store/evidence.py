"""Why a pair alarmed: the audited outputs behind an excursion, text excerpts, and verdict history.

Evidence is computed on demand from the ``pairs`` table and the detector's reference line (so it
survives restarts and needs no state of its own); the residual is computed here, in SQL, so that an
excursion of any length costs one bounded query. ``excerpts`` keeps short input/output text of
outputs when ``evidence.keep_text`` is on; ``verdicts`` a bounded history of each pair's verdicts,
which the report plots.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from agent.core import ALL
from agent.store.database import Database, newest_beyond, span_fits

_BIG = 1e308  # an unbounded reference line: SQLite's min/max take no infinities from Python reliably


@dataclass(frozen=True)
class EvidenceRow:
    """One audited output of a pair, with what the reference predicted for its proxy value."""

    id: str
    ts: float
    segment: str | None
    proxy_value: float  # as recorded (not oriented)
    audit_value: float
    weight: float
    predicted: float

    @property
    def residual(self) -> float:
        """Audit minus prediction: negative when the audit fell short of the proxy's promise."""
        return self.audit_value - self.predicted


@dataclass(frozen=True)
class Line:
    """A reference line in SQL's terms: predicted = clip(intercept + slope * direction * proxy)."""

    intercept: float
    slope: float
    direction: float
    lower: float
    upper: float


@dataclass(frozen=True)
class VerdictRow:
    ts: float
    state: str
    body: dict[str, Any]


def _segment_clause(segment: str) -> tuple[str, tuple[str, ...]]:
    return ("", ()) if segment == ALL else (" AND segment = ?", (segment,))


class EvidenceTables(Database):
    # -- audited outputs of one pair ------------------------------------------------------------------
    def adverse_pairs(self, proxy: str, audit: str, segment: str, since: float, line: Line,
                      limit: int) -> list[EvidenceRow]:
        """The ``limit`` audited outputs of a pair from ``since`` on, most adverse residual first."""
        where, args = _segment_clause(segment)
        lo = max(line.lower, -_BIG)
        hi = min(line.upper, _BIG)
        with self.lock:
            rows = self.conn.execute(
                "SELECT id, ts, segment, proxy_value, audit_value, weight,"
                " max(?, min(?, ? + ? * ? * proxy_value)) AS predicted FROM pairs"
                f" WHERE proxy = ? AND audit = ?{where} AND ts >= ?"
                " ORDER BY audit_value - predicted, ts, id LIMIT ?",
                (lo, hi, line.intercept, line.slope, line.direction, proxy, audit, *args, since, limit)).fetchall()
        return [EvidenceRow(r[0], float(r[1]), r[2], float(r[3]), float(r[4]), float(r[5]), float(r[6]))
                for r in rows]

    def pair_values(self, proxy: str, audit: str, segment: str, since: float, limit: int,
                    newest: bool = False) -> list[tuple[float, float, float, float]]:
        """(ts, proxy value, audit value, weight) of a pair's audited outputs from ``since`` on, in the
        order the detectors read them; the first ``limit`` of them, or the last when ``newest``."""
        where, args = _segment_clause(segment)
        order = "DESC" if newest else "ASC"
        with self.lock:
            rows = self.conn.execute(
                "SELECT ts, proxy_value, audit_value, weight FROM pairs"
                f" WHERE proxy = ? AND audit = ?{where} AND ts >= ? ORDER BY seq {order} LIMIT ?",
                (proxy, audit, *args, since, limit)).fetchall()
        values = [(float(r[0]), float(r[1]), float(r[2]), float(r[3])) for r in rows]
        return values[::-1] if newest else values

    def latest_ts(self) -> float | None:
        """The newest output or audited output time in the store: "now" for a store read after the fact."""
        with self.lock:
            row = self.conn.execute(
                "SELECT max(coalesce((SELECT max(ts) FROM outputs), 0), coalesce((SELECT max(ts) FROM pairs), 0))"
            ).fetchone()
        return float(row[0]) if row and row[0] else None

    # -- excerpts ---------------------------------------------------------------------------------------
    def put_excerpt(self, rid: str, ts: float, input_text: str | None, output_text: str | None) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO excerpts(id, ts, input, output) VALUES (?,?,?,?)",
                         (rid, ts, input_text, output_text))

    def excerpts(self, ids: list[str]) -> dict[str, tuple[str | None, str | None]]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        with self.lock:
            rows = self.conn.execute(f"SELECT id, input, output FROM excerpts WHERE id IN ({marks})", ids).fetchall()
        return {r[0]: (r[1], r[2]) for r in rows}

    # -- verdict history ----------------------------------------------------------------------------------
    def append_verdicts(self, rows: list[tuple[str, str, str, float, str, dict[str, Any]]]) -> None:
        """(proxy, audit, segment, ts, state, body) rows, in one transaction with the detect step."""
        if not rows:
            return
        with self.transaction() as conn:
            conn.executemany("INSERT INTO verdicts(proxy, audit, segment, ts, state, body) VALUES (?,?,?,?,?,?)",
                             [(p, a, s, ts, st, json.dumps(body, sort_keys=True)) for p, a, s, ts, st, body in rows])

    def verdict_history(self, proxy: str, audit: str, segment: str, limit: int) -> list[VerdictRow]:
        """The newest ``limit`` recorded verdicts of a pair, oldest first."""
        with self.lock:
            rows = self.conn.execute(
                "SELECT ts, state, body FROM verdicts WHERE proxy = ? AND audit = ? AND segment = ?"
                " ORDER BY seq DESC LIMIT ?", (proxy, audit, segment, limit)).fetchall()
        return [VerdictRow(float(r[0]), r[1], json.loads(r[2])) for r in reversed(rows)]

    def expire_evidence(self, min_ts: float, max_excerpts: int, max_verdicts: int) -> None:
        """Excerpts and verdicts older than the audited outputs kept, and beyond their bounds, go."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM excerpts WHERE ts < ?", (min_ts,))
            if not span_fits(conn, "excerpts", max_excerpts):  # else it walks every excerpt
                conn.execute("DELETE FROM excerpts WHERE id IN"
                             " (SELECT id FROM excerpts ORDER BY ts DESC LIMIT -1 OFFSET ?)", (max_excerpts,))
            conn.execute("DELETE FROM verdicts WHERE ts < ?", (min_ts,))
            cut = newest_beyond(conn, "verdicts", max_verdicts)
            if cut is not None:
                conn.execute("DELETE FROM verdicts WHERE seq <= ?", (cut,))
