"""Rolling means over a time window, in fixed buckets so memory stays bounded at any rate."""

from __future__ import annotations

import threading
from collections import deque
from functools import reduce
from operator import add

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

    def add_at(self, ts: float, values: dict[tuple[str, ...], list[float]]) -> None:
        """A batch's values, all at one time, in order per key, under one lock.

        The same sums as :meth:`add` value by value (the first value picks or opens the bucket,
        the rest land in that newest bucket and are added one by one, in order), at one bucket
        lookup per key instead of one per value."""
        with self._lock:
            for key, series in values.items():
                if not series:
                    continue
                self._add(key, ts, series[0])
                if len(series) > 1:
                    newest = self._buckets[key][-1]
                    newest[1] = reduce(add, series[1:], newest[1])  # left to right, as value by value
                    newest[2] += len(series) - 1

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
