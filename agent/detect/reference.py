"""The reference relation: what audit the proxy predicted while proxy and audit still agreed.

A weighted least-squares line ``audit ~ a + b * proxy`` fitted on the reference pairs, in the
style of a scikit-learn estimator (``fit`` returns ``self``, learned attributes end in ``_``).

Why a line and not isotonic regression: Goodhart lives beyond the reference range, and isotonic
regression predicts a constant there, so a proxy that climbs past everything seen while the
audit stays flat would look "on curve". A line extrapolates the proxy's promise consistently:
genuine improvement that follows the same relation far beyond the range stays on the line,
inflation does not. Binary (0/1) audits are a linear probability model, clipped to [0, 1].

Besides the line, the fit measures how wrong it may be. A nonparametric bootstrap of the whole
fitting procedure (seeded, so deterministic) gives the s.d. of the bias each test's standardised
score inherits from the estimated reference (``level_tau_``, ``slope_tau_``) and of the slope
(``slope_sd_``); :mod:`agent.detect.calibration` turns them into thresholds.

Scores (both bounded, roughly unit variance on the reference):

* level: ``v * clip(z, -c, c)`` with ``z = (audit - predict(proxy)) / scale_`` and ``v`` the
  pair's sampling weight over the mean audited weight (bounded by ``WEIGHT_CLIP``; 1 without
  weights), centred and scaled on the reference; a negative mean says audits fall short of what
  the proxy promises, in the population the weights stand for.
* slope: the level residual times the proxy's deviation from its *recent* mean (``x - centre``);
  a negative mean says audit no longer follows the proxy within recent traffic (the proxy lost
  its relation to quality), whatever the proxy's level.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, NamedTuple

import numpy as np

from agent.detect.base import ReferenceLine
from agent.stats import spearman

_SQRT_HALF_PI = math.sqrt(math.pi / 2.0)  # E|Z| * this = sigma for a Gaussian
# The slope score is a product of two standardised deviations, heavy-tailed (kurtosis 9 for
# Gaussians); clipping both factors and the product keeps its tails within what a few hundred
# reference pairs can show the calibration.
PROXY_CLIP = 2.0
PRODUCT_CLIP = 2.0
# Bound on a pair's normalised sampling weight (weight / mean audited weight) in the level
# score: a stratum audited 5x less than average counts at most 5x, so a few extreme weights
# cannot make the increments too heavy-tailed for a few hundred reference pairs to calibrate.
WEIGHT_CLIP = 5.0


def _wls(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least squares along the last axis; rows of ``w`` are independent fits."""
    sw = w.sum(axis=-1)
    mx = (w * x).sum(axis=-1) / sw
    my = (w * y).sum(axis=-1) / sw
    dx = x - mx[..., None]
    sxx = (w * dx * dx).sum(axis=-1)
    sxy = (w * dx * (y - my[..., None])).sum(axis=-1)
    slope = np.where(sxx > 0, sxy / np.where(sxx > 0, sxx, 1.0), 0.0)
    return my - slope * mx, slope


def _scores(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, a: np.ndarray, b: np.ndarray, bounds: tuple[float, float],
    clip: float, pw: np.ndarray, counts: np.ndarray,
) -> dict[str, np.ndarray]:
    """Level and slope scores of the sample (x, y) under fits (a, b) whose weights are ``w``
    (sampling weight ``pw`` times bootstrap ``counts``)."""
    pred = np.clip(a[..., None] + b[..., None] * x, *bounds)
    r = y - pred
    sw = w.sum(axis=-1)
    scale = _SQRT_HALF_PI * (w * np.abs(r)).sum(axis=-1) / sw
    scale = np.maximum(scale, 1e-12)
    psi = np.clip(r / scale[..., None], -clip, clip)
    # Level evidence is weighted: each pair's residual counts in proportion to the traffic it
    # stands for (its sampling weight over the mean weight of the audited pairs, bounded), so
    # the level test watches the population mean residual, the quantity ``gap`` estimates.
    mean_w = (counts * pw).sum(axis=-1) / counts.sum(axis=-1)
    wpsi = normalised_weight(pw / mean_w[..., None]) * psi
    mx = (w * x).sum(axis=-1) / sw
    sdx = np.sqrt((w * (x - mx[..., None]) ** 2).sum(axis=-1) / sw)
    sdx = np.maximum(sdx, 1e-12)
    xs = np.clip((x - mx[..., None]) / sdx[..., None], -PROXY_CLIP, PROXY_CLIP)
    return {"psi": psi, "wpsi": wpsi, "prod": np.clip(psi * xs, -PRODUCT_CLIP, PRODUCT_CLIP), "scale": scale,
            "mx": mx, "sdx": sdx, "mean_w": mean_w}


