"""Small key/value tables: source offsets, detector cursors, known segments.

Words: a source's *offset* is where it stopped reading (a file position, a pull cursor); a
detector *cursor* is the last output and audited-output sequence number the detectors have seen;
a *checkpoint* saves the detectors (agent/store/detectors.py) together with their cursors.
"""

from __future__ import annotations

import json
from typing import Any

from agent.store.database import Database


class StateTables(Database):
    # -- small key/value tables -----------------------------------------------------------------------
    def get_offset(self, source: str) -> dict[str, Any] | None:
        with self.lock:
            row = self.conn.execute("SELECT state FROM offsets WHERE source = ?", (source,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_offset(self, source: str, state: dict[str, Any]) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO offsets(source, state) VALUES (?, ?)",
                         (source, json.dumps(state, sort_keys=True)))

    def get_cursor(self, name: str) -> int:
        with self.lock:
            row = self.conn.execute("SELECT value FROM cursors WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def set_cursor(self, name: str, value: int) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO cursors(name, value) VALUES (?, ?)", (name, value))

    def segments(self) -> list[str]:
        with self.lock:
            rows = self.conn.execute("SELECT value FROM segments ORDER BY first_seen, value").fetchall()
        return [r[0] for r in rows]

    def add_segment(self, value: str, ts: float) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO segments(value, first_seen) VALUES (?, ?)", (value, ts))
