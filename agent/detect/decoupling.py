"""The decoupling detector: alarm when proxy gains stop tracking audited quality.

One instance tests one (proxy, audit, segment). The first ``reference_pairs`` audited pairs
(after start or :meth:`~DecouplingDetector.rebaseline`) fit a :class:`ReferenceRelation`, a line
from proxy to audit. Every later pair is scored against it by three one-sided CUSUMs:

* **level**: the audit falls short of what the reference predicts from the proxy. It fires when
  the proxy is inflated (also far beyond the reference range, where the line keeps promising)
  and when the audit drops while the proxy stays flat. Its reason says which of the two
  explains most of the gap.
* **slope**: within recent traffic the audit no longer moves with the proxy (reason
  ``relation_lost``): a proxy turned into noise, or a gold curve that bends over while the proxy
  keeps climbing (Gao et al. 2022).
* **curve**: while the proxy rises, the audit's gain per proxy unit falls below the reference's
  (reason ``gains_bending``; :mod:`agent.detect.curvature`).

The thresholds come from one number, ``arl0`` (this test's expected audited pairs between
false alarms), through Siegmund's approximation averaged over the bias of the *estimated*
reference (:mod:`agent.detect.calibration`); the tests split the budget (``BANK``). Scores are clipped,
so heavy-tailed noise and 0/1 audits keep the calibration. Genuine improvement and mix shifts
move proxy and audit along the same line and leave both scores centred; the uncertainty of the
extrapolated slope is charged to the level test as an allowance that grows with the distance of
recent proxies from the reference mean.

0/1 audits, degenerate references, sampling weights and state versions: docs/detection.md.

>>> import numpy as np
>>> rng = np.random.default_rng(7)
>>> det = DecouplingDetector(arl0=200_000)
>>> for t in range(600):
...     p = rng.normal()
...     a = 0.6 * p + rng.normal(scale=0.8) - (0.8 if t >= 400 else 0.0)  # audit drops at 400
...     det.observe_pair(PairObservation(ts=float(t), proxy=p, audit=a))
...     v = det.verdict(now=float(t))
...     if v.state == "alarm":
...         break
>>> t, v.reason, round(v.estimates.gap, 2)
(416, 'audit_dropped', 0.17)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from agent.core import Ring
from agent.detect.base import STATES, Detector, Estimates, PairObservation, ReferenceInfo, ReferenceLine, Verdict
from agent.detect.curvature import CurvatureTrack
from agent.detect.cusums import BANK, CURVE_SLOW, OTHER_REASONS, allowance_at, bank_thresholds, design_ks, level_scaled
from agent.detect.pinning import pin, unpin
from agent.detect.reference import ReferenceRelation
from agent.detect.spread import SpreadGuard
from agent.detect.window import DeferredEstimates, DeferredWindow, ordered_window, restore_window
from agent.detect.window import finite as _finite
from agent.detect.window import json_float as _f


class DecouplingDetector(Detector):
    """CUSUMs on the residuals of audit against a reference line from proxy to audit."""

    def __init__(
        self,
        arl0: float,
        reference_pairs: int = 200,
        shift: float = 1.0,
        warn_ratio: float = 0.01,
        window: int = 200,
        slope_allowance: float = 1.0,
        span: int = 100,
        clip: float = 3.0,
        bootstrap: int = 200,
        binary_shift: float = 0.3,
    ) -> None:
        if not arl0 > 1:
            raise ValueError(f"arl0 must be > 1, got {arl0}")
        if reference_pairs < 20:
            raise ValueError(f"reference_pairs must be >= 20, got {reference_pairs}")
        if not shift > 0 or not 0 < warn_ratio <= 1 or window < 2 or span < 1 or slope_allowance < 0:
            raise ValueError("need shift > 0, 0 < warn_ratio <= 1, window >= 2, span >= 1, slope_allowance >= 0")
        if not 0 < binary_shift < 1:
            raise ValueError(f"binary_shift must be in (0, 1), got {binary_shift}")
        self.arl0 = float(arl0)
        self.reference_pairs = int(reference_pairs)
        self.shift = float(shift)
        self.warn_ratio = float(warn_ratio)
        self.window = int(window)
        self.slope_allowance = float(slope_allowance)
        self.span = int(span)
        self.clip = float(clip)
        self.bootstrap = int(bootstrap)
        self.binary_shift = float(binary_shift)
        self._names = tuple(name for name, *_ in BANK)
        self._level_names = tuple(name for name, kind, *_ in BANK if kind == "level")
        self._set_ks()
        # Monotone counters live across rebaselines, so they are not part of _reset().
        self._counters = {"audited": 0.0, "samples": 0.0, "residual_positive_sum": 0.0,
                          "residual_negative_sum": 0.0, "residual_squares": 0.0}
        self._baseline_ts = -math.inf
        self._reset()

    def _set_ks(self) -> None:
        """CUSUM reference values: half the design shift. The design shift is ``shift``
        residual s.d., except for the level test of a 0/1 audit: a drop of ``binary_shift`` in
        pass rate, converted to score units by the reference's own residual scale (if smaller)."""
        ref = getattr(self, "_ref", None)
        level_k = min(self.shift, self.binary_shift * ref.level_gain) / 2.0 if ref is not None and ref.binary else None
        self._ks = design_ks(self.shift, level_k)

    @property
    def k(self) -> float:
        """The primary level test's CUSUM reference value (half the design shift; 0/1: see _set_ks)."""
        return self._ks["level"]

    def _reset(self) -> None:
        self._ref: ReferenceRelation | None = None
        self._warmup: list[list[float]] = []  # [proxy, audit, weight] until the fit
        self._h: dict[str, list[float]] = {}  # name -> [alarm threshold, warn threshold]
        self._allow: dict[str, list[float]] = {}  # level name -> allowance on cusums.GRID
        self._centre = 0.0  # EWMA of audited pairs' standardised proxy
        self._weight_mean = 1.0  # slow EWMA of audited pairs' sampling weights
        self._proxy_ewma: float | None = None  # EWMA of every output's proxy (raw units)
        self._late = 0
        self._span: list[float] | None = None  # first and last ts of the reference's audited outputs
        self._origin = "fitted"  # or "imported": the reference came pinned (load_reference)
        self._cusum = {name: self._empty_excursion() for name in self._names}
        self._curve = CurvatureTrack(slow=CURVE_SLOW * self.span, fast=self.span)
        self._spread = SpreadGuard(fast=self.span // 2, slow=2 * self.span)
        self._buf = np.zeros((4, self.window))  # rows: ts, proxy, audit, weight
        self._ts, self._p, self._a, self._w = self._buf  # views of its rows
        self._pos = 0
        self._count = 0
        # Window estimates only change with a new pair; a detect tick often brings none.
        self._window_cache: tuple[tuple[float, int], ReferenceRelation, DeferredWindow] | None = None
        self._set_ks()

    @staticmethod
    def _empty_excursion() -> dict[str, float]:
        # s: statistic; n, sw, sg: pairs, weights and weighted gaps since s left zero; sp: weighted
        # (prediction - reference mean audit), the part of the gap the proxy moved; a: 1 once s crossed its
        # threshold in this excursion (the alarm holds until s returns to 0: one excursion, one alarm).
        return {"s": 0.0, "since": math.inf, "n": 0.0, "sw": 0.0, "sg": 0.0, "sp": 0.0, "a": 0.0}

    # -- observations -----------------------------------------------------------------------
    def observe_proxy(self, ts: float, value: float) -> None:
        if not math.isfinite(value):
            return
        alpha = 2.0 / (10 * self.span + 1)  # all outputs: a slower, smoother view
        self._proxy_ewma = value if self._proxy_ewma is None else self._proxy_ewma + alpha * (
            value - self._proxy_ewma)

    def observe_pair(self, obs: PairObservation) -> None:
        p, a, w = float(obs.proxy), self._audit(obs), float(obs.weight)
        if not (math.isfinite(p) and math.isfinite(a) and math.isfinite(w) and w > 0):
            raise ValueError(f"pair needs finite proxy/audit and a positive weight: {obs}")
        if obs.ts < self._baseline_ts:
            self._late += 1  # an output from before the rebaseline: the old regime
            return
        ref = self._ref
        if ref is None:
            self._warmup.append([p, a, w])
            self._span = [min(obs.ts, self._span[0]), max(obs.ts, self._span[1])] if self._span else [obs.ts] * 2
            if len(self._warmup) >= self.reference_pairs:
                self._fit()
            return
        self._score(ref, obs.ts, p, a, w)

    def _audit(self, obs: PairObservation) -> float:
        """The audit as scored (a pooled reference first takes the segment's own line off)."""
        return float(obs.audit)

    def _score(self, ref: ReferenceRelation, ts: float, p: float, a: float, w: float) -> None:
        r, level, slope = ref.scores(p, a, self._centre, w / self._weight_mean)
        gap, moved = -r, a - r - ref.audit_mean_  # prediction a - r, less the audit; less the reference mean
        # The slope's error is charged when recent proxies sit away from the reference mean (calibration);
        # a level score is read on its own scale once its spread has grown (spread.py).
        d, f = abs(self._centre), 1.0 if ref.binary else self._spread.update(level)
        for name in self._level_names:
            self._step(name, -level / f - self._ks[name] - allowance_at(self._allow[name], d), ts, w, gap, moved)
        self._step("slope", -slope - self._ks["slope"], ts, w, gap, moved)
        x = ref.standardise_proxy(p)
        bend = self._curve.update(level, x)
        if bend is not None and "curve" in self._h:  # absent from references fitted before it existed
            self._step("curve", bend - self._ks["curve"], ts, w, gap, moved)
        self._centre += 2.0 / (self.span + 1) * (x - self._centre)
        self._weight_mean += 2.0 / (10 * self.span + 1) * (w - self._weight_mean)
        i = self._pos
        self._ts[i], self._p[i], self._a[i], self._w[i] = ts, p, a, w  # rows of the window ring
        self._pos = (i + 1) % self.window
        self._count = min(self._count + 1, self.window)
        c = self._counters
        c["audited"] += 1.0
        c["samples"] += w
        if r > 0.0:  # the other part would add 0
            c["residual_positive_sum"] += w * r
        elif r < 0.0:
            c["residual_negative_sum"] += w * -r
        c["residual_squares"] += w * r * r

    def _step(self, name: str, inc: float, ts: float, w: float, gap: float, moved: float) -> None:
        e = self._cusum[name]
        s = e["s"] + inc
        if s <= 0.0:
            if e["s"] > 0.0:
                self._cusum[name] = self._empty_excursion()
            return
        if e["s"] <= 0.0:
            e.update(self._empty_excursion())
        e["s"] = s
        e["since"] = min(e["since"], ts)  # late labels: the oldest output in the excursion
        e["n"] += 1.0
        e["sw"] += w
        e["sg"] += w * gap
        e["sp"] += w * moved
        if s > self._h[name][0]:
            e["a"] = 1.0

    def _fit(self) -> None:
        arr = np.asarray(self._warmup, dtype=float)
        self._ref = ReferenceRelation(clip=self.clip, bootstrap=self.bootstrap).fit(
            arr[:, 0], arr[:, 1], arr[:, 2])
        self._warmup = []
        self._set_ks()
        self._weight_mean = self._ref.weight_mean_
        self._thresholds()

    def _thresholds(self) -> None:
        assert self._ref is not None
        self._h, self._allow = bank_thresholds(self._ref, self._ks, self.arl0, self.warn_ratio, self.span,
                                               self.slope_allowance)

    # -- verdict ---------------------------------------------------------------------------
    def _mapped(self, name: str) -> float:
        return level_scaled(self._cusum[name]["s"], self._h[name], self._h["level"])

    def verdict(self, now: float) -> Verdict:
        ref = self._ref
        if ref is None:
            return Verdict.warming(Estimates(samples=len(self._warmup), reference_pairs=self.reference_pairs,
                                             late_pairs_ignored=self._late))
        mapped = {name: self._mapped(name) for name in self._names if name in self._h}

        def level_of(name: str) -> int:
            e = self._cusum[name]
            s = e["s"]
            h, hw = self._h[name]
            return 2 if s > h or (e["a"] and s > 0) else 1 if s > hw else 0

        best = max(self._level_names, key=lambda name: mapped[name])
        other = max((n for n in OTHER_REASONS if n in mapped), key=lambda n: (level_of(n), mapped[n]))
        lvl, oth = self._cusum[best], self._cusum[other]
        level_code = max(level_of(name) for name in self._level_names)
        state_code = max(level_code, level_of(other))
        reason, trigger = "", lvl if mapped[best] >= mapped[other] else oth
        if state_code:
            # A step in the proxy briefly looks like lost co-movement to the slope test (its
            # centre lags); while a level test is also elevated, its reason is the better one.
            # Likewise for bending gains: the level test's reason says whether the proxy's rise
            # explains the gap; "gains_bending" is the early catch, the level test still quiet.
            if level_code >= 1:
                if level_code == state_code:  # the level CUSUM that crossed (the most on scale)
                    best = max((n for n in self._level_names if level_of(n) == state_code),
                               key=lambda name: mapped[name])
                trigger = lvl = self._cusum[best]
                # Decompose the gap seen during the excursion: the part explained by the
                # proxy having moved up (its predicted audit rose) vs the audit falling.
                moved, gap = lvl["sp"], lvl["sg"]
                reason = "proxy_inflated" if moved > 0 and moved >= 0.5 * gap else "audit_dropped"
            else:
                trigger, reason = oth, OTHER_REASONS[other]
        big, warn = self._h["level"]
        window, known = self._estimates(ref)
        known.update(
            warn_threshold=warn,
            level_statistic=max(mapped[name] for name in self._level_names),
            slope_statistic=mapped["slope"],
            curve_statistic=mapped.get("curve", math.nan),
            since=_finite(trigger["since"]) if trigger["s"] > 0 else math.nan,
            excursion_pairs=int(trigger["n"]),
            excursion_gap=_finite(trigger["sg"] / trigger["sw"]) if trigger["sw"] > 0 else math.nan,
        )
        return Verdict(STATES[state_code], statistic=max(mapped.values()), threshold=big, reason=reason,
                       estimates=DeferredEstimates(window, known),
                       eager=Estimates(samples=self._count, **known))

    def _estimates(self, ref: ReferenceRelation) -> tuple[DeferredWindow, dict[str, Any]]:
        """Window estimates (deferred, and shared until the window takes a pair) and the other facts."""
        cached = self._window_cache
        version = (self._counters["audited"], self._pos)  # moves with every pair the window takes
        if cached is None or cached[0] != version or cached[1] is not ref:
            cached = self._window_cache = (version, ref, DeferredWindow(ref, self._buf, self._pos, self._count))
        shift = math.nan if self._proxy_ewma is None else (self._proxy_ewma - ref.proxy_mean_) / ref.proxy_sd_
        return cached[2], {"reference_pairs": ref.n_, "rank_corr_reference": _finite(ref.rank_corr_),
                           "late_pairs_ignored": self._late, "proxy_shift": _finite(shift)}

    def reference_line(self) -> ReferenceLine | None:
        ref = self._ref
        return None if ref is None else ref.line(_f(self._baseline_ts))

    # -- lifecycle -------------------------------------------------------------------------
    def rebaseline(self, now: float) -> None:
        self._reset()
        self._baseline_ts = float(now)

    def _params(self) -> dict[str, Any]:
        return {"arl0": self.arl0, "reference_pairs": self.reference_pairs, "shift": self.shift,
                "warn_ratio": self.warn_ratio, "window": self.window, "slope_allowance": self.slope_allowance,
                "span": self.span, "clip": self.clip, "bootstrap": self.bootstrap, "binary_shift": self.binary_shift}

    def reference_info(self) -> ReferenceInfo | None:
        if self._ref is None:
            return None
        first, last = self._span if self._span else (None, None)
        return ReferenceInfo("imported" if self._origin == "imported" else "fitted", first, last)

    def pinned_reference(self) -> dict[str, Any] | None:
        if self._ref is None:
            return None
        return pin(self._params(), self._ref, self._ks, self._h, self._allow, self._span)

    def load_reference(self, pinned: dict[str, Any]) -> None:
        """Start as the fitting detector was right after its fit: the same line, CUSUM reference
        values, thresholds and allowances; statistics and window empty (see agent.detect.pinning)."""
        ref, ks, thresholds, allowance, span = unpin(pinned, self._params())
        self._reset()
        self._ref, self._ks, self._h, self._allow, self._span = ref, ks, thresholds, allowance, span
        self._weight_mean, self._origin = ref.weight_mean_, "imported"

    def sufficient_statistics(self) -> dict[str, float]:
        """Monotone sums: ``audited`` (audited outputs scored), ``samples`` (sum of their weights),
        weighted positive and negative parts of the residual (audit - prediction) and its square.
        Residual sum = positive - negative; a signed sum would not be a counter."""
        return dict(self._counters)

    def state_dict(self) -> dict[str, Any]:
        return {**self._state(), "window": [row.tolist() for row in ordered_window(self._buf, self._pos, self._count)]}

    def checkpoint_state(self) -> dict[str, Any]:
        """The window as the ring buffer it is: a checkpoint writes only the slots filled since the last."""
        return {**self._state(), "ring": Ring(self._buf, self._pos, self._count, int(self._counters["audited"]))}

    def _state(self) -> dict[str, Any]:  # everything but the window
        return {
            "version": 4,
            "params": self._params(),
            "fit_span": self._span,
            "origin": self._origin,
            "counters": dict(self._counters),
            "baseline_ts": _f(self._baseline_ts),
            "reference": self._ref.to_dict() if self._ref is not None else None,
            "warmup": [list(x) for x in self._warmup],
            "thresholds": {k: list(v) for k, v in self._h.items()},
            "allowance": {k: list(v) for k, v in self._allow.items()},
            "ks": dict(self._ks),
            "centre": self._centre,
            "weight_mean": self._weight_mean,
            "proxy_ewma": self._proxy_ewma,
            "late": self._late,
            "cusum": {k: {f: _f(v) for f, v in e.items()} for k, e in self._cusum.items()},
            "curve": self._curve.state_dict(),
            "spread": self._spread.state_dict(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        # 2: before 0/1 audits had their own level score; 3: before alarms held for the excursion
        if state.get("version") not in (2, 3, 4):
            raise ValueError(f"unknown detector state version: {state.get('version')!r}")
        self.__init__(**state["params"])  # type: ignore[misc]
        # "pairs" was the name of the audited-output count before version 0.2 (one word, one meaning)
        self._counters = {("audited" if k == "pairs" else k): float(v) for k, v in state["counters"].items()}
        bts = state["baseline_ts"]
        self._baseline_ts = -math.inf if bts is None else float(bts)
        ref = state["reference"]
        self._ref = ReferenceRelation.from_dict(ref) if ref is not None else None
        # Version 2 used shift / 2 everywhere; its thresholds were calibrated for that.
        self._ks = {k: float(v) for k, v in state["ks"].items()} if "ks" in state else {
            name: frac * self.shift / 2.0 for name, _, frac, _ in BANK}
        self._warmup = [[float(v) for v in x] for x in state["warmup"]]
        self._h = {k: [float(x) for x in v] for k, v in state["thresholds"].items()}
        self._allow = {k: [float(x) for x in v] for k, v in state["allowance"].items()}
        self._centre = float(state["centre"])
        self._weight_mean = float(state["weight_mean"])
        self._proxy_ewma = state["proxy_ewma"]
        self._late = int(state["late"])
        self._span, self._origin = state.get("fit_span"), state.get("origin", "fitted")  # absent from older states
        self._cusum = {k: {f: (math.inf if v is None else float(v)) for f, v in e.items()}
                       for k, e in state["cusum"].items()}
        self._curve.load_state(state.get("curve"))
        self._spread.load_state(state.get("spread"))
        for name in self._names:  # saved before the curvature test: an empty excursion, no threshold
            self._cusum.setdefault(name, self._empty_excursion())
        for name, e in self._cusum.items():  # version < 4: no latch; an excursion above h has one
            e.setdefault("a", 1.0 if name in self._h and e["s"] > self._h[name][0] else 0.0)
        self._pos, self._count = restore_window(self._buf, state)