def normalised_weight(ratio: Any) -> Any:
    """A sampling weight over the mean audited weight, bounded to [0, WEIGHT_CLIP]."""
    return np.minimum(ratio, WEIGHT_CLIP)


def _moments(v: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unweighted (per-pair) mean and s.d. of ``v`` over a sample given by ``counts``."""
    n = counts.sum(axis=-1)
    m = (counts * v).sum(axis=-1) / n
    s = np.sqrt((counts * (v - m[..., None]) ** 2).sum(axis=-1) / n)
    return m, np.maximum(s, 1e-12)


class ReferenceRelation:
    """A fitted line from proxy to audit, with its score constants and estimation error.

    >>> rng = np.random.default_rng(0)
    >>> p = rng.normal(size=200); a = 0.5 * p + rng.normal(scale=0.8, size=200)
    >>> ref = ReferenceRelation().fit(p, a)
    >>> round(ref.slope_, 2), round(ref.scale_, 2), round(ref.level_tau_, 3)
    (0.44, 0.8, 0.072)
    """

    def __init__(self, clip: float = 3.0, bootstrap: int = 200, seed: int = 0) -> None:
        self.clip = clip
        self.bootstrap = bootstrap
        self.seed = seed

    def fit(self, proxy: Any, audit: Any, weight: Any = None, binary: bool | None = None) -> ReferenceRelation:
        """Fit the line and measure, by bootstrap, how much its error biases each score; ``binary``
        says whether the audit is 0/1 when the audits given are not (less a segment's deviation)."""
        x, y, w = _checked(proxy, audit, weight)
        if self.clip <= 0 or self.bootstrap < 20:
            raise ValueError("clip must be > 0 and bootstrap >= 20")
        n = len(x)
        binary = bool(np.all((y == 0.0) | (y == 1.0))) if binary is None else binary
        self.bounds_ = (0.0, 1.0) if binary else (-math.inf, math.inf)
        x, y, w = with_pseudo_pairs(x, y, w, self.bounds_, self.clip, binary)
        a, b = _wls(x, y, w)
        s = self._fit_scores(x, y, w, float(a), float(b))
        self._describe(x[:n], y[:n], w[:n])  # the real pairs, for what the operator sees
        self.coef_cov_ = sandwich_covariance(x[:n], y[:n], w[:n], float(a), float(b))
        refits = bootstrap_refits(x, y, w, n, self.bounds_, self.clip, self.bootstrap, self.seed)
        self._fit_errors(refits, float(x.mean()))
        # Alarm-oriented increments of the reference itself (larger = audit below promise),
        # the empirical distribution the thresholds are calibrated on; not part of the state.
        self.level_scores_ = -(s["wpsi"][0] - self.level_center_) / self.level_scale_
        self.slope_scores_ = -(s["prod"][0] - self.slope_center_) / self.slope_scale_
        return self

    def _fit_scores(self, x: np.ndarray, y: np.ndarray, w: np.ndarray, a: float, b: float) -> dict[str, np.ndarray]:
        """The line and the centre and spread of its scores on the reference (pseudo pairs included)."""
        ones = np.ones((1, len(x)))
        s = _scores(x, y, w[None, :], np.atleast_1d(a), np.atleast_1d(b), self.bounds_, self.clip, w, ones)
        self.intercept_, self.slope_ = a, b
        self.scale_ = float(s["scale"][0])
        self.proxy_mean_, self.proxy_sd_ = float(s["mx"][0]), float(s["sdx"][0])
        lm, ls = _moments(s["wpsi"], ones)
        self.weight_mean_ = float(s["mean_w"][0])
        pm, ps = _moments(s["prod"], ones)
        self.level_center_, self.level_scale_ = float(lm[0]), float(ls[0])
        self.slope_center_, self.slope_scale_ = float(pm[0]), float(ps[0])
        return s

    def _describe(self, x: np.ndarray, y: np.ndarray, w: np.ndarray) -> None:
        """Range, weighted audit mean, (effective) size and rank correlation of the real pairs."""
        self.proxy_min_, self.proxy_max_ = float(x.min()), float(x.max())
        self.audit_mean_ = float(np.sum(w * y) / np.sum(w))
        self.n_ = len(x)
        self.n_eff_ = float(w.sum() ** 2 / np.sum(w * w))
        self.rank_corr_ = spearman(x, y)

    def _fit_errors(self, refits: Refits, mean_proxy: float) -> None:
        """Score bias and spread errors from the bootstrap refits (needs the line and its covariance)."""
        # The bootstrap can understate the error under unequal weights; never go below the
        # sandwich error of the prediction at the traffic's mean proxy.
        analytic = self.prediction_se(mean_proxy) * self.level_gain
        self.level_tau_ = max(float(refits.level_bias.std()), analytic)
        # Future scores also spread more than in-sample ones (the fit chased this sample's
        # noise); the calibration widens the reference scores by the bootstrap's ratio.
        self.level_inflation_ = max(1.0, float(np.mean(refits.level_sd)))
        self.slope_inflation_ = max(1.0, float(np.mean(refits.slope_sd)))
        # ... and by how much that spread is itself uncertain: the s.d. over refits of the log
        # ratio. Thresholds at a large arl0 are very sensitive to the score scale, so the
        # calibration averages the rate over it as well (a reference that saw too little
        # spread would otherwise false-alarm many times its share).
        # The two errors are correlated (a line too steep both biases the slope score toward
        # alarm and widens it): their correlation over refits, bias oriented toward alarm.
        self.level_scale_sd_ = float(np.std(np.log(refits.level_sd)))
        self.slope_scale_sd_ = float(np.std(np.log(refits.slope_sd)))
        self.level_scale_corr_ = _corr(-refits.level_bias, np.log(refits.level_sd))
        self.slope_scale_corr_ = _corr(-refits.slope_bias, np.log(refits.slope_sd))
        self.slope_tau_ = float(refits.slope_bias.std())
        # Slope error in level-score units per proxy s.d.: the bias that extrapolating to a
        # proxy mean d s.d. away from the reference adds to each level increment is ~ d * this.
        self.slope_sd_ = float(np.std(refits.slopes) * self.proxy_sd_ * self.level_gain)

    @property
    def level_gain(self) -> float:
        """Level-score units per audit unit: a population audit lower by ``g`` than the line
        predicts moves the mean level score by about ``-g * level_gain``."""
        return 1.0 / (self.scale_ * self.level_scale_)

    @property
    def binary(self) -> bool:
        """Whether the reference audits were all 0/1 (a pass/fail audit)."""
        return self.bounds_ == (0.0, 1.0)

    # -- scalar scoring, used per pair on the hot path ------------------------------------
    def predict(self, proxy: float) -> float:
        """Audit the reference expects for this proxy value (extrapolated linearly)."""
        lo, hi = self.bounds_
        return min(max(self.intercept_ + self.slope_ * proxy, lo), hi)

    def prediction_se(self, proxy: float) -> float:
        """Standard error of :meth:`predict` at ``proxy`` from the reference's estimation error
        (grows linearly with the distance beyond the reference mean)."""
        aa, ab, bb = self.coef_cov_
        return math.sqrt(max(aa + 2 * proxy * ab + proxy * proxy * bb, 0.0))

    def standardise_proxy(self, proxy: float) -> float:
        """Proxy in reference s.d. units from the reference mean."""
        return (proxy - self.proxy_mean_) / self.proxy_sd_

    def scores(self, proxy: float, audit: float, centre: float, weight: float = 1.0) -> tuple[float, float, float]:
        """(residual, level score, slope score) of one pair; ``centre`` is the recent mean of
        the standardised proxy, around which the slope score measures co-movement; ``weight``
        the pair's sampling weight over the recent mean audited weight (1 when unweighted)."""
        c = self.clip
        r = audit - self.predict(proxy)
        psi = min(max(r / self.scale_, -c), c)
        xs = min(max(self.standardise_proxy(proxy) - centre, -PROXY_CLIP), PROXY_CLIP)
        prod = min(max(psi * xs, -PRODUCT_CLIP), PRODUCT_CLIP)
        level = (min(weight, WEIGHT_CLIP) * psi - self.level_center_) / self.level_scale_
        slope = (prod - self.slope_center_) / self.slope_scale_
        return r, level, slope

    def line(self, baseline_ts: float | None) -> ReferenceLine:
        """This reference as the detectors' seam shows it (see :class:`~agent.detect.base.ReferenceLine`)."""
        aa, ab, bb = self.coef_cov_
        return ReferenceLine(self.intercept_, self.slope_, *self.bounds_, self.scale_, (aa, ab, bb),
                             self.proxy_mean_, self.proxy_sd_, self.proxy_min_, self.proxy_max_, self.audit_mean_,
                             int(self.n_), baseline_ts)

    # -- state ------------------------------------------------------------------------------
    _FIELDS = (
        "intercept_", "slope_", "scale_", "proxy_mean_", "proxy_sd_", "level_center_", "level_scale_",
        "slope_center_", "slope_scale_", "proxy_min_", "proxy_max_", "audit_mean_", "n_", "n_eff_",
        "rank_corr_", "level_tau_", "slope_tau_", "slope_sd_", "level_inflation_", "slope_inflation_",
        "coef_cov_", "weight_mean_", "level_scale_sd_", "slope_scale_sd_",
        "level_scale_corr_", "slope_scale_corr_",
    )
    _OPTIONAL: ClassVar[dict[str, float]] = {"level_scale_sd_": 0.0, "slope_scale_sd_": 0.0, "level_scale_corr_": 0.0,
                 "slope_scale_corr_": 0.0}  # absent from older states

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable learned state (floats round-trip exactly through JSON)."""
        out: dict[str, Any] = {f: getattr(self, f) for f in self._FIELDS}
        out["bounds_"] = [None if math.isinf(v) else v for v in self.bounds_]
        out["params"] = {"clip": self.clip, "bootstrap": self.bootstrap, "seed": self.seed}
        return out

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> ReferenceRelation:
        ref = cls(**state["params"])
        for f in cls._FIELDS:
            setattr(ref, f, state[f] if f in state or f not in cls._OPTIONAL else cls._OPTIONAL[f])
        lo, hi = state["bounds_"]
        ref.bounds_ = (-math.inf if lo is None else lo, math.inf if hi is None else hi)
        return ref


def _corr(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation, 0 when either side is constant."""
    sx, sy = float(np.std(x)), float(np.std(y))
    if sx <= 0 or sy <= 0:
        return 0.0
    return float(np.clip(np.mean((x - x.mean()) * (y - y.mean())) / (sx * sy), -1.0, 1.0))


def _checked(proxy: Any, audit: Any, weight: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reference pairs as float arrays; ValueError when they cannot make a reference."""
    x = np.asarray(proxy, dtype=float)
    y = np.asarray(audit, dtype=float)
    w = np.ones_like(x) if weight is None else np.asarray(weight, dtype=float)
    if x.ndim != 1 or x.shape != y.shape or x.shape != w.shape:
        raise ValueError("proxy, audit and weight must be 1-d arrays of the same length")
    if len(x) < 10:
        raise ValueError(f"need at least 10 reference pairs, got {len(x)}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y)) and np.all(w > 0)):
        raise ValueError("reference pairs must be finite with positive weights")
    return x, y, w


def with_pseudo_pairs(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, bounds: tuple[float, float], clip: float, binary: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reference pairs, plus four pseudo pairs when the reference is degenerate.

    A degenerate reference (residual spread below that of one mismatch in n pairs: a 0/1 proxy
    equal to the 0/1 audit, a constant audit) carries no information about the size or rate of
    mismatches. It is fitted as if it had also seen four pseudo pairs, at the mean proxy +/- one
    s.d., half an audit unit above and below the line (which leaves the line unchanged; the unit
    is 1 for 0/1 audits, else the audit's s.d., else 1): a rule-of-succession prior. Scores,
    thresholds and the bootstrap then see mismatches at a rate ~2/n: one mismatch cannot alarm,
    a run of them does. The pseudo pairs come last, so ``x[:n]`` are always the real ones.
    """
    n = len(x)
    a, b = _wls(x, y, w)
    s0 = _scores(x, y, w[None, :], np.atleast_1d(a), np.atleast_1d(b), bounds, clip, w, np.ones((1, n)))
    unit = 1.0 if binary else (float(np.sqrt(np.cov(y, aweights=w))) or 1.0)
    q = 1.0 / n
    if float(s0["scale"][0]) >= unit * math.sqrt(q * (1 - q)):
        return x, y, w
    sx = float(s0["sdx"][0]) if float(s0["sdx"][0]) > 1e-9 else 1.0
    mx = float(s0["mx"][0])
    px = np.array([mx - sx, mx - sx, mx + sx, mx + sx])
    py = float(a) + float(b) * px + np.array([-0.5, 0.5, -0.5, 0.5]) * unit
    return np.concatenate([x, px]), np.concatenate([y, py]), np.concatenate([w, np.full(4, float(np.mean(w)))])


def sandwich_covariance(x: np.ndarray, y: np.ndarray, w: np.ndarray, a: float, b: float) -> list[float]:
    """Heteroscedasticity-robust covariance of (intercept, slope) as [aa, ab, bb], for the error of
    the predicted audit at any proxy: var = aa + 2 x ab + x^2 bb. Real pairs only: the pseudo pairs
    are a prior on the mismatch rate, not data."""
    n = len(x)
    design = np.column_stack([np.ones(n), x])
    resid = y - (a + b * x)
    bread = np.linalg.pinv(design.T @ (w[:, None] * design))
    meat = design.T @ ((w * w * resid * resid)[:, None] * design)
    cov = bread @ meat @ bread * n / max(n - 2, 1)
    return [float(cov[0, 0]), float(cov[0, 1]), float(cov[1, 1])]


class Refits(NamedTuple):
    """Per bootstrap refit: mean standardised future score (bias), its s.d., and the slope."""

    level_bias: np.ndarray
    slope_bias: np.ndarray
    level_sd: np.ndarray
    slope_sd: np.ndarray
    slopes: np.ndarray


def bootstrap_refits(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, n: int, bounds: tuple[float, float], clip: float,
    bootstrap: int, seed: int,
) -> Refits:
    """Bootstrap the whole procedure on the ``n`` real pairs (pseudo pairs, after them, stay in
    every refit: a prior, not data); evaluate each refit on the original sample, which stands in
    for future in-control traffic. The spread of the resulting mean scores is the bias an
    estimated reference puts into each CUSUM increment. Seeded, so deterministic."""
    m = len(x)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=bootstrap).astype(float)
    counts = np.hstack([counts, np.ones((bootstrap, m - n))])
    wb = counts * w[None, :]
    ab, bb = _wls(x[None, :], y[None, :], wb)
    sb = _scores(x, y, wb, ab, bb, bounds, clip, w, counts)
    lmb, lsb = _moments(sb["wpsi"], counts)
    pmb, psb = _moments(sb["prod"], counts)
    level = (sb["wpsi"] - lmb[:, None]) / lsb[:, None]
    slope = (sb["prod"] - pmb[:, None]) / psb[:, None]
    return Refits(level.mean(axis=1), slope.mean(axis=1), level.std(axis=1), slope.std(axis=1), bb)
