"""Peers as users run them, and the oracle. Each is a function: stream -> alarm indices.

An alarm index is the position (in arrival order) of a pair at which the method fires.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from river import drift
from scipy.stats import spearmanr, wasserstein_distance

from agent.detect.base import PairObservation
from agent.detect.calibration import cusum_threshold
from agent.detect.decoupling import DecouplingDetector
from bench.scenarios import REF, Stream, Truth

ARL0 = 200_000.0  # one pair, default 100,000 audits between false alarms: 2 * 1 * 100,000
WINDOW = 200
SETTINGS: dict[str, Any] = {}  # goodhart-agent hyper-parameters (defaults when empty)


def goodhart_agent(s: Stream, truth: Truth) -> list[int]:
    """Our detector, ticked after every pair; an alarm is a transition into state alarm."""
    det = DecouplingDetector(ARL0, **SETTINGS)
    out, alarming = [], False
    for i in range(len(s.proxy)):
        det.observe_pair(PairObservation(float(s.ts[i]), float(s.proxy[i]), float(s.audit[i]),
                                         float(s.weight[i])))
        now = det.verdict(float(s.ts[i])).state == "alarm"
        if now and not alarming:
            out.append(i)
        alarming = now
    return out


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
    if truth.logistic:
        mean = 1 / (1 + np.exp(-mean))
    z = (s.audit - mean) / truth.sigma
    if truth.score == "slope":
        x = (s.proxy - s.proxy[:REF].mean()) / s.proxy[:REF].std()
        z = z * x
    k = truth.shift / 2
    h = cusum_threshold(ARL0, k)
    out, stat = [], 0.0
    for i in range(REF, len(z)):
        stat = max(0.0, stat - float(z[i]) - k)
        if stat > h:
            out.append(i)
            stat = 0.0
    return out


METHODS = {
    "goodhart-agent": goodhart_agent,
    "oracle CUSUM": oracle,
    "ADWIN proxy": adwin_proxy,
    "ADWIN audit": adwin_audit,
    "ADWIN residual": adwin_residual,
    "PH proxy": ph_proxy,
    "PH audit": ph_audit,
    "PH residual": ph_residual,
    "Wasserstein proxy": wasserstein_proxy,
    "corr < 0.3": static_correlation,
}
