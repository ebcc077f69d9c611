"""The curvature test's increments: the audit's gain per unit of proxy falling below the reference's.

Over-optimisation bends before it breaks (Gao et al. 2022): under growing optimisation pressure
the audit first rises with the proxy, its gain per proxy unit then shrinks, the audit peaks and
falls while the proxy keeps climbing. The level test watches the residual against the
*reference* line, so while the early gains sit on or above the line it has nothing to see; it
fires once the audit has fallen below the extrapolated line.

This test watches the *change* of the residual instead. Each audited pair's level score ``z``
(its standardised residual against the reference line, unit variance on the reference) is
compared with a slow EWMA of the recent scores (span ``slow``): ``d = z - zbar``. A residual
that keeps its level, whatever it is (a surplus, a biased reference), gives ``d`` centred on 0; an
audit whose gain per proxy unit falls below the reference slope ``b`` while the proxy rises by
``dp`` pulls the residual down by ``(b - g) dp``, so ``d`` turns negative. Genuine improvement
along the reference line (``g = b``) or a steeper one (``g > b``) keeps ``d`` at or above 0.

Two guards make it a test of *gains under optimisation* and keep its calibration:

* **proxy rising**: a pair counts only while the proxy's fast EWMA (span ``fast``) is above its
  slow EWMA by ``gate`` reference s.d. (an audit drop with a flat proxy is the level test's
  case). Skipping pairs by a rule that does not look at the audit cannot raise the false-alarm
  rate per pair.
* **own spread**: ``d`` is divided by a fast EWMA (span ``fast``) of its own spread (mean absolute
  deviation times sqrt(pi / 2)), so a bounded audit (a probability) whose spread changes under
  optimisation is read on its own current scale and a wider spread does not look like evidence.

The CUSUM itself (``S = max(0, S - d / spread - k)``), its threshold and its share of the test's
false-alarm budget live in :mod:`agent.detect.cusums` and :mod:`agent.detect.decoupling` with
the other tests'. In control ``zbar`` is off the true mean by ~N(0, 1/slow): the calibration
averages the rate over that as a bias (``tau``), as it does for the reference's own error.

A reference line that promised 0.3 audit s.d. per proxy s.d.; from pair 500 the proxy climbs 1
s.d. per 500 pairs; the audit gains 1 per proxy s.d. (a surplus) until pair 1000, then nothing.
The residual stays above the reference line until about pair 2170, and a level CUSUM on it (k = 0.5,
h = 13) does not fire within 3000 pairs; the curvature CUSUM does:

>>> import numpy as np
>>> rng = np.random.default_rng(2)
>>> track, s, fired = CurvatureTrack(slow=1600, fast=100), 0.0, None
>>> for t in range(3000):
...     d = max(t - 500, 0) / 500
...     inc = track.update(min(d, 1.0) - 0.3 * d + rng.normal(), d + rng.normal())
...     s = max(0.0, s + inc - 0.25) if inc is not None else s
...     fired = t if fired is None and s > 27 else fired
>>> fired
2347
"""

from __future__ import annotations

import math
from typing import Any

SQRT_HALF_PI = math.sqrt(math.pi / 2.0)  # E|Z| * this = sigma for a Gaussian


class CurvatureTrack:
    """EWMAs behind the curvature test's increments: slow mean and fast spread of the level score,
    fast and slow means of the standardised proxy. ``update`` returns the increment toward alarm
    (before ``k``), or None while the proxy is not rising."""

    def __init__(self, slow: int = 800, fast: int = 100, gate: float = 0.1) -> None:
        if slow < 2 or fast < 1 or fast >= slow or gate < 0:
            raise ValueError(f"need 1 <= fast < slow and gate >= 0, got slow={slow}, fast={fast}, gate={gate}")
        self.slow, self.fast, self.gate = int(slow), int(fast), float(gate)
        self._reset()

    def _reset(self) -> None:
        # The reference's level scores are centred with unit spread: start there.
        self.z_mean, self.z_spread, self.x_fast, self.x_slow = 0.0, 1.0, 0.0, 0.0

    def update(self, z: float, x: float) -> float | None:
        """Take one pair's level score ``z`` and standardised proxy ``x``; the increment
        ``-(z - zbar) / spread`` when the proxy is rising, else None."""
        d = z - self.z_mean
        rising = self.x_fast - self.x_slow > self.gate
        inc = -d / self.z_spread if rising else None
        a_slow, a_fast = 2.0 / (self.slow + 1), 2.0 / (self.fast + 1)
        self.z_mean += a_slow * d
        self.z_spread = max(self.z_spread + a_fast * (SQRT_HALF_PI * abs(d) - self.z_spread), 1e-6)
        self.x_fast += a_fast * (x - self.x_fast)
        self.x_slow += a_slow * (x - self.x_slow)
        return inc

    @property
    def tau(self) -> float:
        """s.d. of the slow mean's error in control, in score units (an EWMA's variance alpha / (2 - alpha))."""
        return math.sqrt(1.0 / self.slow)

    def state_dict(self) -> dict[str, Any]:
        return {"z_mean": self.z_mean, "z_spread": self.z_spread, "x_fast": self.x_fast, "x_slow": self.x_slow}

    def load_state(self, state: dict[str, Any] | None) -> None:
        """Restore :meth:`state_dict`; None (a state saved before this test existed) starts afresh."""
        self._reset()
        if state:
            self.z_mean, self.z_spread = float(state["z_mean"]), float(state["z_spread"])
            self.x_fast, self.x_slow = float(state["x_fast"]), float(state["x_slow"])
