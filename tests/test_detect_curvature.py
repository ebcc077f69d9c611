"""The curvature test: gains per proxy unit bending below the reference's (issue #14, point 4)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agent.detect.base import PairObservation
from agent.detect.curvature import CurvatureTrack
from agent.detect.decoupling import DecouplingDetector
from tests.test_detect_decoupling import ARL0, REF, after, run, stream


def bending(t: np.ndarray) -> np.ndarray:
    return 3.0 * after(t, 500) / 1500  # optimisation pressure from pair 500


def test_gains_bending_under_a_surplus_alarm_with_their_own_reason() -> None:
    # The reference promised 0.3 per proxy unit; under optimisation the audit first gains 0.6
    # per unit (a surplus the level test cannot see), then bends: d - d^2 / 4 scaled, peak at d = 2.
    def audit(t: np.ndarray, p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        d = bending(t)
        return 0.3 * (p - d) + 0.6 * (d - d * d / 4) + rng.normal(scale=0.3, size=len(t))

    reasons = []
    for seed in range(3):
        i, v = run(DecouplingDetector(ARL0), stream(40 + seed, 2200, lambda t, r: bending(t) + r.normal(size=len(t)),
                                                    audit))
        assert i is not None and 500 < i < 1800, (seed, i)  # the audit peaks at 1500
        reasons.append(v.reason)
    assert "gains_bending" in reasons


@pytest.mark.parametrize("extra", [0.0, 0.3], ids=["same line", "steeper"])
def test_improvement_along_the_reference_line_or_a_steeper_one_keeps_the_curvature_test_quiet(extra: float) -> None:
    def audit(t: np.ndarray, p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return 0.6 * p + extra * bending(t) + rng.normal(scale=0.8, size=len(t))

    for seed in range(3):
        det = DecouplingDetector(ARL0)
        worst = 0.0
        for obs in stream(60 + seed, 3000, lambda t, r: 2 * bending(t) + r.normal(size=len(t)), audit):
            det.observe_pair(obs)
            if det._ref is not None:
                worst = max(worst, det._cusum["curve"]["s"] / det._h["curve"][0])
        assert worst < 1.0, (seed, worst)


def test_a_bounded_audit_whose_spread_grows_does_not_read_as_bending_gains() -> None:
    # The level score's spread triples; the increments are read on their own running spread.
    rng = np.random.default_rng(5)
    track, s, peak = CurvatureTrack(slow=1600, fast=100), 0.0, 0.0
    for t in range(4000):
        d = 3.0 * max(t - 500, 0) / 3500
        z = rng.normal() * (1.0 if t < 500 else 3.0)
        inc = track.update(z, d + rng.normal())
        s = max(0.0, s + inc - 0.25) if inc is not None else s
        peak = max(peak, s)
    assert peak < 20.0  # its threshold at the default budget is ~27


def test_the_curvature_state_round_trips_and_states_from_before_it_load() -> None:
    pairs = stream(7, 900, lambda t, r: bending(t) + r.normal(size=len(t)),
                   lambda t, p, r: 0.6 * p + r.normal(scale=0.8, size=len(t)))
    det = DecouplingDetector(ARL0)
    for obs in pairs[:700]:
        det.observe_pair(obs)
    state = json.loads(json.dumps(det.state_dict()))
    again = DecouplingDetector(ARL0)
    again.load_state(state)
    for obs in pairs[700:]:
        det.observe_pair(obs)
        again.observe_pair(obs)
        assert again.verdict(obs.ts) == det.verdict(obs.ts)
    # A state saved before the curvature test: no threshold, no excursion, no EWMAs.
    del state["curve"], state["thresholds"]["curve"], state["ks"]["curve"], state["cusum"]["curve"]
    old = DecouplingDetector(ARL0)
    old.load_state(state)
    for obs in pairs[700:]:
        old.observe_pair(obs)
    v = old.verdict(pairs[-1].ts)
    assert v.state != "warn" or not v.warming_up
    assert v.estimates.curve_statistic is not None and np.isnan(v.estimates.curve_statistic)


def test_the_curvature_test_takes_its_share_of_the_budget() -> None:
    from agent.detect.cusums import BANK

    shares = {name: share for name, _, _, share in BANK}
    assert shares["curve"] > 0 and sum(shares.values()) == pytest.approx(1.0)
    det = DecouplingDetector(ARL0)
    for obs in stream(3, REF, lambda t, r: r.normal(size=len(t)),
                      lambda t, p, r: 0.6 * p + r.normal(scale=0.8, size=len(t))):
        det.observe_pair(PairObservation(obs.ts, obs.proxy, obs.audit))
    h, hw = det._h["curve"]
    assert np.isfinite(h) and 0 < hw <= h


@pytest.mark.slow
@pytest.mark.parametrize("noise", ["gaussian", "bounded"])
def test_a_proxy_rising_along_the_line_keeps_the_false_alarm_budget(noise: str) -> None:
    # The null the curvature test is exposed to: the proxy keeps rising (its gate is open) and
    # the audit follows the reference line. Small arl0 so the count means something; the
    # curvature CUSUM's own crossings are held to its share (a twentieth), all alarms to the budget.
    arl0, n, reps = 1_000.0, 6_000, 6
    curve_share = 0.05
    alarms = crossings = pairs = 0
    for rep in range(reps):
        rng = np.random.default_rng(300 + rep)
        t = np.arange(n, dtype=float)
        p = rng.normal(size=n) + 4.0 * t / n
        if noise == "gaussian":
            a = 0.6 * p + rng.normal(scale=0.8, size=n)
        else:  # a probability whose spread doubles halfway
            mean = np.clip(0.3 + 0.08 * p, 0.02, 0.98)
            conc = np.where(t < n / 2, 20.0, 5.0)
            a = rng.beta(mean * conc, (1 - mean) * conc)
        det = DecouplingDetector(arl0)
        alarming, above = False, False
        for i in range(n):
            det.observe_pair(PairObservation(float(i), float(p[i]), float(a[i])))
            now = det.verdict(float(i)).state == "alarm"
            alarms += now and not alarming
            alarming = now
            if det._ref is not None:
                pairs += 1
                up = det._cusum["curve"]["s"] > det._h["curve"][0]
                crossings += up and not above
                above = up
    print(noise, "alarms", alarms, "curve crossings", crossings, "pairs", pairs,
          "budget", pairs / arl0, "curve budget", curve_share * pairs / arl0)
    assert crossings <= curve_share * pairs / arl0 * 1.5 + 1
    if noise == "gaussian":  # the bounded stream's level test is not spread-robust (see docs)
        assert alarms <= pairs / arl0
