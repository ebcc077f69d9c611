"""The decoupling detector of a whole stream that also fits its segments' references.

One reference span per (proxy, audit): the whole-stream (``*``) detector fits on the first
``reference_pairs`` audited pairs after start or rebaseline, and every segment's reference comes
from those same pairs, partially pooled (:mod:`agent.detect.segments`), never from pairs after
them. A segment with 20 of those pairs gets its reference at the end of the span; one first seen
later gets the pooled line with the between-segment variance as its uncertainty. The ``*`` test
predicts each audited pair with its own segment's line, so a change of traffic mix alone (toward
a segment whose audits run lower at the same proxy) is not a gap.

Segment detectors (of the same class) are given their reference by
:meth:`PooledDetector.segment_reference` (the bank does it: agent/bank.py); they never fit one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agent.detect.base import PairObservation
from agent.detect.decoupling import DecouplingDetector
from agent.detect.reference import ReferenceRelation
from agent.detect.segments import SegmentPool, fit_pool, segment_relation, star_tau


class PooledDetector(DecouplingDetector):
    """A :class:`DecouplingDetector` whose reference carries its segments' deviations.

    ``reference_span`` (start, end), output times: the reference is every audited output from
    ``start`` to ``end``, fitted at the first audited output after ``end`` (with at least 20 of
    them; fewer, and the first ``reference_pairs`` go on from there), instead of the first
    ``reference_pairs``. Outputs before ``start`` are ignored as before a rebaseline; a rebaseline
    after ``start`` goes back to ``reference_pairs``.
    """

    def __init__(self, arl0: float, *args: Any, reference_span: tuple[float, float] | list[float] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(arl0, *args, **kwargs)
        self.reference_span = None if reference_span is None else (float(reference_span[0]),
                                                                    float(reference_span[1]))
        if self.reference_span is not None:
            self._baseline_ts = self.reference_span[0]

    def _params(self) -> dict[str, Any]:
        params = super()._params()
        if self.reference_span is not None:  # only when set: pinned references of before still match
            params["reference_span"] = list(self.reference_span)
        return params

    def _span_end(self) -> float | None:
        """The explicit span's end while it applies (not after a rebaseline past its start)."""
        given = self.reference_span
        return given[1] if given is not None and self._baseline_ts <= given[0] else None

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
            super().observe_pair(obs)  # scored with the segment's own line taken off (_audit)
            return
        end = self._span_end()
        if end is not None and obs.ts > end and len(self._warmup) >= 20:
            self._fit()
            self.observe_pair(obs)
            return
        if end is not None and self._baseline_ts <= obs.ts <= end:
            self._take(obs)
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

    def _audit(self, obs: PairObservation) -> float:
        pool = self._pool
        if self._ref is None or pool is None:
            return float(obs.audit)
        return float(obs.audit - pool.deviation(obs.segment, obs.proxy))

    def _take(self, obs: PairObservation) -> None:
        """A pair of the explicit span: kept for the fit, whatever the count."""
        p, a, w = float(obs.proxy), float(obs.audit), float(obs.weight)
        if not (np.isfinite([p, a, w]).all() and w > 0):
            raise ValueError(f"pair needs finite proxy/audit and a positive weight: {obs}")
        self._warmup.append([p, a, w])
        self._warmup_seg.append(obs.segment)
        self._span = [min(obs.ts, self._span[0]), max(obs.ts, self._span[1])] if self._span else [obs.ts] * 2

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
        follower = PooledDetector(**self._params())
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

    def _state(self) -> dict[str, Any]:  # both state_dict and checkpoint_state
        state = super()._state()
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
