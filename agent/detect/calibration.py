"""CUSUM thresholds from an average run length, allowing for an estimated reference.

Pure functions. A one-sided CUSUM ``S = max(0, S + x - k)`` on unit-variance increments with
in-control mean ``mu`` alarms when ``S > h``; Siegmund's approximation gives its average run
length (ARL) with ``D = mu - k`` and ``b = h + 1.166``::

    ARL ~ (exp(-2 D b) + 2 D b - 1) / (2 D^2)      (b^2 when D = 0)

The in-control mean is only zero if the reference relation were known. It is fitted from a few
hundred pairs, so the increments carry a bias ``delta ~ N(0, tau^2)`` fixed for the life of the
reference (``tau`` ~ 1/sqrt(n) in score units, measured by bootstrap in
:mod:`agent.detect.reference`). Averaged over references, the false-alarm *rate* per audit is
``E[1 / ARL(h, delta - k)]``; :func:`cusum_threshold` picks the smallest ``h`` for which that
expected rate is at most ``1 / arl0``. Rates, not run lengths, are averaged because rates add up
across the many tests of a deployment (and across successive references), which is what the
operator's budget is about.

>>> round(cusum_threshold(930.0, k=0.5, tau=0.0), 1)  # tables: one-sided k=0.5, h=5 gives ~930
5.0
>>> cusum_threshold(1000.0, k=0.5, tau=0.1) > cusum_threshold(1000.0, k=0.5, tau=0.0)
True
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numpy.polynomial.hermite_e import hermegauss

SIEGMUND_CORRECTION = 1.166  # 2 * 0.583: the expected overshoot of a Gaussian random walk
_NODES, _WEIGHTS = hermegauss(80)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()  # probabilists' Gauss-Hermite: E[g(Z)], Z ~ N(0, 1)


def _gh(n: int) -> tuple[np.ndarray, np.ndarray]:
    nodes, weights = hermegauss(n)
    return nodes, weights / weights.sum()


_NODES_2D = _gh(24)  # bias nodes when the score scale is uncertain too
_NODES_SCALE = _gh(7)  # log-scale nodes


def _log_em1mx(t: np.ndarray) -> np.ndarray:
    """log(exp(t) - t - 1) for t >= 0, without overflow or cancellation."""
    t = np.where(np.isfinite(t), t, 1e300)
    out = np.empty_like(t)
    big, tiny = t > 30.0, t < 1e-3
    mid = ~(big | tiny)
    out[big] = t[big] + np.log1p(-(t[big] + 1.0) * np.exp(-t[big]))
    out[mid] = np.log(np.expm1(t[mid]) - t[mid])
    tt = np.maximum(t[tiny], 1e-300)
    out[tiny] = np.log(tt * tt / 2.0 * (1.0 + tt / 3.0))
    return out


def _log_rate_b(d: np.ndarray, b_in: np.ndarray | float) -> np.ndarray:
    """Gaussian Siegmund log 1/ARL with the corrected threshold ``b`` given directly."""
    b: np.ndarray = np.maximum(np.broadcast_to(np.asarray(b_in, dtype=float), d.shape), 1e-9).astype(float)
    out = np.empty_like(d)
    small = np.abs(d) < 1e-6
    out[small] = -2.0 * np.log(b[small])
    ds = d[~small]
    a = -2.0 * ds * b[~small]
    # a > 0 (negative drift): log(e^a - a - 1); a < 0: e^a - a - 1 = e^a + |a| - 1 > 0.
    num = np.empty_like(a)
    up = a > 0
    num[up] = _log_em1mx(a[up])
    num[~up] = np.log(np.exp(a[~up]) - a[~up] - 1.0 + 1e-300)
    out[~small] = np.log(2.0 * ds * ds) - num
    return np.minimum(out, 0.0)


def siegmund_log_rate(drift: np.ndarray | float, h: float) -> np.ndarray:
    """Log of 1/ARL (false alarms per observation) for drift ``D = mu - k`` and threshold ``h``.

    Computed in log space: for negative drift the ARL is astronomically large and ``exp``
    would overflow.
    """
    d = np.atleast_1d(np.asarray(drift, dtype=float))
    b = h + SIEGMUND_CORRECTION
    a = -2.0 * d * b  # exponent
    out = np.empty_like(d)
    small = np.abs(d) < 1e-6
    out[small] = -2.0 * math.log(b)
    ds, aa = d[~small], a[~small]
    # log(exp(a) + (-a) - 1), stable for large positive a (negative drift) and for a < 0.
    big = aa > 30.0
    num = np.empty_like(aa)
    num[big] = aa[big] + np.log1p((-aa[big] - 1.0) * np.exp(-aa[big]))
    num[~big] = np.log(np.expm1(aa[~big]) - aa[~big])
    out[~small] = np.log(2.0 * ds * ds) - num
    return np.minimum(out, 0.0)  # at most one alarm per observation


def expected_log_rate(h: float, k: float, tau: float, allowance: float = 0.0) -> float:
    """Log false-alarm rate averaged over the reference's bias ``delta ~ N(0, tau^2)``."""
    drift = _NODES * tau - k - allowance
    logs = siegmund_log_rate(drift, h)
    top = float(logs.max())
    return top + math.log(float(np.sum(_WEIGHTS * np.exp(logs - top))))


