"""A history row reads only the gap of a verdict's window; that part equals the full estimates'."""

from __future__ import annotations

import math

import numpy as np

from agent.bank import HISTORY_FIELDS
from agent.detect.base import PairObservation, Verdict
from agent.detect.decoupling import DecouplingDetector
from agent.detect.window import ordered_window


def _verdicts(steps: int) -> list[tuple[Verdict, Verdict]]:
    """Pairs of verdicts of two identical detectors at the same moments (one read partly, one fully)."""
    rng = np.random.default_rng(11)
    one, two = DecouplingDetector(arl0=10_000, window=50), DecouplingDetector(arl0=10_000, window=50)
    out = []
    for t in range(steps):
        p = rng.normal()
        obs = PairObservation(ts=float(t), proxy=p, audit=0.5 * p + rng.normal(scale=0.5), weight=1.0 + t % 3)
        one.observe_pair(obs)
        two.observe_pair(obs)
        if t % 7 == 0:
            out.append((one.verdict(float(t)), two.verdict(float(t))))
    return out


def test_the_history_part_of_the_estimates_equals_the_full_estimates_through_the_window_wrapping() -> None:
    names = frozenset(HISTORY_FIELDS)
    checked = 0
    for partly, fully in _verdicts(700):
        if fully.warming_up:
            continue
        part, full = partly.estimated(names), fully.estimates
        for name in HISTORY_FIELDS:
            assert getattr(part, name) == getattr(full, name) or (
                math.isnan(getattr(part, name)) and math.isnan(getattr(full, name))), name
        assert part.rank_corr_window is None  # not computed: the history does not plot it
        assert partly.estimates == full  # a full read after the part: the same estimates
        checked += 1
    assert checked > 40


def test_asking_for_a_ranked_field_computes_the_full_estimates() -> None:
    verdict = _verdicts(300)[-1][0]
    assert verdict.estimated(frozenset({"rank_corr_window"})) == verdict.estimates
    assert math.isfinite(verdict.estimates.rank_corr_window)


def test_the_window_ring_is_read_oldest_first_at_every_position() -> None:
    buf = np.arange(4 * 7, dtype=float).reshape(4, 7)
    for pos in range(7):
        assert (ordered_window(buf, pos, 7) == np.roll(buf, -pos, axis=1)).all()
    for count in range(7):  # not yet full: filled from slot 0, the next slot is ``count``
        assert (ordered_window(buf, count, count) == buf[:, :count]).all()
