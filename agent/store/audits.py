"""The audit tables' SQL: the durable queue of judge and grader work, and the audit budgets' levels.

The queue holds one row per (output id, audit) picked for a judge or grader. A row is ``pending``
until a request succeeds (``obtained``: the score is stored), then ``done`` once the score is
joined to its output as an audited pair; or ``failed`` (permanently, expired, or out of attempts).
The score is written the moment it arrives and joined in a second transaction, so a crash or a
failing join can never lose a score that was paid for: rows ``obtained`` but not ``done`` are
joined at the next step, never requested again. An attempt is counted, and the row's next attempt
pushed back, *before* the request is sent, so a crash mid-request cannot retry a poison row in a
tight loop. The row also keeps what the join and the prompt need (the output's proxies and the
record itself), so neither depends on other tables still holding the output.

The budget rows keep each token bucket's level, so a restart does not refill the budget; the
bucket maths live in ``agent/audit/budget.py``. Both tables come from migration 2.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.store.database import Database, OutputRow

PENDING, OBTAINED, DONE, FAILED = "pending", "obtained", "done", "failed"
_COLUMNS = "id, audit, attempts, weight, output, body, result"

#: a budget's stored levels: window name → (tokens, updated_at)
BudgetLevels = dict[str, tuple[float, float]]


@dataclass(frozen=True)
class QueueItem:
    id: str
    audit: str
    attempts: int
    weight: float
    output: OutputRow
    body: dict[str, Any]
    result: float | None


def _item(row: tuple[Any, ...]) -> QueueItem:
    rid, audit, attempts, weight, output, body, result = row
    out = json.loads(output)
    return QueueItem(rid, audit, int(attempts), float(weight),
                     OutputRow(int(out["seq"]), rid, float(out["ts"]), out["segment"], out["proxies"]),
                     json.loads(body) if body else {}, None if result is None else float(result))


class AuditQueue:
    """The ``audit_queue`` table; each write is its own transaction, or joins the caller's."""

    def __init__(self, store: Database) -> None:
        self.store = store

    def enqueue(self, audit: str, output: OutputRow, body: dict[str, Any], weight: float, now: float,
                expires_at: float) -> bool:
        """Add a pending row; False when this (id, audit) was queued before."""
        out = json.dumps({"seq": output.seq, "ts": output.ts, "segment": output.segment, "proxies": output.proxies},
                         sort_keys=True)
        with self.store.transaction() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO audit_queue(id, audit, status, enqueued_at, next_attempt_at, expires_at,"
                " weight, output, body) VALUES (?,?,?,?,?,?,?,?,?)",
                (output.id, audit, PENDING, now, now, expires_at, weight, out, json.dumps(body)))
        return cur.rowcount > 0

    def claim_due(self, audit: str, now: float, limit: int, lease: Callable[[int], float]) -> list[QueueItem]:
        """Up to ``limit`` due rows, each with its attempt counted and its next try ``lease(attempts)`` away."""
        with self.store.transaction() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM audit_queue WHERE audit = ? AND status = ? AND next_attempt_at <= ?"
                " AND expires_at > ? ORDER BY next_attempt_at, enqueued_at LIMIT ?",
                (audit, PENDING, now, now, limit)).fetchall()
            items = [_item((r[0], r[1], r[2] + 1, *r[3:])) for r in rows]
            conn.executemany("UPDATE audit_queue SET attempts = ?, next_attempt_at = ? WHERE id = ? AND audit = ?",
                             [(i.attempts, now + lease(i.attempts), i.id, audit) for i in items])
        return items

    def store_result(self, rid: str, audit: str, value: float) -> None:
        with self.store.transaction() as conn:
            conn.execute("UPDATE audit_queue SET status = ?, result = ?, error = NULL WHERE id = ? AND audit = ?",
                         (OBTAINED, value, rid, audit))

    def mark_joined(self, rid: str, audit: str, now: float) -> None:
        with self.store.transaction() as conn:
            conn.execute("UPDATE audit_queue SET status = ?, finished_at = ?, body = '' WHERE id = ? AND audit = ?",
                         (DONE, now, rid, audit))

    def retry_at(self, rid: str, audit: str, when: float, reason: str) -> None:
        with self.store.transaction() as conn:
            conn.execute("UPDATE audit_queue SET next_attempt_at = ?, error = ? WHERE id = ? AND audit = ?",
                         (when, reason, rid, audit))

    def fail(self, rid: str, audit: str, reason: str, now: float) -> None:
        with self.store.transaction() as conn:
            conn.execute("UPDATE audit_queue SET status = ?, error = ?, finished_at = ?, body = ''"
                         " WHERE id = ? AND audit = ?", (FAILED, reason, now, rid, audit))

    def obtained(self, limit: int = 1000) -> list[QueueItem]:
        """Rows whose score is stored but not yet joined (after a crash or a failed join)."""
        with self.store.lock:
            rows = self.store.conn.execute(
                f"SELECT {_COLUMNS} FROM audit_queue WHERE status = ? LIMIT ?", (OBTAINED, limit)).fetchall()
        return [_item(r) for r in rows]

    def expire(self, now: float) -> dict[str, int]:
        """Fail pending rows past their deadline; returns how many, by audit."""
        with self.store.transaction() as conn:
            counts = dict(conn.execute(
                "SELECT audit, count(*) FROM audit_queue WHERE status = ? AND expires_at <= ? GROUP BY audit",
                (PENDING, now)).fetchall())
            if counts:
                conn.execute("UPDATE audit_queue SET status = ?, error = 'expired', finished_at = ?, body = ''"
                             " WHERE status = ? AND expires_at <= ?", (FAILED, now, PENDING, now))
        return {str(k): int(v) for k, v in counts.items()}

    def depth(self) -> dict[str, int]:
        """Rows not finished yet (pending or obtained), by audit."""
        with self.store.lock:
            rows = self.store.conn.execute(
                "SELECT audit, count(*) FROM audit_queue WHERE status IN (?, ?) GROUP BY audit",
                (PENDING, OBTAINED)).fetchall()
        return {str(k): int(v) for k, v in rows}

    def purge(self, finished_before: float) -> int:
        """Forget finished rows; they are kept a while so a re-delivered output is not audited twice."""
        with self.store.transaction() as conn:
            return int(conn.execute("DELETE FROM audit_queue WHERE status IN (?, ?) AND finished_at < ?",
                                    (DONE, FAILED, finished_before)).rowcount)

    def status(self, rid: str, audit: str) -> tuple[str, int, float | None] | None:
        """(status, attempts, result) of one row, for tests and debugging."""
        with self.store.lock:
            row = self.store.conn.execute("SELECT status, attempts, result FROM audit_queue WHERE id = ? AND audit = ?",
                                          (rid, audit)).fetchone()
        return None if row is None else (str(row[0]), int(row[1]), row[2])


def load_budget(store: Database, audit: str) -> BudgetLevels:
    """The stored bucket levels of one audit (empty before its first save)."""
    with store.lock:
        rows = store.conn.execute(
            "SELECT span, tokens, updated_at FROM audit_budget WHERE audit = ?", (audit,)).fetchall()
    return {str(span): (float(tokens), float(updated_at)) for span, tokens, updated_at in rows}


def save_budget(store: Database, audit: str, levels: BudgetLevels) -> None:
    """Store the bucket levels of one audit; joins the caller's transaction (the enqueue it paid for)."""
    if levels:
        with store.transaction() as conn:
            conn.executemany("INSERT OR REPLACE INTO audit_budget(audit, span, tokens, updated_at)"
                             " VALUES (?, ?, ?, ?)",
                             [(audit, span, tokens, updated_at) for span, (tokens, updated_at) in levels.items()])
