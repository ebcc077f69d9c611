"""The CUSUMs of one decoupling test: which there are, their thresholds, their extrapolation allowances.

Pure functions of a fitted :class:`~agent.detect.reference.ReferenceRelation` and the test's
false-alarm budget; :class:`~agent.detect.decoupling.DecouplingDetector` keeps the results.
"""

from __future__ import annotations

import math

import numpy as np

from agent.detect.calibration import empirical_threshold, extrapolation_allowance
from agent.detect.reference import ReferenceRelation

# Overshoot constant in Siegmund's corrected threshold: 1.166 for Gaussian increments; a
# quarter of it, because the tails a few hundred reference pairs show understate the jumps.
OVERSHOOT = 0.3
# The CUSUMs of one test: (name, kind, design shift as a fraction of ``shift``, share of the
# test's false-alarm rate; the shares add to 1). The level test gets most of the budget: it
# carries every case but "relation lost". More level CUSUMs with smaller design shifts can be
# listed here (each with its own share); with an estimated reference they do not pay: the
# rate averaged over the reference's bias (s.d. ~0.07) is dominated by references biased by
# 2-3 s.d. of it, which costs a CUSUM with k = 0.3 a threshold of ~27 against ~13 for k = 0.5,
# and the bench's sub-1-s.d. shifts came out slower with such a bank than without it.
# The curvature test (:mod:`agent.detect.curvature`) takes a twentieth, from the level test's
# share, and is designed for half the shift (its increments are a change of the residual, and its
# evidence builds while the gains bend, before the level test's gap opens). With a tenth (level
# 0.7) one bench seed of the resolution-time case was 28 audits slower; with 0.05 it is 2.
BANK: tuple[tuple[str, str, float, float], ...] = (
    ("level", "level", 1.0, 0.75),
    ("slope", "slope", 1.0, 0.2),
    ("curve", "curve", 0.5, 0.05),
)
# The tests besides the level test, and the reason each gives when it decides the state.
OTHER_REASONS = {"slope": "relation_lost", "curve": "gains_bending"}
CURVE_SLOW = 16  # the curvature test's slow EWMAs span this many times the detector's ``span``
# Allowance table: distances of recent proxies from the reference mean, in reference s.d.
GRID_STEP = 0.25
GRID = np.arange(0.0, 8.0 + GRID_STEP / 2, GRID_STEP)


def allowance_at(table: list[float], d: float) -> float:
    """Piecewise-linear lookup on the allowance grid, extrapolated linearly past its end."""
    x = d / GRID_STEP
    last = len(table) - 1
    i = min(int(x), last - 1)
    return table[i] + (x - i) * (table[i + 1] - table[i])


def level_scaled(s: float, own: list[float], level: list[float]) -> float:
    """A CUSUM ``s`` with thresholds ``own`` (alarm, warn) on the primary level test's scale
    (``level``): piecewise linear through (0, 0), (own warn, level warn) and (own alarm, level
    alarm), so that one statistic, one threshold and one warn threshold read every CUSUM exactly."""
    h, hw = own
    big, warn = level
    if s <= hw:
        return s * warn / hw
    if s <= h:
        return warn + (s - hw) * (big - warn) / (h - hw)
    return big + (s - h) * big / h


def design_ks(shift: float, level_k: float | None = None) -> dict[str, float]:
    """Each CUSUM's reference value: its share (``BANK``'s fraction) of half the design shift;
    ``level_k`` replaces that half for the level tests (a 0/1 audit's pass-rate drop)."""
    return {name: frac * (level_k if level_k is not None and kind == "level" else shift / 2.0)
            for name, kind, frac, _ in BANK}


def bank_thresholds(ref: ReferenceRelation, ks: dict[str, float], arl0: float, warn_ratio: float, span: float,
                    slope_allowance: float) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """(alarm and warn threshold by CUSUM, allowance table by level CUSUM).

    Each CUSUM gets its share of the test's false-alarm rate (``share / arl0``; the shares add to
    1, so the rates add to the test's budget), its own threshold, and each level CUSUM its
    allowance table for extrapolation.
    """
    var_centre = 1.0 / span  # EWMA noise in the slope score's centring, ~alpha/(2-alpha)
    # The spread of future scores is averaged over for the slope test only: that is where a
    # mis-estimated spread was shown to break the budget (a steep reference line widens the
    # slope scores); on the level test it cost delay without a measured budget gain.
    scores = {"level": (ref.level_scores_ * ref.level_inflation_, ref.level_tau_, 0.0, 0.0),
              "slope": (ref.slope_scores_ * ref.slope_inflation_ * math.sqrt(1 + var_centre), ref.slope_tau_,
                        ref.slope_scale_sd_, ref.slope_scale_corr_),
              # The curvature increments are the level scores less their slow mean, over their own
              # running spread: the reference's bias cancels, the slow mean's error remains.
              "curve": (ref.level_scores_, math.sqrt(1.0 / (CURVE_SLOW * span)), 0.0, 0.0)}
    thresholds: dict[str, list[float]] = {}
    allowances: dict[str, list[float]] = {}
    for name, kind, _frac, share in BANK:
        x, tau, scale_sd, corr = scores[kind]
        k = ks[name]
        h = empirical_threshold(arl0 / share, k, x, tau, OVERSHOOT, scale_sd, corr)
        warn_arl = max(warn_ratio * arl0 / share, 2.0)
        thresholds[name] = [h, min(h, empirical_threshold(warn_arl, k, x, tau, OVERSHOOT, scale_sd, corr))]
        if kind == "level":
            allowances[name] = extrapolation_allowance(h, k, tau, slope_allowance * ref.slope_sd_, GRID).tolist()
    return thresholds, allowances
