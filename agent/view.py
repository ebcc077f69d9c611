"""The read-only state a scrape (or a report) sees: what the exporter reads, and nothing it can change.

Never takes the pipeline's lock, so a scrape never waits for a detect step: counters come from
their mirror, verdicts from the bank's last snapshot, store aggregates are queried at most once
per detect step (by the daemon's per-pair exposition, agent/exposition.py, right after the step),
and the store's size is read only when the store is free (else the last size read is given).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.bank import DetectorBank, Snapshot
from agent.clock import Clock
from agent.compute import Computer
from agent.config import EvidenceConfig
from agent.core import PairKey
from agent.counters import CounterKey, Counters
from agent.evidence import evidence
from agent.ingest import Ingester
from agent.store import Store, VerdictRow
from agent.validity import Validity, ValidityTracker
from agent.windows import RollingMeans


@dataclass(frozen=True)
class StoreStats:
    """Aggregates read from the store (so they survive restarts)."""

    pair_counts: dict[PairKey, int]
    pending_outputs: int
    pending_labels: int


class PipelineView:
    def __init__(self, store: Store, counters: Counters, bank: DetectorBank, means: RollingMeans,
                 validity: ValidityTracker, ingester: Ingester, clock: Clock,
                 evidence_settings: EvidenceConfig | None = None) -> None:
        self._store = store
        self._evidence = evidence_settings or EvidenceConfig()
        self._counters = counters
        self._bank = bank
        self._means = means
        self._validity = validity
        self._ingester = ingester
        self._clock = clock
        self._stats: tuple[int, StoreStats] | None = None
        self._size = 0
        self._stats_lock = threading.Lock()

    @property
    def snapshot(self) -> Snapshot:
        return self._bank.snapshot

    def counters(self) -> dict[CounterKey, float]:
        return self._counters.snapshot()

    def counter(self, name: str, **labels: str) -> float:
        return self._counters.value(name, **labels)

    def last_record_ts(self) -> dict[str, float]:
        return dict(self._ingester.last_record_ts)

    def computers(self) -> Mapping[str, Computer]:
        return self._ingester.parser.computers

    def field_presence(self) -> tuple[int, dict[tuple[str, str], int]]:
        """(records with an id parsed since start, how many of them lacked each configured field)."""
        presence = self._ingester.parser.presence
        return presence.records, dict(presence.absent)

    def window_means(self) -> dict[tuple[str, ...], float]:
        return self._means.means(self._clock.now())

    def store_size_bytes(self) -> int:
        """The store's size; the last one read while an ingest or a detect step holds the store, so a
        scrape never waits for them."""
        if not self._store.lock.acquire(blocking=False):
            return self._size
        try:
            self._size = self._store.size_bytes()
        finally:
            self._store.lock.release()
        return self._size

    def store_stats(self) -> StoreStats:
        """Pair and pending counts as of the last detect step, queried at most once per step."""
        generation = self.snapshot.generation
        with self._stats_lock:
            if self._stats is not None and self._stats[0] == generation:
                return self._stats[1]
            pending_outputs, pending_labels = self._store.pending_counts()
            stats = StoreStats(self._store.pair_counts(), pending_outputs, pending_labels)
            self._stats = (generation, stats)
            return stats

    def evidence(self, key: PairKey, limit: int | None = None) -> dict[str, Any] | None:
        """The audited outputs behind ``key``'s current excursion (agent/evidence.py); None: no such pair."""
        return evidence(self._store, self.snapshot, key, self._bank.directions, self._evidence, limit)

    def verdict_history(self, key: PairKey, limit: int) -> list[VerdictRow]:
        """The newest recorded verdicts of a pair (for sparklines), oldest first."""
        return self._store.verdict_history(*key, limit)

    def recent_events(self, limit: int) -> list[dict[str, Any]]:
        return self._store.recent_events(limit)

    def now(self) -> float:
        return self._clock.now()

    def proxy_validity(self) -> dict[PairKey, Validity]:
        """How much each proxy is still worth, brought up to date with the store when asked.

        Computed for the exposition (and replay's --metrics-out), not on every detect step: replay
        would otherwise spend a third of its time ranking windows nobody reads.
        """
        with self._stats_lock:
            return self._validity.compute(self._store, list(self.snapshot.states))