def cusum_threshold(arl0: float, k: float, tau: float = 0.0, allowance: float = 0.0) -> float:
    """Smallest threshold ``h`` whose expected false-alarm rate is at most ``1/arl0``.

    ``k`` is the CUSUM reference value (half the design shift), ``tau`` the s.d. of the bias the
    estimated reference puts into each increment, ``allowance`` any extra constant subtracted
    from each increment. Monotone: larger ``arl0`` or ``tau`` give a larger ``h``.
    """
    if not arl0 > 1.0:
        raise ValueError(f"arl0 must be > 1, got {arl0}")
    if k < 0 or tau < 0:
        raise ValueError("k and tau must be non-negative")
    return smallest_threshold(lambda h: expected_log_rate(h, k, tau, allowance), -math.log(arl0), 60,
                              "no finite threshold reaches this arl0 (tau too large for k)")


def smallest_threshold(log_rate: Callable[[float], float], target: float, steps: int, unreachable: str) -> float:
    """Bisection for the smallest ``h`` with ``log_rate(h) <= target`` (``log_rate`` decreasing in
    ``h``): doubling from 1 to bracket it, then ``steps`` halvings; the upper end, so the rate is
    never above the budget. ValueError(``unreachable``) when no ``h`` up to 1e7 gets there."""
    lo, hi = 0.0, 1.0
    while log_rate(hi) > target:
        lo, hi = hi, hi * 2.0
        if hi > 1e7:
            raise ValueError(unreachable)
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        if log_rate(mid) > target:
            lo = mid
        else:
            hi = mid
    return hi


def _tilts(increments: np.ndarray) -> np.ndarray:
    """Per row, the root ``theta > 0`` of ``log mean exp(theta * Y) = 0`` (rows with mean < 0).

    Wald's exponential tilt: for Gaussian rows it is ``2|D|/sigma^2``; for skewed or
    heavy-tailed scores (0/1 audits, products) it is smaller, which is what makes those
    CUSUMs alarm sooner than a Gaussian formula predicts. ``inf`` when no increment is > 0.
    """
    top = increments.max(axis=1)
    theta = np.full(len(increments), np.inf)
    ok = top > 0
    y = increments[ok]
    lo = np.zeros(len(y))
    hi = np.ones(len(y))

    def g(t: np.ndarray) -> np.ndarray:
        z = t[:, None] * y
        m = z.max(axis=1)
        return m + np.log(np.mean(np.exp(z - m[:, None]), axis=1))

    for _ in range(60):  # grow hi until g(hi) > 0
        grow = g(hi) <= 0
        if not grow.any():
            break
        lo = np.where(grow, hi, lo)
        hi = np.where(grow, hi * 2.0, hi)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        pos = g(mid) > 0
        hi = np.where(pos, mid, hi)
        lo = np.where(pos, lo, mid)
    theta[ok] = hi
    return theta


def empirical_threshold(
    arl0: float, k: float, scores: np.ndarray, tau: float = 0.0, overshoot: float = 0.583,
    scale_sd: float = 0.0, scale_corr: float = 0.0,
) -> float:
    """Like :func:`cusum_threshold`, for increments ``s * scores - k + delta`` drawn from the
    empirical distribution of ``scores`` (the reference's own standardised scores, oriented so
    that larger means "toward alarm"), with ``delta ~ N(0, tau^2)`` and ``log s ~ N(0,
    scale_sd^2)`` (correlation ``scale_corr`` with ``delta``): the reference also misjudges the
    *spread* of future scores (its s.d. is estimated from the same few hundred pairs: a line too
    steep both biases the slope score and widens it), and at a large ``arl0`` the rate
    is very sensitive to it (``ARL ~ exp(2 |D| h / sigma^2)``: 10% more spread than the
    reference saw can cost a factor 10 in run length at ``arl0 ~ 10^6``).

    Uses Siegmund's form with Wald's tilt ``theta`` in place of ``2|D|``:
    ``ARL ~ (exp(theta b) - theta b - 1) / (theta |mu|)``, ``b = h + overshoot * sd``; the
    Gaussian overshoot constant is 1.166, a smaller one is conservative.
    """
    if not arl0 > 1.0:
        raise ValueError(f"arl0 must be > 1, got {arl0}")
    if scale_sd < 0:
        raise ValueError("scale_sd must be non-negative")
    y, weights = _increments(np.asarray(scores, dtype=float), k, tau, scale_sd, scale_corr)
    return smallest_threshold(_tilted_log_rate(y, weights, overshoot), -math.log(arl0), 50,
                              "no finite threshold reaches this arl0")


