"""Persistent counters and the alarm event log."""

from __future__ import annotations

import json
from typing import Any

from agent.store.database import Database


class LogTables(Database):
    # -- counters and events ----------------------------------------------------------------------------
    def incr(self, name: str, labels: tuple[tuple[str, str], ...] = (), by: float = 1.0) -> None:
        key = json.dumps(dict(labels), sort_keys=True)
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO counters(name, labels, value) VALUES (?, ?, ?)"
                " ON CONFLICT(name, labels) DO UPDATE SET value = value + excluded.value", (name, key, by))

    def counters(self) -> list[tuple[str, dict[str, str], float]]:
        with self.lock:
            rows = self.conn.execute("SELECT name, labels, value FROM counters ORDER BY name, labels").fetchall()
        return [(n, json.loads(labels), float(v)) for n, labels, v in rows]

    def counter(self, name: str, **labels: str) -> float:
        key = json.dumps(labels, sort_keys=True)
        with self.lock:
            row = self.conn.execute(
                "SELECT value FROM counters WHERE name = ? AND labels = ?", (name, key)).fetchone()
        return float(row[0]) if row else 0.0

    def append_event(self, ts: float, body: dict[str, Any]) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT INTO events(ts, body) VALUES (?, ?)", (ts, json.dumps(body, sort_keys=True)))

    def recent_events(self, limit: int = 100) -> list[dict[str, Any]]:
        with self.lock:
            rows = self.conn.execute("SELECT body FROM events ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()
        return [json.loads(r[0]) for r in reversed(rows)]
