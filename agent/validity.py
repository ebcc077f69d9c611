"""``goodhart_proxy_validity``: how much is this proxy still worth?

For every (proxy, audit, segment) the agent asks how well the proxy, oriented so that larger means
"better" (``direction: lower`` flips it), orders the newest audited outputs the way the audit does:

- a **binary** audit (every value 0 or 1): the ROC AUC of the proxy for the audit, the chance that
  a randomly chosen good output has a better proxy than a randomly chosen bad one. 1 is a perfect
  proxy, 0.5 a worthless one (a coin), below 0.5 it points the wrong way.
- a **score** audit (anything else): Spearman's rank correlation. 1 is perfect, 0 worthless,
  negative points the wrong way.

It is computed over the newest ``detection.validity_pairs`` audited pairs of each pair and segment
(newest by the time their audit joined them, so late labels count when they arrive), at the detect
tick and only when new pairs have arrived. A proxy being gamed loses validity: the optimised
outputs move the proxy without moving the audit, and the ordering decays toward a coin. NaN means
too few pairs (fewer than :data:`MIN_PAIRS`, or only one class of a binary audit).

The numbers equal ``sklearn.metrics.roc_auc_score`` and ``scipy.stats.spearmanr`` (the tests check
that), computed from one shared ranking in numpy (:mod:`agent.stats`, which the detectors use too)
because the library calls spend ~1.5 ms each on input validation, and a tick may compute dozens.

>>> import numpy as np
>>> float(roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])))
0.75
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from agent.core import ALL, PairKey
from agent.stats import average_ranks, spearman
from agent.store import Store

__all__ = ["MIN_PAIRS", "Validity", "ValidityTracker", "average_ranks", "roc_auc", "spearman", "validity_of"]

MIN_PAIRS = 20


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of ``scores`` for 0/1 ``labels`` (Mann–Whitney U / n₁n₀); NaN with one class only."""
    positive = labels == 1
    n1 = int(positive.sum())
    n0 = len(labels) - n1
    if n1 == 0 or n0 == 0:
        return math.nan
    rank_sum = float(average_ranks(scores)[positive].sum())
    return (rank_sum - n1 * (n1 + 1) / 2.0) / (n1 * n0)


@dataclass(frozen=True)
class Validity:
    kind: str      # "roc_auc" or "spearman"
    value: float   # NaN when there are too few pairs
    pairs: int     # pairs it was computed over


def validity_of(proxy: np.ndarray, audit: np.ndarray, binary: bool) -> Validity:
    kind = "roc_auc" if binary else "spearman"
    if len(proxy) < MIN_PAIRS:
        return Validity(kind, math.nan, len(proxy))
    value = roc_auc(proxy, audit) if binary else spearman(proxy, audit)
    return Validity(kind, value, len(proxy))


class _Window:
    """The newest ``size`` (oriented proxy, audit) values of one key, in a ring buffer."""

    def __init__(self, size: int) -> None:
        self.proxy = np.empty(size)
        self.audit = np.empty(size)
        self.count = 0
        self.next = 0

    def add(self, proxy: float, audit: float) -> None:
        self.proxy[self.next] = proxy
        self.audit[self.next] = audit
        self.next = (self.next + 1) % len(self.proxy)
        self.count = min(self.count + 1, len(self.proxy))

    def values(self) -> tuple[np.ndarray, np.ndarray]:
        return self.proxy[:self.count], self.audit[:self.count]


class ValidityTracker:
    """Validity per pair key, kept current from the store's new pairs at each detect tick.

    The first call loads the newest pairs of every key from the store (so a restart resumes with
    full windows); later calls read only the pairs added since (``pairs_since`` its own cursor) and
    recompute only the keys that got new pairs, which keeps a tick well under a millisecond when
    nothing changed and about 0.1 ms per changed key of 1,000 pairs.
    """

    def __init__(self, directions: dict[str, float], window: int) -> None:
        self.directions = directions
        self.window = window
        self._windows: dict[PairKey, _Window] = {}
        self._cursor: int | None = None
        self._values: dict[PairKey, Validity] = {}

    def compute(self, store: Store, keys: Iterable[PairKey]) -> dict[PairKey, Validity]:
        changed: set[PairKey] = set()
        if self._cursor is None:
            self._cursor = store.max_seq("pairs")
            changed |= self._load(store, keys)
        while rows := store.pairs_since(self._cursor):
            for pair in rows:
                sign = self.directions.get(pair.proxy, 1.0)
                for segment in (ALL, pair.segment) if pair.segment is not None else (ALL,):
                    key = (pair.proxy, pair.audit, segment)
                    self._window(key).add(pair.proxy_value * sign, pair.audit_value)
                    changed.add(key)
            self._cursor = rows[-1].seq
        for key in sorted(changed):
            whole = self._windows[(key[0], key[1], ALL)].values()[1]
            binary = bool(np.isin(whole, (0.0, 1.0)).all())
            self._values[key] = validity_of(*self._windows[key].values(), binary)
        return dict(self._values)

    def _window(self, key: PairKey) -> _Window:
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window(self.window)
        return window

    def _load(self, store: Store, keys: Iterable[PairKey]) -> set[PairKey]:
        """Fill the windows with the newest pairs already stored (oldest first, as they arrived)."""
        wanted = set(keys)
        loaded: set[PairKey] = set()
        for proxy, audit in sorted({(k[0], k[1]) for k in wanted}):
            segments = sorted(k[2] for k in wanted if k[0] == proxy and k[1] == audit and k[2] != ALL)
            rows = {s: store.recent_pairs(proxy, audit, s, self.window) for s in segments}
            unsegmented = store.recent_pairs(proxy, audit, None, self.window)
            # the newest pairs overall are among the newest of each segment: merge, no full sort
            everything = heapq.nlargest(self.window, itertools.chain(unsegmented, *rows.values()))
            sign = self.directions.get(proxy, 1.0)
            for segment, chosen in ((ALL, everything), *rows.items()):
                for _, proxy_value, audit_value in reversed(chosen):
                    self._window((proxy, audit, segment)).add(proxy_value * sign, audit_value)
                if chosen:
                    loaded.add((proxy, audit, segment))
        return loaded