def _increments(
    x: np.ndarray, k: float, tau: float, scale_sd: float, scale_corr: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of increments ``s * x - k + delta``, one per quadrature node over the reference's bias
    (and log scale when ``scale_sd > 0``), with the nodes' weights."""
    if scale_sd > 0:
        # A product grid over (bias, log-scale); fewer bias nodes keep the tilts cheap (the
        # integrand is smooth in the bias, 24 Gauss-Hermite nodes are exact to ~1e-6 here).
        dn, dw = _NODES_2D
        sn, sw = _NODES_SCALE
        rho = min(max(scale_corr, -1.0), 1.0)
        z1 = np.repeat(dn, len(sn))
        z2 = np.tile(sn, len(dn))
        shifts = z1 * tau
        scales = np.exp(scale_sd * (rho * z1 + math.sqrt(1.0 - rho * rho) * z2))
        return scales[:, None] * x[None, :] - k + shifts[:, None], np.outer(dw, sw).ravel()
    return x[None, :] - k + (_NODES * tau)[:, None], _WEIGHTS


def _tilted_log_rate(y: np.ndarray, weights: np.ndarray, overshoot: float) -> Callable[[float], float]:
    """``h -> log E[1/ARL]`` over the rows of ``y``: Siegmund's form with Wald's tilt for rows
    with negative mean, the Gaussian form for the others (a drift toward alarm)."""
    mu = y.mean(axis=1)
    sd = np.maximum(y.std(axis=1), 1e-12)
    neg = mu < -1e-9
    theta = np.full(len(mu), np.inf)
    theta[neg] = _tilts(y[neg])

    def log_rate(h: float) -> float:
        b = h + overshoot * sd
        logs = np.empty(len(mu))
        tn = theta[neg] * b[neg]
        logs[neg] = np.where(np.isfinite(tn), np.minimum(
            np.log(np.where(np.isfinite(theta[neg]), theta[neg], 1.0) * -mu[neg]) - _log_em1mx(tn), 0.0),
            -np.inf)
        pos = ~neg
        logs[pos] = _log_rate_b(mu[pos] / sd[pos], b[pos] / sd[pos])
        top = float(logs.max())
        if not math.isfinite(top):  # no reachable excursion at all (degenerate, noiseless scores)
            return top
        return top + math.log(float(np.sum(weights * np.exp(logs - top))))

    return log_rate


def arl(h: float, k: float, tau: float = 0.0, allowance: float = 0.0) -> float:
    """The expected run length ``1 / E[rate]`` that :func:`cusum_threshold` inverts."""
    return math.exp(-expected_log_rate(h, k, tau, allowance))


def extrapolation_allowance(
    h: float, k: float, tau: float, slope_sd: float, distances: np.ndarray,
) -> np.ndarray:
    """Per distance ``d`` (recent proxies' mean, in reference s.d. from the reference mean), the
    smallest constant ``a >= 0`` to subtract from each increment so that the false-alarm rate
    averaged over the reference's error there is no larger than at the reference mean.

    Away from the reference mean the estimated line's slope error adds a bias ``e * d`` to the
    increments (``e ~ N(0, slope_sd^2)``), independent of the intercept error ``tau`` (OLS
    errors at the mean proxy and of the slope are uncorrelated): the bias s.d. grows to
    ``sqrt(tau^2 + (slope_sd d)^2)``. Matching the rate keeps a genuine improvement that
    follows the reference line (even far beyond its range) as quiet as stationary data, and
    charges nothing near the reference (grows ~ ``h slope_sd^2 d^2`` at first).

    >>> a = extrapolation_allowance(12.0, 0.5, 0.07, 0.07, np.array([0.0, 1.0, 5.0]))
    >>> bool(a[0] == 0.0 and 0.0 < a[1] < 0.1 < a[2])
    True
    """
    base = expected_log_rate(h, k, tau)
    t = np.hypot(tau, slope_sd * np.asarray(distances, dtype=float))

    def excess(a: np.ndarray) -> np.ndarray:  # expected log rate minus the base, per distance
        drift = _NODES[None, :] * t[:, None] - k - a[:, None]
        logs = siegmund_log_rate(drift.ravel(), h).reshape(drift.shape)
        top = logs.max(axis=1)
        return top + np.log(np.sum(_WEIGHTS * np.exp(logs - top[:, None]), axis=1)) - base

    lo, hi = np.zeros(len(t)), np.full(len(t), 0.1)
    for _ in range(40):  # grow hi until every distance is at or below the base rate
        grow = excess(hi) > 0
        if not grow.any():
            break
        lo, hi = np.where(grow, hi, lo), np.where(grow, hi * 2.0, hi)
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        above = excess(mid) > 0
        lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
    return np.where(excess(np.zeros(len(t))) <= 0, 0.0, hi)
