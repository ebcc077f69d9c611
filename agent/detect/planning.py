"""How long the decoupling detector takes, in audited pairs: warm-up and detection delay.

Pure functions behind ``goodhart-agent plan``. The test that fires on a step drop of the audit
(or a step inflation of the proxy) is the level CUSUM of :mod:`agent.detect.decoupling`:
``S = max(0, S + x - k)`` on the clipped, standardised residuals, with ``k`` half the design
shift and the threshold ``h`` that :func:`~agent.detect.cusums.bank_thresholds` derives from the
test's false-alarm budget. Its threshold depends on the fitted reference, so the plan fits the
same :class:`~agent.detect.reference.ReferenceRelation` on a seeded synthetic reference of
``reference_pairs`` Gaussian pairs (the typical case) and reads ``h``, the score constants and
``tau`` (the s.d. of the bias the estimated reference puts into every increment) from it.

Two numbers per shift of ``D`` residual s.d.:

* ``mean_pairs``: Siegmund's ARL1 for drift ``D - k`` and threshold ``h`` (the same formula the
  thresholds are calibrated with), for a reference without bias.
* ``median_pairs``: the median run length from a Markov-chain (Brook and Evans) discretisation of
  the same CUSUM, with the clipping of the scores, averaged over the reference's bias. Operators
  see the typical case; the mean over references is pulled up by the few references biased
  against the alarm (at ``D`` near ``k`` by a factor 2 or more), so the median is the headline.

>>> h, k = 12.6, 0.5
>>> [round(mean_delay_pairs(h, k, d)) for d in (1.0, 2.0)]
[26, 9]
>>> round(median_delay_pairs(LevelTest(h=h, k=k, tau=0.0, scale=1.0), 1.0))
23
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from agent.detect.calibration import siegmund_log_rate
from agent.detect.cusums import bank_thresholds, design_ks

#: Chain resolution: cells over (0, h]. 120 puts the median within ~1% of a fine grid.
CELLS = 120
#: Bias nodes (Gauss-Hermite) the median is averaged over.
BIAS_NODES = 15
#: Beyond this many pairs a delay is reported as unbounded (the shift is too small to detect).
MAX_PAIRS = 10_000_000
#: In-control pairs after which the CUSUM's distribution is taken as settled (it mixes in tens).
SETTLE_PAIRS = 512
#: Standardised residuals are clipped at this many s.d. (DecouplingDetector's default ``clip``).
CLIP = 3.0


@dataclass(frozen=True)
class LevelTest:
    """The level CUSUM as the plan models it: threshold ``h``, reference value ``k``, bias s.d.
    ``tau`` and the reference's score constants (``centre``, ``scale``: a level score is
    ``(clip(z) - centre) / scale``)."""

    h: float
    k: float
    tau: float
    scale: float
    centre: float = 0.0
    clip: float = CLIP


def typical_level_test(arl0: float, reference_pairs: int, shift: float, warn_ratio: float = 0.01,
                       span: int = 100, slope_allowance: float = 1.0, seed: int = 0) -> LevelTest:
    """The level CUSUM a detector would get from a reference of ``reference_pairs`` Gaussian pairs.

    Uses the detector's own fit and threshold code on a seeded synthetic reference (proxy and
    audit correlated, as a working proxy is); ``h`` varies by a few per cent between references.
    """
    from agent.detect.reference import ReferenceRelation

    rng = np.random.default_rng(seed)
    proxy = rng.normal(size=reference_pairs)
    audit = 0.6 * proxy + rng.normal(scale=0.8, size=reference_pairs)
    ref = ReferenceRelation().fit(proxy, audit)
    ks = design_ks(shift)
    thresholds, _ = bank_thresholds(ref, ks, arl0, warn_ratio, span, slope_allowance)
    return LevelTest(h=thresholds["level"][0], k=ks["level"], tau=ref.level_tau_, scale=ref.level_scale_,
                     centre=ref.level_center_)


def mean_delay_pairs(h: float, k: float, shift: float) -> float:
    """Siegmund's ARL1: expected audited pairs from a step of ``shift`` residual s.d. to the alarm,
    for a CUSUM starting at 0 with unit-variance increments (``inf`` when it never comes)."""
    log_rate = float(siegmund_log_rate(shift - k, h)[0])
    return math.exp(-log_rate) if log_rate > -700 else math.inf


def _transitions(test: LevelTest, shift: float, bias: np.ndarray) -> np.ndarray:
    """Per bias node, the sub-stochastic transition matrix of the CUSUM over its transient states:
    the atom at 0 and ``CELLS`` cells of (0, h] (their midpoints stand for them)."""
    from scipy.special import ndtr  # scipy comes with scikit-learn, a runtime dependency

    w = test.h / CELLS
    values = np.concatenate(([0.0], (np.arange(CELLS) + 0.5) * w))  # from-state values
    edges = np.arange(CELLS + 1) * w  # to-cell edges, 0 .. h

    def cdf(x: np.ndarray) -> np.ndarray:
        """P(increment <= x): increment = (y + centre) / scale - k + bias, y = clip(-z), -z ~ N(shift, 1)."""
        u = (x + test.k - bias[:, None, None]) * test.scale - test.centre
        inside = ndtr(u - shift)
        return np.where(u < -test.clip, 0.0, np.where(u >= test.clip, 1.0, inside))

    c = cdf(edges[None, None, :] - values[None, :, None])  # (nodes, from, edge)
    out = np.empty((len(bias), CELLS + 1, CELLS + 1))
    out[:, :, 0] = c[:, :, 0]
    out[:, :, 1:] = np.diff(c, axis=2)
    return out


class _Powers:
    """``q^(2^i)`` per bias node, squared on demand: the survival after ``n`` pairs is then a few
    vector-matrix products (row 0 of ``q^n``, summed), not a matrix power per question."""

    def __init__(self, q: np.ndarray, weights: np.ndarray, start: np.ndarray | None = None) -> None:
        self.powers = [q]
        self.weights = weights
        self.start = start  # (nodes, states); None: every node's CUSUM at 0

    def row(self, n: int) -> np.ndarray:
        """Per node, the start distribution times ``q^n``: where the CUSUM is after ``n`` pairs
        without an alarm (sub-stochastic: the rest alarmed)."""
        nodes, states = self.powers[0].shape[:2]
        if self.start is None:
            state = np.zeros((nodes, 1, states))
            state[:, 0, 0] = 1.0
        else:
            state = self.start[:, None, :].copy()
        i = 0
        while n:
            while len(self.powers) <= i:
                top = self.powers[-1]  # per node: 2-D products use BLAS, stacked ones did not (~100x)
                self.powers.append(np.stack([m @ m for m in top]))
            if n & 1:
                state = state @ self.powers[i]
            n >>= 1
            i += 1
        return state[:, 0, :]

    def survival(self, n: int) -> float:
        """P(no alarm within ``n`` pairs), averaged over the bias nodes."""
        return float(np.dot(self.weights, self.row(n).sum(axis=1)))


def _settled(test: LevelTest, bias: np.ndarray) -> np.ndarray:
    """Per bias node, where an in-control CUSUM sits long after its reference, given no alarm
    yet (the quasi-stationary distribution): a shift rarely meets a CUSUM at exactly 0, and
    starting from 0 overstates the delay by ~10% (measured against the detector)."""
    row = _Powers(_transitions(test, 0.0, bias), np.ones(len(bias))).row(SETTLE_PAIRS)
    return row / np.maximum(row.sum(axis=1, keepdims=True), 1e-300)


def median_delay_pairs(test: LevelTest, shift: float) -> float:
    """Median audited pairs from a step of ``shift`` residual s.d. (after the reference) to the
    alarm, over the run-length distribution and the reference's bias; ``inf`` beyond MAX_PAIRS."""
    from threadpoolctl import threadpool_limits  # comes with scikit-learn, a runtime dependency

    # 121 x 121 products: BLAS threads cost more than they bring (3-4x the CPU time on a busy host).
    with threadpool_limits(1, user_api="blas"):
        return _median(test, shift)


