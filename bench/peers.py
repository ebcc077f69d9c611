"""Peers as users run them, and the oracle. Each is a function: stream -> alarm indices.

An alarm index is the position (in arrival order) of a pair at which the method fires.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from river import drift
from scipy.stats import spearmanr, wasserstein_distance

from agent.detect.base import Detector, PairObservation
from agent.detect.calibration import cusum_threshold
from agent.detect.decoupling import DecouplingDetector
from agent.detect.pooled import PooledDetector
from bench.scenarios import REF, Stream, Truth

ARL0 = 200_000.0  # one pair, default 100,000 audits between false alarms: 2 * 1 * 100,000
WINDOW = 200
SETTINGS: dict[str, Any] = {}  # goodhart-agent hyper-parameters (defaults when empty)


def goodhart_agent(s: Stream, truth: Truth, pooled: bool = True) -> list[int]:
    """Our detector, ticked after every pair; an alarm is a transition into state alarm of the
    whole-stream test or (segmented cases) of any segment's test, fed as agent/bank.py feeds them."""
    make = PooledDetector if pooled else DecouplingDetector
    star = make(ARL0, **SETTINGS)
    tests: dict[str, Detector] = {}
    alarming: dict[str, bool] = {}
    out: list[int] = []

    def tick(name: str, det: Detector, i: int) -> None:
        now = det.verdict(float(s.ts[i])).state == "alarm"
        if now and not alarming.get(name, False) and (not out or out[-1] != i):
            out.append(i)
        alarming[name] = now

    for i in range(len(s.proxy)):
        seg = None if s.segment is None else str(s.segment[i])
        obs = PairObservation(float(s.ts[i]), float(s.proxy[i]), float(s.audit[i]), float(s.weight[i]), seg)
        star.observe_pair(obs)
        tick("*", star, i)
        if seg is None:
            continue
        det = tests.setdefault(seg, make(ARL0, **SETTINGS))
        fitted = det.reference_info() is not None
        if not fitted and star.pools_segments:
            pinned = star.segment_reference(seg)
            if pinned is None:
                continue
            det.adopt_reference(pinned)
        det.observe_pair(obs)
        tick(seg, det, i)
    return out


def goodhart_unpooled(s: Stream, truth: Truth) -> list[int]:
    """The detector before issue #14: each segment fits its own first 200 pairs, ``*`` one line."""
    return goodhart_agent(s, truth, pooled=False)


def _river(make: type, xs: np.ndarray, start: int = 0) -> list[int]:
    det = make()
    out = []
    for i in range(start, len(xs)):
        det.update(float(xs[i]))
        if det.drift_detected:
            out.append(i)
    return out


def _residuals(s: Stream) -> np.ndarray:
    b, a = np.polyfit(s.proxy[:REF], s.audit[:REF], 1)
    return s.audit - (a + b * s.proxy)


def adwin_proxy(s: Stream, truth: Truth) -> list[int]:
    return _river(drift.ADWIN, s.proxy)


def adwin_audit(s: Stream, truth: Truth) -> list[int]:
    return _river(drift.ADWIN, s.audit)


def adwin_residual(s: Stream, truth: Truth) -> list[int]:
    return _river(drift.ADWIN, _residuals(s), REF)


def ph_proxy(s: Stream, truth: Truth) -> list[int]:
    return _river(drift.PageHinkley, s.proxy)


def ph_audit(s: Stream, truth: Truth) -> list[int]:
    return _river(drift.PageHinkley, s.audit)


def ph_residual(s: Stream, truth: Truth) -> list[int]:
    return _river(drift.PageHinkley, _residuals(s), REF)


def wasserstein_proxy(s: Stream, truth: Truth, every: int = 10) -> list[int]:
    """Evidently-style: Wasserstein distance of the last 200 proxies to the reference, over
    the reference s.d., above 0.1 (checked every 10 pairs)."""
    ref = s.proxy[:REF]
    sd = float(ref.std())
    out, on = [], False
    for i in range(REF + WINDOW - 1, len(s.proxy), every):
        now = wasserstein_distance(ref, s.proxy[i - WINDOW + 1 : i + 1]) / sd > 0.1
        if now and not on:
            out.append(i)
        on = now
    return out


def static_correlation(s: Stream, truth: Truth, every: int = 10, floor: float = 0.3) -> list[int]:
    """Alarm when the Spearman correlation of the last 200 pairs falls below 0.3."""
    out, on = [], False
    for i in range(REF + WINDOW - 1, len(s.proxy), every):
        rho = spearmanr(s.proxy[i - WINDOW + 1 : i + 1], s.audit[i - WINDOW + 1 : i + 1]).statistic
        now = bool(rho < floor) if math.isfinite(rho) else False
        if now and not on:
            out.append(i)
        on = now
    return out


def oracle(s: Stream, truth: Truth) -> list[int]:
    """One-sided CUSUM on the score the change moves, with the TRUE pre-change line, noise
    and shift: k = shift / 2, threshold from Siegmund's approximation at ARL0 (no estimation)."""
    mean = truth.intercept + truth.slope * s.proxy
    if s.segment is not None and s.offset is not None:  # each segment's own CUSUM on its true line
        hits: set[int] = set()
        for seg in sorted(set(s.segment.tolist())):
            at = np.flatnonzero(s.segment == seg)
            part = Stream(s.ts[at], s.proxy[at], s.audit[at], s.weight[at])
            hits.update(int(at[j]) for j in _oracle_cusum(part, mean[at] + s.offset[at], truth, start=int(
                np.searchsorted(at, REF))))
        return sorted(hits)
    return _oracle_cusum(s, mean, truth)


def _oracle_cusum(s: Stream, mean: np.ndarray, truth: Truth, start: int = REF) -> list[int]:
    if truth.logistic:
        mean = 1 / (1 + np.exp(-mean))
    z = (s.audit - mean) / truth.sigma
    if truth.score == "slope":
        x = (s.proxy - s.proxy[:REF].mean()) / s.proxy[:REF].std()
        z = z * x
    k = truth.shift / 2
    h = cusum_threshold(ARL0, k)
    out, stat = [], 0.0
    for i in range(start, len(z)):
        stat = max(0.0, stat - float(z[i]) - k)
        if stat > h:
            out.append(i)
            stat = 0.0
    return out


METHODS = {
    "goodhart-agent": goodhart_agent,
    "oracle CUSUM": oracle,
    "goodhart-agent unpooled": goodhart_unpooled,
    "ADWIN proxy": adwin_proxy,
    "ADWIN audit": adwin_audit,
    "ADWIN residual": adwin_residual,
    "PH proxy": ph_proxy,
    "PH audit": ph_audit,
    "PH residual": ph_residual,
    "Wasserstein proxy": wasserstein_proxy,
    "corr < 0.3": static_correlation,
}
