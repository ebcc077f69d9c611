"""Clocks, passed into the pipeline so ``replay`` can run it on the records' own time."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""
        ...


class WallClock:
    def now(self) -> float:
        return time.time()


class VirtualClock:
    """Time that only moves when told to, and never backwards (records may arrive out of order)."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance_to(self, ts: float) -> None:
        if ts > self._now:
            self._now = ts
