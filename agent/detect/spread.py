"""The level tests' guard against a wider spread: a level score read on the residuals' current
scale once their spread has grown past the reference's.

A bounded audit (a probability) changes its spread under optimisation while its mean relation to
the proxy holds; a CUSUM calibrated for unit-variance scores then reads the extra variance as
evidence and false-alarms (docs/detection.md, "bounded audit, spread grows"). The guard keeps a
fast EWMA of the level score (span ``fast``) and a slower EWMA of the squared deviations from it
(span ``slow``); ``update`` returns the factor ``max(1, sd / margin)`` the pair's level score is
divided by. In control the estimate wanders around 1 and the factor stays 1; a spread grown by
more than ``margin`` is divided back down. The factor comes from the pairs before the current
one, and it only ever shrinks scores, so the calibration (unit variance) stays conservative. A
shift of the mean inflates the estimate only while the fast mean catches up.

Not guarded: 0/1 audits (their variance moves with their mean, so a pass-rate drop would be read
as a wider spread) and the slope test (a proxy turned into noise *is* a wider residual spread:
guarding it cost that case 4 of 10 detections in the bench). An abrupt jump of the spread still
reaches the level test for the dozen pairs the estimate needs to follow it.

>>> guard = SpreadGuard(fast=50, slow=200)
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> calm = [z / guard.update(z) for z in rng.normal(size=500)]
>>> round(guard.factor, 2)
1.0
>>> wide = [z / guard.update(z) for z in 2.0 * rng.normal(size=1000)]  # twice the spread
>>> round(guard.factor * guard.margin, 1)
2.0
"""

from __future__ import annotations

import math
from typing import Any


class SpreadGuard:
    """``update(z)`` takes a pair's level score and returns the factor to divide its scores by."""

    def __init__(self, fast: int, slow: int, margin: float = 1.1) -> None:
        self.fast, self.slow, self.margin = int(fast), int(slow), float(margin)
        self.mean, self.var = 0.0, 1.0  # the reference's level scores: mean 0, variance 1

    @property
    def factor(self) -> float:
        return max(1.0, math.sqrt(self.var) / self.margin)

    def update(self, z: float) -> float:
        factor = self.factor
        d = z - self.mean
        self.mean += 2.0 / (self.fast + 1) * d
        self.var += 2.0 / (self.slow + 1) * (d * d - self.var)
        return factor

    def state_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "var": self.var}

    def load_state(self, state: dict[str, Any] | None) -> None:
        """Restore; a state saved before the guard existed starts from the reference's scale."""
        self.mean, self.var = (0.0, 1.0) if not state else (float(state["mean"]), float(state["var"]))
