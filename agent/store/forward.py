"""A forwarder's buffer: records read and validated here, waiting for the gateway's 202.

Records enter in the same transaction as the source offset they were read before (the caller
holds it), and leave only when the gateway has accepted them (:meth:`ForwardTables.ack_buffered`)
or when a bound forces them out (:meth:`ForwardTables.evict_buffered`: the oldest first beyond
``max_bytes``, and anything buffered before ``min_buffered_at``); the caller counts both. The batch
being sent is never evicted, so a record is either delivered or dropped, never both. Running totals
are kept by triggers (migration 4), so depth and size cost one row read, not a scan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agent.store.database import Database


@dataclass(frozen=True)
class BufferStats:
    records: int
    bytes: int
    oldest_buffered_at: float | None


@dataclass(frozen=True)
class BufferedBatch:
    """Consecutive oldest buffered records, ``first``..``last`` by sequence number."""

    first: int
    last: int
    bodies: list[bytes]

    @property
    def size(self) -> int:
        return sum(len(b) for b in self.bodies)


class ForwardTables(Database):
    def buffer_records(self, bodies: Sequence[bytes], now: float) -> None:
        """Append encoded records; joins the caller's transaction (the one that stores the offset)."""
        with self.transaction() as conn:
            conn.executemany("INSERT INTO forward_buffer(buffered_at, bytes, body) VALUES (?, ?, ?)",
                             [(now, len(b), b) for b in bodies])

    def buffered_batch(self, max_records: int, max_bytes: int) -> BufferedBatch | None:
        """The oldest records, at most ``max_records`` and ``max_bytes`` (but always one); None when empty."""
        with self.lock:
            rows = self.conn.execute("SELECT seq, body FROM forward_buffer ORDER BY seq LIMIT ?",
                                     (max_records,)).fetchall()
        bodies: list[bytes] = []
        size = 0
        last = 0
        for seq, body in rows:
            if bodies and size + len(body) > max_bytes:
                break
            bodies.append(bytes(body))
            size += len(body)
            last = int(seq)
        return BufferedBatch(int(rows[0][0]), last, bodies) if rows else None

    def ack_buffered(self, first: int, last: int) -> int:
        """Remove a batch the gateway accepted; joins the caller's transaction (the one that counts it)."""
        with self.transaction() as conn:
            return int(conn.execute("DELETE FROM forward_buffer WHERE seq BETWEEN ? AND ?",
                                    (first, last)).rowcount)

    def evict_buffered(self, max_bytes: int, min_buffered_at: float, keep_through: int = 0) -> dict[str, int]:
        """Drop what the bounds force out, by reason (``too_old``, ``buffer_full``); never a row whose
        seq is ≤ ``keep_through`` (the batch in flight). Joins the caller's transaction."""
        dropped = {"too_old": 0, "buffer_full": 0}
        with self.transaction() as conn:
            dropped["too_old"] = int(conn.execute(
                "DELETE FROM forward_buffer WHERE buffered_at < ? AND seq > ?",
                (min_buffered_at, keep_through)).rowcount)
            total = int(conn.execute("SELECT bytes FROM forward_totals WHERE id = 1").fetchone()[0])
            if total > max_bytes:
                # Newest first, keep what fits in max_bytes (the batch in flight counts against it);
                # everything older than the first row that no longer fits goes.
                row = conn.execute(
                    "SELECT seq FROM (SELECT seq, sum(bytes) OVER (ORDER BY seq DESC) AS kept FROM forward_buffer)"
                    " WHERE kept > ? ORDER BY seq DESC LIMIT 1", (max_bytes,)).fetchone()
                if row is not None:
                    dropped["buffer_full"] = int(conn.execute(
                        "DELETE FROM forward_buffer WHERE seq <= ? AND seq > ?", (row[0], keep_through)).rowcount)
        return dropped

    def buffer_stats(self) -> BufferStats:
        with self.lock:
            records, size = self.conn.execute("SELECT records, bytes FROM forward_totals WHERE id = 1").fetchone()
            oldest = self.conn.execute(
                "SELECT buffered_at FROM forward_buffer ORDER BY seq LIMIT 1").fetchone()
        return BufferStats(int(records), int(size), None if oldest is None else float(oldest[0]))
