"""The decoupling detector of a whole stream that also fits its segments' references.

One reference span per (proxy, audit): the whole-stream (``*``) detector fits on the first
``reference_pairs`` audited pairs after start or rebaseline, and every segment's reference comes
from those same pairs, partially pooled (:mod:`agent.detect.segments`), never from pairs after
them. A segment with 20 of those pairs gets its reference at the end of the span; one first seen
later gets the pooled line with the between-segment variance as its uncertainty. The ``*`` test
predicts each audited pair with its own segment's line, so a change of traffic mix alone (toward
a segment whose audits run lower at the same proxy) is not a gap.

Segment detectors are plain :class:`DecouplingDetector` s given their reference by
:meth:`PooledDetector.segment_reference` (the bank does it: agent/bank.py); they never fit one.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from agent.detect.base import PairObservation
from agent.detect.decoupling import DecouplingDetector
from agent.detect.reference import ReferenceRelation
from agent.detect.segments import SegmentPool, fit_pool, segment_relation, star_tau


class PooledDetector(DecouplingDetector):
    """A :class:`DecouplingDetector` whose reference carries its segments' deviations."""

    def _reset(self) -> None:
        super()._reset()
        self._pool: SegmentPool | None = None
        self._warmup_seg: list[str | None] = []  # each warm-up pair's segment
        self._unusable: set[str] = set()  # segments whose reference reaches no threshold at this budget

    @property
    def pools_segments(self) -> bool:
        """Whether segment tests take their reference from this one (not while it came from an
        artifact of an agent that did not pool)."""
        return self._ref is None or self._pool is not None

    def observe_pair(self, obs: PairObservation) -> None:
        if self._ref is not None:
            if self._pool is not None:
                obs = replace(obs, audit=obs.audit - self._pool.deviation(obs.segment, obs.proxy))
            super().observe_pair(obs)
            return
        warming = obs.ts >= self._baseline_ts
        if warming:
            self._warmup_seg.append(obs.segment)
        try:
            super().observe_pair(obs)
        except ValueError:
            if warming:
                self._warmup_seg.pop()
            raise

    def _fit(self) -> None:
        arr = np.asarray(self._warmup, dtype=float)
        x, y, w = arr[:, 0], arr[:, 1], arr[:, 2]
        binary = bool(np.all((y == 0.0) | (y == 1.0)))
        pool = fit_pool(x, y, w, self._warmup_seg)
        dev = np.array([pool.deviation(s, p) for s, p in zip(self._warmup_seg, x, strict=True)])
        ref = ReferenceRelation(clip=self.clip, bootstrap=self.bootstrap).fit(x, y - dev, w, binary=binary)
        pool.scores = (ref.level_scores_.tolist(), ref.slope_scores_.tolist())
        ref.level_tau_ = star_tau(ref, pool)
        self._ref, self._pool = ref, pool
        self._warmup, self._warmup_seg = [], []
        self._set_ks()
        self._weight_mean = ref.weight_mean_
        self._thresholds()

    def segment_reference(self, segment: str) -> dict[str, Any] | None:
        """The pinned reference of ``segment``'s detector, from this reference span; None while this
        one warms up, or when no threshold reaches the budget with that much uncertainty."""
        if self._ref is None or self._pool is None or not self._pool.scores[0] or segment in self._unusable:
            return None
        follower = DecouplingDetector(**self._params())
        follower._ref = segment_relation(self._ref, self._pool, segment)
        follower._span = self._span
        follower._set_ks()
        try:
            follower._thresholds()
        except ValueError:
            self._unusable.add(segment)
            return None
        pinned = follower.pinned_reference()
        assert pinned is not None
        pinned["origin"] = self._origin
        return pinned

    def pinned_reference(self) -> dict[str, Any] | None:
        pinned = super().pinned_reference()
        if pinned is not None and self._pool is not None:
            pinned["pool"] = self._pool.to_dict()
        return pinned

    def load_reference(self, pinned: dict[str, Any]) -> None:
        super().load_reference(pinned)
        self._pool = SegmentPool.from_dict(pinned["pool"]) if isinstance(pinned.get("pool"), dict) else None

    def adopt_reference(self, pinned: dict[str, Any]) -> None:
        self.load_reference(pinned)
        self._origin = "imported" if pinned.get("origin") == "imported" else "fitted"

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["pool"] = None if self._pool is None else self._pool.to_dict()
        state["warmup_segments"] = list(self._warmup_seg)
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        pool = state.get("pool")
        self._pool = SegmentPool.from_dict(pool) if isinstance(pool, dict) else None
        segs = state.get("warmup_segments")
        self._warmup_seg = list(segs) if isinstance(segs, list) and len(segs) == len(self._warmup) else [
            None] * len(self._warmup)
