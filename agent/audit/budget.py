"""Caps on audits per minute, hour and day: token buckets, persisted so restarts do not refill them.

A bucket of capacity ``N`` for a window of ``T`` seconds starts full and refills continuously at
``N / T`` tokens per second; one audit takes one token. The sustained rate can never exceed ``N``
per window, and no stretch of ``T`` seconds sees more than ``2N`` (a full bucket plus one window
of refill). An audit is allowed only when *every* configured bucket has a token, and then takes
one from each. Time is the pipeline's clock, so ``replay`` spends the budget the live daemon
would have spent over the same stream. The levels are stored by ``agent.store`` (``load_budget``,
``save_budget``); :meth:`Budget.levels` and :meth:`Budget.restore` are what it stores and resumes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from agent.config import AuditBudgetConfig

WINDOWS: dict[str, float] = {"minute": 60.0, "hour": 3600.0, "day": 86400.0}


@dataclass
class TokenBucket:
    capacity: float
    period: float
    tokens: float
    updated_at: float

    def level(self, now: float) -> float:
        """Tokens available at ``now`` (a clock that steps back refills nothing)."""
        elapsed = max(0.0, now - self.updated_at)
        return min(self.capacity, self.tokens + elapsed * self.capacity / self.period)

    def settle(self, now: float) -> None:
        self.tokens = self.level(now)
        self.updated_at = max(now, self.updated_at)


class Budget:
    """The buckets of one audit; thread-safe (ingest takes, scrapes read)."""

    def __init__(self, buckets: dict[str, TokenBucket]) -> None:
        self.buckets = buckets
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: AuditBudgetConfig, now: float) -> Budget:
        caps = {"minute": config.per_minute, "hour": config.per_hour, "day": config.per_day}
        return cls({window: TokenBucket(cap, WINDOWS[window], cap, now)
                    for window, cap in caps.items() if cap is not None})

    def take(self, now: float) -> bool:
        """Take one token from every bucket, or none when any bucket is empty."""
        with self._lock:
            if any(b.level(now) < 1.0 for b in self.buckets.values()):
                return False
            for bucket in self.buckets.values():
                bucket.settle(now)
                bucket.tokens -= 1.0
            return True

    def remaining(self, now: float) -> dict[str, float]:
        with self._lock:
            return {window: b.level(now) for window, b in self.buckets.items()}

    def capacity(self) -> dict[str, float]:
        return {window: b.capacity for window, b in self.buckets.items()}

    # -- persistence (the SQL is in agent.store) ----------------------------------------------------------
    def levels(self) -> dict[str, tuple[float, float]]:
        """(tokens, updated_at) per window: what is stored so a restart does not refill the buckets."""
        with self._lock:
            return {window: (b.tokens, b.updated_at) for window, b in self.buckets.items()}

    def restore(self, levels: dict[str, tuple[float, float]]) -> None:
        """Resume stored levels; a changed cap keeps the stored level, clipped to the new cap."""
        with self._lock:
            for window, (tokens, updated_at) in levels.items():
                bucket = self.buckets.get(window)
                if bucket is not None:
                    bucket.tokens, bucket.updated_at = min(tokens, bucket.capacity), updated_at
