"""The plausibility bounds kept in a numpy ring equal the formula they replaced (sorted deque,
``statistics.median``), value for value, also once the window has evicted its first values."""

from __future__ import annotations

import random
from collections import deque
from statistics import median

import numpy as np
import pytest

from agent.detect.plausible import Plausibility, robust_scale


def _formula(sample: deque[float] | list[float], multiple: float) -> tuple[float, float]:
    """The bounds as first written: a sorted copy, statistics.median twice."""
    ordered = sorted(sample)
    mid = median(ordered)
    mad = median(abs(v - mid) for v in ordered)
    q_lo = ordered[int(0.01 * (len(ordered) - 1))]
    q_hi = ordered[round(0.99 * (len(ordered) - 1))]
    spread = max(1.4826 * mad, q_hi - q_lo, abs(mid)) or 1.0
    return mid - multiple * spread, mid + multiple * spread


def _draw(rng: random.Random, kind: str, i: int) -> float:
    if kind == "normal":
        return rng.gauss(3.0, 2.0)
    if kind == "binary":
        return float(rng.random() < 0.2)
    if kind == "shifted":
        return rng.lognormvariate(0.0, 2.0) * (1.0 if i < 700 else 1000.0)
    if rng.random() < 0.005:
        return rng.choice([1e300, -1e308])
    return rng.choice([0.0, -0.0, -3.0, 2.5, 2.5])


class _Formula:
    """The check as first written (deque per metric, bounds refitted by _formula every window/16 values)."""

    def __init__(self, multiple: float, window: int) -> None:
        self.multiple, self.window = multiple, window
        self.sample: deque[float] = deque(maxlen=window)
        self.bounds: tuple[float, float] | None = None
        self.added = 0

    def check(self, value: float, keep: bool) -> bool:
        ok = True
        if len(self.sample) >= 20:
            self.bounds = self.bounds or _formula(self.sample, self.multiple)
            ok = self.bounds[0] <= value <= self.bounds[1]
        if keep:
            self.sample.append(value)
            self.added += 1
            if self.added >= max(1, self.window // 16) or len(self.sample) < self.window // 16:
                self.bounds, self.added = None, 0
        return ok


@pytest.mark.parametrize("kind", ["normal", "binary", "shifted", "absurd"])
@pytest.mark.parametrize("window", [512, 40, 7])
def test_bounds_equal_the_sorted_median_formula_through_eviction(kind: str, window: int) -> None:
    rng = random.Random(f"{kind}-{window}")
    plausibility, formula = Plausibility(multiple=50, window=window), _Formula(50, window)
    fits = implausible = 0
    for i in range(1500):
        value, keep = _draw(rng, kind, i), rng.random() < 0.8
        ok = plausibility.check("m", value, keep=keep)
        assert ok == formula.check(value, keep), i
        assert plausibility._samples["m"].bounds == formula.bounds, i
        fits += formula.bounds is not None  # checked against fitted bounds
        implausible += not ok
    assert fits > 500 or window < 20  # compared through many refits and evictions (7 never holds 20 values)
    if kind == "absurd" and window >= 20:
        assert implausible > 0


def test_robust_scale_is_the_formulas_median_and_spread_on_even_and_odd_samples() -> None:
    rng = random.Random(5)
    for n in (1, 2, 3, 20, 511, 512):
        values = [rng.gauss(0.0, 1.0) for _ in range(n)]
        low, high = _formula(values, 1.0)
        mid, spread = robust_scale(np.array(values))
        assert (mid - spread, mid + spread) == (low, high)
