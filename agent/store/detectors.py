"""Detector checkpoints: each pair's state as one small JSON row, its ring buffers in chunks.

A detector's window (up to ``detection.window`` audited outputs, 100,000 at most) used to be
written as JSON with the rest of its state on every checkpoint: 5.5 MB and about 0.1 s per
detector at 100,000. Now a :class:`~agent.core.Ring` in the state is written as float64 chunks of
:data:`CHUNK_SLOTS` slots into ``detector_chunks``, and a checkpoint rewrites only the chunks
holding slots written since the last one: the cost follows what arrived, not the window's size.
The JSON row keeps everything else (a few KB: statistics, the reference, its thresholds) and a
``{"$ring": ...}`` note where the ring was.

Which slots changed is worked out from the ring's ``written`` counter against what this store
last committed for the same key (its *mark*); when they do not line up (a rebaseline replaced the
ring, another window size, a store opened afresh that has not loaded the key) every chunk is
written. Marks are set only once the transaction commits, so a rolled-back checkpoint is redone
in full; they assume this store is the only writer of these tables, which the state dir's lock
(agent/statelock.py) makes so. Rows written before these chunks (a ``window`` list in the JSON) still load as they are.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.core import Ring
from agent.store.database import Database

CHUNK_SLOTS = 1024  # slots per chunk: 32 KB for a window's 4 rows
RING_TAG = "$ring"


@dataclass(frozen=True)
class _Mark:
    """What the store last committed of one ring."""

    rows: int
    size: int
    pos: int
    count: int
    written: int


def changed_chunks(mark: _Mark | None, ring: Ring) -> list[int] | None:
    """The chunks holding slots written since ``mark`` (ascending), or None when all must be written."""
    rows, size = ring.buf.shape
    if mark is None or (mark.rows, mark.size) != (rows, size):
        return None
    delta = int(ring.written) - mark.written
    if delta < 0 or delta >= size or ring.pos != (mark.pos + delta) % size \
            or ring.count != min(mark.count + delta, size):
        return None  # not the same ring moved on: replaced (rebaseline) or rebuilt
    if delta == 0:
        return []
    first, last = mark.pos, mark.pos + delta - 1  # unwrapped slots written since
    chunks = set(range(first // CHUNK_SLOTS, min(last, size - 1) // CHUNK_SLOTS + 1))
    if last >= size:
        chunks.update(range(0, (last - size) // CHUNK_SLOTS + 1))
    return sorted(chunks)


class DetectorTables(Database):
    # -- detector checkpoints --------------------------------------------------------------------------
    @property
    def _marks(self) -> dict[tuple[str, str], _Mark]:
        marks: dict[tuple[str, str], _Mark] | None = self.__dict__.get("_ring_marks")
        if marks is None:
            marks = self.__dict__["_ring_marks"] = {}
        return marks

    def save_detectors(self, states: dict[str, dict[str, Any]]) -> None:
        """Save each pair's state; a :class:`Ring` anywhere in it goes to chunks, only what changed."""
        marks: dict[tuple[str, str], _Mark] = {}
        with self.transaction() as conn:
            rows = []
            for key, state in states.items():
                rows.append((key, json.dumps(self._take_rings(conn, key, state, "", marks), sort_keys=True)))
            conn.executemany("INSERT OR REPLACE INTO detectors(key, state) VALUES (?, ?)", rows)
            self.after_commit(lambda: self._marks.update(marks))

    def _take_rings(self, conn: Any, key: str, value: Any, path: str, marks: dict[tuple[str, str], _Mark]) -> Any:
        """``value`` with its rings written to chunks and replaced by their notes."""
        if isinstance(value, Ring):
            marks[(key, path)] = self._write_ring(conn, key, path, value)
            rows, size = value.buf.shape
            return {RING_TAG: {"name": path, "rows": rows, "size": size, "pos": value.pos, "count": value.count,
                               "written": int(value.written), "chunk": CHUNK_SLOTS}}
        if isinstance(value, dict):
            return {k: self._take_rings(conn, key, v, f"{path}.{k}" if path else k, marks) for k, v in value.items()}
        return value

    def _write_ring(self, conn: Any, key: str, name: str, ring: Ring) -> _Mark:
        buf = np.asarray(ring.buf, dtype=np.float64)
        rows, size = buf.shape
        chunks = changed_chunks(self._marks.get((key, name)), ring)
        if chunks is None:
            conn.execute("DELETE FROM detector_chunks WHERE key = ? AND name = ?", (key, name))
            chunks = list(range((size + CHUNK_SLOTS - 1) // CHUNK_SLOTS))
        conn.executemany(
            "INSERT OR REPLACE INTO detector_chunks(key, name, chunk, data) VALUES (?, ?, ?, ?)",
            [(key, name, c, buf[:, c * CHUNK_SLOTS:(c + 1) * CHUNK_SLOTS].tobytes()) for c in chunks])
        return _Mark(rows, size, int(ring.pos), int(ring.count), int(ring.written))

    def load_detectors(self) -> dict[str, dict[str, Any]]:
        """Every saved state, rings rebuilt from their chunks (and remembered, so that the next
        checkpoint of the same pair writes only what changed)."""
        with self.lock:
            rows = self.conn.execute("SELECT key, state FROM detectors").fetchall()
            return {key: self._put_rings(key, json.loads(text)) for key, text in rows}

    def _put_rings(self, key: str, value: Any) -> Any:
        if isinstance(value, dict):
            note = value.get(RING_TAG)
            if isinstance(note, dict) and len(value) == 1:
                return self._read_ring(key, note)
            return {k: self._put_rings(key, v) for k, v in value.items()}
        return value

    def _read_ring(self, key: str, note: dict[str, Any]) -> Ring:
        rows, size, chunk = int(note["rows"]), int(note["size"]), int(note["chunk"])
        pos, count, written = int(note["pos"]), int(note["count"]), int(note["written"])
        buf = np.zeros((rows, size))
        for c, data in self.conn.execute("SELECT chunk, data FROM detector_chunks WHERE key = ? AND name = ?",
                                         (key, note["name"])):
            part = np.frombuffer(data, dtype=np.float64).reshape(rows, -1)
            buf[:, c * chunk:c * chunk + part.shape[1]] = part
        buf[:, count:] = 0.0  # slots past count are empty, as in a ring that never stopped
        if chunk == CHUNK_SLOTS:  # else the next checkpoint rewrites it in today's chunks
            self._marks[(key, note["name"])] = _Mark(rows, size, pos, count, written)
        return Ring(buf, pos, count, written)

    def clear_detectors(self) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM detectors")
            conn.execute("DELETE FROM detector_chunks")
            self.after_commit(self._marks.clear)