def _median(test: LevelTest, shift: float) -> float:
    from numpy.polynomial.hermite_e import hermegauss

    nodes, weights = hermegauss(BIAS_NODES)
    bias, weights = nodes * test.tau, weights / weights.sum()
    chain = _Powers(_transitions(test, shift, bias), weights, _settled(test, bias))
    lo, hi = 0, 1
    while chain.survival(hi) > 0.5:  # doubling: powers are squared only as far as needed
        if hi >= MAX_PAIRS:
            return math.inf
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # the smallest n whose survival is at most one half
        mid = (lo + hi) // 2
        if chain.survival(mid) > 0.5:
            lo = mid
        else:
            hi = mid
    # Between the last pair before and the first at or past one half, linearly: pairs arrive
    # at random times, so the median delay in time falls between them.
    before, after = chain.survival(hi - 1), chain.survival(hi)
    return hi - 1 + (before - 0.5) / max(before - after, 1e-12)


# -- from pairs to time -------------------------------------------------------------------------
def first_verdict_pairs(reference_pairs: int, share: float = 1.0, pinned: bool = False) -> float:
    """Audited pairs of the *whole stream* before a test on ``share`` of the traffic gives its first
    verdict: ``reference_pairs``, whatever the share, because every segment takes its reference
    from the whole stream's reference span (agent/detect/pooled.py); none when the reference comes
    pinned from ``detection.reference_file``. The one place that says how a segment warms up."""
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], got {share}")
    return 0.0 if pinned else float(reference_pairs)


def seconds_for(pairs: float, rate: float, detect_seconds: float) -> float:
    """Typical time for ``pairs`` audited pairs at ``rate`` per second to give a verdict: their
    arrival, then the wait for the next detect tick (half a tick on average)."""
    return pairs / rate + detect_seconds / 2.0 if math.isfinite(pairs) else math.inf


def rate_for(pairs: float, target_seconds: float, detect_seconds: float) -> float:
    """Audited pairs per second that make :func:`seconds_for` meet ``target_seconds``; ``inf``
    when no rate can (the target is within half a detect tick, or the pairs are unbounded)."""
    room = target_seconds - detect_seconds / 2.0
    if not math.isfinite(pairs) or room <= 0:
        return math.inf
    return pairs / room
