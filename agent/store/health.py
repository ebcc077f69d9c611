"""Whether the store can take writes and is intact: what ``/readyz`` and the start-up check ask.

A store can open fine and still refuse every write (a read-only file or mount, a full disk,
another process holding the write lock), and a corrupt page or index can sit unnoticed until a
query walks into it. :meth:`HealthTables.probe_write` rewrites one row of a one-row table, with a
short busy timeout on a connection of its own, so a probe never stalls the daemon; :meth:`HealthTables.quick_check` runs
``PRAGMA quick_check`` (structure, not index contents: linear in the file's size) once at start.
"""

from __future__ import annotations

import sqlite3

from agent.store.database import Database

#: how long a write probe waits for another writer before it reports the store as not writable
PROBE_BUSY_MS = 1000


class HealthTables(Database):
    _probe: sqlite3.Connection | None = None

    def probe_write(self, now: float) -> str | None:
        """Write the probe row; None when the store took it, else why not (one line).

        Through a connection of its own with a short busy timeout, so a probe neither waits behind a
        step stuck on the shared connection nor stalls one."""
        if self.path == ":memory:":
            return None
        try:
            if self._probe is None:
                self._probe = sqlite3.connect(self.path, timeout=PROBE_BUSY_MS / 1000, isolation_level=None,
                                              check_same_thread=False)
            self._probe.execute("INSERT OR REPLACE INTO health_probe(id, written_at) VALUES (1, ?)", (now,))
        except sqlite3.Error as err:
            return f"store not writable: {err}"
        return None

    def close(self) -> None:
        if self._probe is not None:
            self._probe.close()
            self._probe = None
        super().close()

    def quick_check(self) -> str | None:
        """None when ``PRAGMA quick_check`` finds the file intact, else its first finding."""
        with self.lock:
            try:
                rows = self.conn.execute("PRAGMA quick_check(10)").fetchall()
            except sqlite3.DatabaseError as err:
                return str(err)
        findings = [line.strip() for row in rows for line in str(row[0]).splitlines()
                    if line.strip() and not line.startswith("***")]
        if findings == ["ok"]:
            return None
        more = f" (and {len(findings) - 1} more findings)" if len(findings) > 1 else ""
        return f"{findings[0]}{more}"  # one line: it ends up in a one-line start-up error
