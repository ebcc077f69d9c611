"""The level tests' spread guard: a bounded audit whose spread grows while its mean relation holds
pages no one; a drop of the mean is still caught at once; the guard's state survives a checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agent.detect.decoupling import DecouplingDetector
from agent.detect.spread import SpreadGuard
from tests.test_detect_decoupling import ARL0, after, normal_proxy, run, stream


def bounded(spread_from: int) -> object:
    """A probability audit (Beta, mean 0.45 + 0.08 proxy) whose concentration falls from 20 to 5
    over the 2,500 pairs after ``spread_from`` (its s.d. grows ~1.7x) while the proxy climbs 3 s.d.
    over the same pairs: optimisation widens the spread, the mean relation holds."""
    def audit(t: np.ndarray, p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        mean = np.clip(0.45 + 0.08 * p, 0.02, 0.98)
        conc = 20.0 - 15.0 * np.minimum(after(t, spread_from) / 2500, 1.0)
        return rng.beta(mean * conc, (1 - mean) * conc)
    return audit


def test_a_bounded_audit_whose_spread_grows_raises_no_alarm() -> None:
    # Without the guard the level test pages on 2 of these 12 seeds (proxy_inflated).
    for seed in range(1, 13):
        pairs = stream(seed, 3000, lambda t, r: r.normal(size=len(t)) + 3.0 * after(t, 500) / 2500, bounded(500))
        alarm, verdict = run(DecouplingDetector(ARL0), pairs)
        assert alarm is None, (seed, alarm, verdict.reason)


def test_the_mean_of_a_bounded_audit_dropping_is_still_caught() -> None:
    def dropped(t: np.ndarray, p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        mean = np.clip(0.45 + 0.08 * p - np.where(t >= 600, 0.1, 0.0), 0.02, 0.98)
        return rng.beta(mean * 20.0, (1 - mean) * 20.0)
    alarm, verdict = run(DecouplingDetector(ARL0), stream(8, 2000, normal_proxy, dropped))
    assert alarm is not None and 600 <= alarm < 800, alarm
    assert verdict.reason == "audit_dropped"


def test_the_guard_leaves_an_in_control_score_alone_and_divides_a_wider_one_back() -> None:
    rng = np.random.default_rng(0)
    guard = SpreadGuard(fast=50, slow=200)
    calm = [z / guard.update(z) for z in rng.normal(size=2000)]
    assert np.std(calm) == pytest.approx(1.0, abs=0.05)  # factor 1 almost always: no delay in control
    wide = [z / guard.update(z) for z in 3.0 * rng.normal(size=2000)]
    assert np.std(wide[500:]) < 1.2  # three times the spread, read back near the reference's scale


def test_the_guard_rides_in_the_detector_state_and_older_states_load() -> None:
    pairs = stream(3, 900, normal_proxy, bounded(300))
    det = DecouplingDetector(ARL0)
    for obs in pairs[:700]:
        det.observe_pair(obs)
    state = json.loads(json.dumps(det.state_dict()))
    assert state["spread"]["var"] > 1.2  # the spread grew after pair 300
    again = DecouplingDetector(ARL0)
    again.load_state(state)
    for obs in pairs[700:]:
        det.observe_pair(obs)
        again.observe_pair(obs)
    assert again.state_dict() == det.state_dict()
    del state["spread"]  # saved before the guard existed: it starts from the reference's scale
    older = DecouplingDetector(ARL0)
    older.load_state(state)
    assert older.state_dict()["spread"] == {"mean": 0.0, "var": 1.0}
