"""The rows just stored, kept in memory for the detect step, so that it need not read them back.

The detectors read every output and audited output stored after their cursors. Most of those rows
were stored moments before by the same process, so :class:`FeedLog` keeps them as they were
written (no SQL, no JSON decode): it holds every row with a sequence number in ``(base, last]``,
in order. A reader whose cursor is behind ``base`` (after a restart, a rolled-back transaction, a
row written by another path, or rows the log let go of) reads SQLite as before; the answer is the
same either way.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar


class HasSeq(Protocol):
    @property
    def seq(self) -> int: ...


Row = TypeVar("Row", bound=HasSeq)

#: rows held at most per table; beyond, the oldest go (their readers use SQLite)
MAX_ROWS = 200_000


class FeedLog(Generic[Row]):
    """Rows with sequence numbers in ``(base, last]``, in order; ``base is None``: holds nothing valid."""

    def __init__(self, max_rows: int = MAX_ROWS) -> None:
        self.base: int | None = None
        self.rows: list[Row] = []
        self.seqs: list[int] = []
        self.max_rows = max_rows

    @property
    def last(self) -> int | None:
        return self.seqs[-1] if self.seqs else self.base

    def extend(self, before: int, rows: Sequence[Row]) -> None:
        """Rows just stored, numbered from ``before + 1`` on; a gap (rows stored by a path that does
        not log) starts the log afresh at ``before``."""
        if not rows:
            return
        if self.last != before:
            self.base, self.rows, self.seqs = before, [], []
        self.rows.extend(rows)
        self.seqs.extend(r.seq for r in rows)
        if len(self.rows) > self.max_rows:
            self.release(self.seqs[len(self.rows) - self.max_rows - 1])

    def since(self, seq: int, limit: int) -> list[Row] | None:
        """The rows after ``seq`` (at most ``limit``), or None when the log cannot tell (read SQLite)."""
        if self.base is None or seq < self.base:
            return None
        start = bisect_right(self.seqs, seq)
        return self.rows[start:start + limit]

    def release(self, upto: int) -> None:
        """Let go of the rows up to ``upto`` (read by the detectors); a reader behind reads SQLite."""
        if self.base is None or upto <= self.base:
            return
        cut = bisect_right(self.seqs, upto)
        del self.rows[:cut], self.seqs[:cut]
        self.base = upto

    def clear(self) -> None:
        """Nothing held is to be trusted (a rolled-back transaction): readers use SQLite until the next rows."""
        self.base, self.rows, self.seqs = None, [], []
