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
restart: the sample is not persisted) everything is plausible.

>>> p = Plausibility(multiple=50)
>>> [p.check("thumbs", v) for v in [0.0, 1.0] * 20][-1]
True
>>> p.check("thumbs", 1e300), p.check("thumbs", 0.0), p.check("thumbs", -3.0)
(False, True, True)
"""

from __future__ import annotations

from collections import deque
from statistics import median

WINDOW = 512
MIN_VALUES = 20


class Plausibility:
    def __init__(self, multiple: float, window: int = WINDOW, min_values: int = MIN_VALUES) -> None:
        if multiple <= 0:
            raise ValueError("multiple must be positive")
        self.multiple = multiple
        self.window = window
        self.min_values = min_values
        self._samples: dict[str, deque[float]] = {}
        self._bounds: dict[str, tuple[float, float]] = {}  # refitted after window/16 new values
        self._added: dict[str, int] = {}

    def check(self, name: str, value: float, keep: bool = True) -> bool:
        """Whether ``value`` is plausible for metric ``name``; ``keep`` adds it to the sample."""
        sample = self._samples.setdefault(name, deque(maxlen=self.window))
        ok = True
        if len(sample) >= self.min_values:
            low, high = self._bounds.get(name) or self._fit(name, sample)
            ok = low <= value <= high
        if keep:
            sample.append(value)
            self._added[name] = added = self._added.get(name, 0) + 1
            if added >= max(1, self.window // 16) or len(sample) < self.window // 16:
                self._bounds.pop(name, None)
                self._added[name] = 0
        return ok

    def _fit(self, name: str, sample: deque[float]) -> tuple[float, float]:
        ordered = sorted(sample)
        mid = median(ordered)
        mad = median(abs(v - mid) for v in ordered)
        q_lo = ordered[int(0.01 * (len(ordered) - 1))]
        q_hi = ordered[round(0.99 * (len(ordered) - 1))]
        spread = max(1.4826 * mad, q_hi - q_lo, abs(mid)) or 1.0
        self._bounds[name] = bounds = (mid - self.multiple * spread, mid + self.multiple * spread)
        return bounds
