"""Which pairs started from a reference artifact, and whether they were rebaselined since.

A pair keyed like the detectors table (JSON ``[proxy, audit, segment]``) gets a row when a
reference artifact is applied to it (``detection.reference_file`` at start, or ``reference
import``), with the artifact's hash. At start an artifact is applied only to the pairs that have
no row with its hash: restarts with the same file resume the detectors (whose state began from it),
a rebaseline after the import is not undone by the next restart, and a *new* file (another hash)
is applied once, as a deliberate new pin.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.store.database import Database


@dataclass(frozen=True)
class ImportRow:
    artifact: str
    imported_at: float
    rebaselined_at: float | None


class ReferenceTables(Database):
    def reference_imports(self) -> dict[str, ImportRow]:
        with self.lock:
            rows = self.conn.execute(
                "SELECT key, artifact, imported_at, rebaselined_at FROM reference_imports").fetchall()
        return {key: ImportRow(artifact, float(at), None if reb is None else float(reb))
                for key, artifact, at, reb in rows}

    def record_imports(self, keys: list[str], artifact: str, now: float) -> None:
        with self.transaction() as conn:
            conn.executemany("INSERT OR REPLACE INTO reference_imports(key, artifact, imported_at, rebaselined_at) "
                             "VALUES (?, ?, ?, NULL)", [(key, artifact, now) for key in keys])

    def record_rebaselines(self, keys: list[str], now: float) -> None:
        """Mark imported pairs as rebaselined (pairs never imported have no row and need none)."""
        with self.transaction() as conn:
            conn.executemany("UPDATE reference_imports SET rebaselined_at = ? WHERE key = ?",
                             [(now, key) for key in keys])
