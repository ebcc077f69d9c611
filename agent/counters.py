"""Counters that survive restarts: counted inside a store transaction, mirrored in memory once committed.

Every count the agent exports (records, rejections, joins, expiries, audit outcomes) goes through
:meth:`Counters.counting`: the increments are written in the same transaction as the work they
count, and the in-memory mirror a scrape reads is updated only after that transaction commits, so
a rolled-back batch is never counted and concurrent pushes add up.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from agent.store import Store

#: a counter series: (name, sorted label pairs)
CounterKey = tuple[str, tuple[tuple[str, str], ...]]


def counter_key(name: str, **labels: str) -> CounterKey:
    return name, tuple(sorted(labels.items()))


class Tally:
    """Increments not committed yet."""

    def __init__(self) -> None:
        self.pending: dict[CounterKey, float] = {}

    def count(self, name: str, by: float = 1.0, **labels: str) -> None:
        key = counter_key(name, **labels)
        self.pending[key] = self.pending.get(key, 0.0) + by


class Counters:
    """The persistent counters and their mirror; thread-safe."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._values: dict[CounterKey, float] = {
            counter_key(name, **labels): value for name, labels, value in store.counters()}

    @contextmanager
    def counting(self) -> Iterator[Tally]:
        """A tally written with the enclosing (or a new) store transaction, mirrored after it commits.

        Nested inside an outer transaction, the mirror is updated when this block ends: callers
        nest only where the outer transaction commits right after (the ingest and audit steps).
        """
        tally = Tally()
        with self._store.transaction():
            yield tally
            for (name, labels), by in tally.pending.items():
                self._store.incr(name, labels, by)
        with self._lock:
            for key, by in tally.pending.items():
                self._values[key] = self._values.get(key, 0.0) + by

    def add(self, pending: dict[CounterKey, float]) -> None:
        """Counts made elsewhere, written with the caller's transaction."""
        with self.counting() as tally:
            tally.pending.update(pending)

    def value(self, name: str, **labels: str) -> float:
        return self._values.get(counter_key(name, **labels), 0.0)

    def snapshot(self) -> dict[CounterKey, float]:
        """A consistent copy for a scrape."""
        with self._lock:
            return dict(self._values)

    def named(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        """Every series of one counter, by its labels."""
        return {labels: value for (n, labels), value in self.snapshot().items() if n == name}
