"""Rolling means over a time window, in fixed buckets so memory stays bounded at any rate."""

from __future__ import annotations

import threading
from collections import deque

BUCKETS = 60


class RollingMeans:
    """Per-key sums over the last ``window_seconds``, kept in ``BUCKETS`` time buckets."""

    def __init__(self, window_seconds: float) -> None:
        self.window = window_seconds
        self.width = window_seconds / BUCKETS
        self._buckets: dict[tuple[str, ...], deque[list[float]]] = {}
        self._lock = threading.Lock()  # ingest adds while a scrape reads

    def add(self, key: tuple[str, ...], ts: float, value: float) -> None:
        with self._lock:
            self._add(key, ts, value)

    def add_many(self, values: list[tuple[tuple[str, ...], float, float]]) -> None:
        """(key, ts, value) in order, under one lock: a batch's values."""
        with self._lock:
            for key, ts, value in values:
                self._add(key, ts, value)

    def _add(self, key: tuple[str, ...], ts: float, value: float) -> None:
        index = float(int(ts // self.width))
        buckets = self._buckets.setdefault(key, deque())
        if buckets and buckets[-1][0] == index:
            buckets[-1][1] += value
            buckets[-1][2] += 1
        elif not buckets or buckets[-1][0] < index:
            buckets.append([index, value, 1.0])
        else:  # late value for an older bucket: fold it into the newest one
            buckets[-1][1] += value
            buckets[-1][2] += 1
        self._trim(buckets, index)

    def _trim(self, buckets: deque[list[float]], index: float) -> None:
        while buckets and buckets[0][0] <= index - BUCKETS:
            buckets.popleft()

    def means(self, now: float) -> dict[tuple[str, ...], float]:
        with self._lock:
            return self._means(now)

    def _means(self, now: float) -> dict[tuple[str, ...], float]:
        index = float(int(now // self.width))
        out = {}
        for key, buckets in self._buckets.items():
            self._trim(buckets, index)
            total = sum(b[1] for b in buckets)
            count = sum(b[2] for b in buckets)
            if count:
                out[key] = total / count
        return out
