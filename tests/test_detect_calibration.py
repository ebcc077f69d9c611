"""Thresholds from an average run length: Siegmund's approximation and its extensions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agent.detect.calibration import arl, cusum_threshold, empirical_threshold, siegmund_log_rate


def test_siegmund_matches_the_one_sided_cusum_tables() -> None:
    # k = 0.5, h = 5: about 930 in control (twice the two-sided table's 465); about 10.4 at a
    # 1-sigma shift.
    in_control = math.exp(-siegmund_log_rate(0.0 - 0.5, 5.0)[0])
    shifted = math.exp(-siegmund_log_rate(1.0 - 0.5, 5.0)[0])
    assert in_control == pytest.approx(938, rel=0.01)
    assert shifted == pytest.approx(10.4, rel=0.02)


def test_brief_example_delay_for_half_sigma_at_arl_1000() -> None:
    h = cusum_threshold(1000.0, k=0.25)
    delay = math.exp(-siegmund_log_rate(0.5 - 0.25, h)[0])
    assert delay == pytest.approx(31, abs=1.5)


def test_threshold_inverts_arl() -> None:
    h = cusum_threshold(50_000.0, k=0.5, tau=0.07)
    assert arl(h, k=0.5, tau=0.07) == pytest.approx(50_000.0, rel=1e-3)


def test_estimation_error_raises_the_threshold() -> None:
    known = cusum_threshold(200_000.0, k=0.5, tau=0.0)
    estimated = [cusum_threshold(200_000.0, k=0.5, tau=t) for t in (0.05, 0.07, 0.1)]
    assert known < estimated[0] < estimated[1] < estimated[2]


@pytest.mark.slow
def test_empirical_threshold_agrees_with_gaussian_formula_on_gaussian_scores() -> None:
    scores = np.random.default_rng(0).normal(size=20_000)
    for arl0 in (1_000.0, 100_000.0):
        assert empirical_threshold(arl0, 0.5, scores, 0.07, overshoot=1.166) == pytest.approx(
            cusum_threshold(arl0, 0.5, 0.07), abs=0.4)


@pytest.mark.slow
def test_empirical_threshold_is_higher_for_skewed_scores() -> None:
    # Standardised failures of a 90% pass rate: rare large jumps toward alarm.
    rng = np.random.default_rng(1)
    fails = (rng.random(20_000) < 0.1).astype(float)
    skewed = (fails - fails.mean()) / fails.std()
    gaussian = rng.normal(size=20_000)
    assert empirical_threshold(10_000.0, 0.5, skewed) > empirical_threshold(10_000.0, 0.5, gaussian) + 1


def test_rejects_bad_arl() -> None:
    with pytest.raises(ValueError):
        cusum_threshold(1.0, 0.5)


def test_extrapolation_allowance_matches_the_rate_at_the_reference_mean() -> None:
    from agent.detect.calibration import expected_log_rate, extrapolation_allowance

    h, k, tau, slope_sd = 13.0, 0.5, 0.07, 0.07
    d = np.array([0.0, 0.5, 1.0, 2.0, 5.0])
    a = extrapolation_allowance(h, k, tau, slope_sd, d)
    assert a[0] == 0.0 and np.all(np.diff(a) > 0)
    base = expected_log_rate(h, k, tau)
    for dj, aj in zip(d[1:], a[1:], strict=True):
        assert expected_log_rate(h, k, math.hypot(tau, slope_sd * dj), float(aj)) == pytest.approx(base, abs=1e-3)
    # cheap near the reference (a 1-s.d. move costs ~0.05 s.d.), large far beyond it
    assert a[2] < 0.08 and a[4] > 0.6
