"""Values so far outside what a metric has shown that they are input errors, not quality.

Non-finite numbers are rejected when a record is parsed; a finite absurdity (1e300, -1e308) is
not, and one of them in the CUSUM's input pages the on-call, or, in the reference period, pins
the fitted spread so that no later change is ever seen. :class:`Plausibility` keeps a sliding
sample of each metric's recent values and calls a value implausible when it lies more than
``multiple`` robust spreads from their median. The spread is the largest of 1.4826·MAD, the
1st-99th percentile range and ``|median|`` (so 0/1 audits, whose MAD is often 0, and constant
metrics keep a sensible scale; 1.0 when all of them are 0). Every value joins the sample, also an
implausible one: one value moves none of these, and a genuine shift of the metric becomes the norm
once it is more than 1% of the sample. Until ``min_values`` values were seen (also after a
restart: the sample is not persisted) everything is plausible. The bounds are refitted after every
``window // 16`` new values (on a sort of the sample in numpy).

>>> p = Plausibility(multiple=50)
>>> [p.check("thumbs", v) for v in [0.0, 1.0] * 20][-1]
True
>>> p.check("thumbs", 1e300), p.check("thumbs", 0.0), p.check("thumbs", -3.0)
(False, True, True)
"""

from __future__ import annotations

import numpy as np

WINDOW = 512
MIN_VALUES = 20


class _Sample:
    """One metric's recent values, a ring whose oldest value the next one overwrites (order does
    not matter to the bounds), and the bounds fitted on them (None: refit before the next check)."""

    __slots__ = ("added", "bounds", "pos", "size", "values")

    def __init__(self, window: int) -> None:
        self.values = np.empty(window)
        self.size = self.pos = self.added = 0
        self.bounds: tuple[float, float] | None = None

    def append(self, value: float) -> None:
        values = self.values
        values[self.pos] = value
        self.pos = (self.pos + 1) % len(values)
        self.size = min(self.size + 1, len(values))


class Plausibility:
    def __init__(self, multiple: float, window: int = WINDOW, min_values: int = MIN_VALUES) -> None:
        if multiple <= 0:
            raise ValueError("multiple must be positive")
        if window < 1:
            raise ValueError("window must be at least 1")
        self.multiple = multiple
        self.window = window
        self.min_values = min_values
        self._refit_every = max(1, window // 16)  # new values between fits, once the sample has that many
        self._samples: dict[str, _Sample] = {}

    def check(self, name: str, value: float, keep: bool = True) -> bool:
        """Whether ``value`` is plausible for metric ``name``; ``keep`` adds it to the sample."""
        sample = self._samples.get(name)
        if sample is None:
            sample = self._samples[name] = _Sample(self.window)
        ok = True
        if sample.size >= self.min_values:
            low, high = sample.bounds or self._fit(sample)
            ok = low <= value <= high
        if keep:
            sample.append(value)
            sample.added += 1
            if sample.added >= self._refit_every or sample.size < self._refit_every:
                sample.bounds, sample.added = None, 0
        return ok

    def _fit(self, sample: _Sample) -> tuple[float, float]:
        mid, spread = robust_scale(sample.values[: sample.size])
        sample.bounds = bounds = (mid - self.multiple * spread, mid + self.multiple * spread)
        return bounds


def _median(ordered: np.ndarray) -> float:
    """``statistics.median`` of values already sorted: the same middle values, the same sum."""
    n = len(ordered)
    if n % 2:
        return float(ordered[n // 2])
    return (float(ordered[n // 2 - 1]) + float(ordered[n // 2])) / 2


def robust_scale(values: np.ndarray) -> tuple[float, float]:
    """(median, spread) of a non-empty sample: the spread is the largest of 1.4826·MAD, the
    1st-99th percentile range and ``|median|``, 1.0 when all of them are 0."""
    ordered = np.sort(values)
    n = len(ordered)
    mid = _median(ordered)
    mad = _median(np.sort(np.abs(ordered - mid)))
    q_lo = float(ordered[int(0.01 * (n - 1))])
    q_hi = float(ordered[round(0.99 * (n - 1))])
    return mid, max(1.4826 * mad, q_hi - q_lo, abs(mid)) or 1.0
