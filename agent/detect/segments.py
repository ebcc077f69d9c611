"""Segment references from one reference span: the pooled line plus shrunken segment deviations.

All segments of a (proxy, audit) pair take their reference from the same pairs, the first
``reference_pairs`` audited pairs of the whole stream (after start or rebaseline). A segment
with few of them gets a usable, honestly uncertain reference by partial pooling (a random
intercept and slope model, fitted by empirical Bayes)::

    audit = a + b x + u_s + d_s (x - c_s) + e,   u_s ~ N(0, tau_u^2),  d_s ~ N(0, tau_d^2),  e ~ N(0, sigma^2)

``c_s`` is the segment's own mean proxy on the span. Given the line, each segment's raw
least-squares deviation ``beta_s = (X'WX)^-1 X'W r`` of its residuals has sampling covariance
``S_s = sigma^2 (X'WX)^-1``; given the between-segment variances each segment's deviation has posterior mean
``V_s X'W r / sigma^2`` and covariance ``V_s = (X'WX / sigma^2 + diag(tau^-2))^-1``; both are averaged
over the posterior of ``tau`` (flat prior, a grid), not taken at a point estimate (with a handful
of segments that is often 0 although they differ: no uncertainty left, an overconfident reference).
The common slope ``b`` is the within-segment (fixed-effects) slope: segments differ in
their proxy means, and a slope fitted across them would absorb their offsets; the intercept is
refitted on ``audit - deviation`` until the estimates settle. A segment
without reference pairs has deviation 0 and covariance ``diag(tau^2)``: the prior.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agent.detect.reference import ReferenceRelation

PRIOR_DOF = 20.0  # a segment's residual variance is shrunk toward the pool's as if the pool were 20 pairs
MIN_PAIRS = 5  # segments with fewer reference pairs do not inform the between-segment variances
_ITERATIONS = 25


@dataclass
class SegmentPool:
    """The segment deviations of one reference span (see the module docstring)."""

    centre: float = 0.0
    sigma2: float = 0.0
    tau2: tuple[float, float] = (0.0, 0.0)
    # segment -> [u, d, v_uu, v_ud, v_dd, pairs, mean squared within residual, its proxy mean]
    segments: dict[str, list[float]] = field(default_factory=dict)
    scores: tuple[list[float], list[float]] = ([], [])  # the reference's level and slope scores

    def deviation(self, segment: str | None, proxy: float) -> float:
        """What the segment's line adds to the pooled line at ``proxy`` (0 for an unknown segment)."""
        s = self.segments.get(segment) if segment is not None else None
        return 0.0 if s is None else s[0] + s[1] * (proxy - s[7])

    def cov(self, segment: str) -> tuple[float, float, float]:
        """Posterior covariance (uu, ud, dd) of the segment's deviation (offset at its own proxy mean,
        slope); the prior for a new segment."""
        s = self.segments.get(segment)
        return (self.tau2[0], 0.0, self.tau2[1]) if s is None else (s[2], s[3], s[4])

    def pairs(self, segment: str) -> int:
        s = self.segments.get(segment)
        return 0 if s is None else int(s[5])

    def to_dict(self) -> dict[str, Any]:
        return {"centre": self.centre, "sigma2": self.sigma2, "tau2": list(self.tau2),
                "segments": {k: list(v) for k, v in self.segments.items()},
                "scores": [list(self.scores[0]), list(self.scores[1])]}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> SegmentPool:
        tu, td = state["tau2"]
        level, slope = state.get("scores", ([], []))
        return cls(float(state["centre"]), float(state["sigma2"]), (float(tu), float(td)),
                   {str(k): [float(x) for x in v] for k, v in state["segments"].items()},
                   ([float(x) for x in level], [float(x) for x in slope]))


def fit_pool(x: np.ndarray, y: np.ndarray, w: np.ndarray, labels: list[str | None]) -> SegmentPool:
    """Empirical-Bayes segment deviations of the reference pairs (``labels``: each pair's segment,
    None outside any); no segments (or one): all deviations 0, exactly the unpooled line."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    w = np.asarray(w, dtype=float) / float(np.mean(w))
    names = sorted({s for s in labels if s is not None})
    centre = float(np.sum(w * x) / np.sum(w))
    pool = SegmentPool(centre=centre)
    if len(names) < 2:
        return pool
    idx = {name: np.array([i for i, s in enumerate(labels) if s == name]) for name in names}
    b = _within_slope(x, y, w, labels)
    dev = np.zeros(len(x))
    for _ in range(_ITERATIONS):
        a = float(np.sum(w * (y - dev - b * x)) / np.sum(w))
        r = y - a - b * x
        pool, dev_new = _deviations(x, r, w, idx, centre)
        if np.max(np.abs(dev_new - dev)) < 1e-9:
            dev = dev_new
            break
        dev = dev_new
    return pool


def _within_slope(x: np.ndarray, y: np.ndarray, w: np.ndarray, labels: list[str | None]) -> float:
    """The common slope from variation within segments only. Segments differ in their proxy means,
    so a slope fitted across them would absorb their offsets (regression toward each segment's
    own mean); the within slope does not (the fixed-effects estimate)."""
    keys = np.array(["" if s is None else "=" + s for s in labels])
    dx, dy = np.empty(len(x)), np.empty(len(x))
    for key in set(keys.tolist()):
        i = keys == key
        dx[i] = x[i] - np.sum(w[i] * x[i]) / np.sum(w[i])
        dy[i] = y[i] - np.sum(w[i] * y[i]) / np.sum(w[i])
    sxx = float(np.sum(w * dx * dx))
    return float(np.sum(w * dx * dy) / sxx) if sxx > 0 else 0.0


def _deviations(x: np.ndarray, r: np.ndarray, w: np.ndarray, idx: dict[str, np.ndarray],
                centre: float) -> tuple[SegmentPool, np.ndarray]:
    """One empirical-Bayes step on the residuals ``r`` of the current pooled line. Each segment's
    deviation is parametrised at its own proxy mean: its offset there is estimated with error
    ``sigma^2 / n_s`` whatever its distance from the others' traffic."""
    moments: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    centres = {name: float(np.sum(w[i] * x[i]) / np.sum(w[i])) for name, i in idx.items()}
    for name, i in idx.items():
        design = np.column_stack([np.ones(len(i)), x[i] - centres[name]])
        xtwx = design.T @ (w[i, None] * design)
        moments[name] = (design, xtwx, design.T @ (w[i] * r[i]))
    # Within-segment residual variance: around each segment's own least-squares deviation.
    sse, dof = 0.0, 0.0
    raw: dict[str, np.ndarray] = {}
    for name, i in idx.items():
        design, xtwx, xtwr = moments[name]
        beta = np.linalg.pinv(xtwx) @ xtwr
        raw[name] = beta
        sse += float(np.sum(w[i] * (r[i] - design @ beta) ** 2))
        dof += len(i) - min(2, len(i))
    sigma2 = max(sse / max(dof, 1.0), 1e-12)
    names = list(idx)
    # Per coordinate (offset, slope deviation): the design is centred on each segment's own mean,
    # so X'WX is diagonal and the two are independent given the between-segment variances.
    sampling = np.array([[sigma2 / max(moments[n][1][j, j], 1e-300) for j in range(2)] for n in names])
    raw_b = np.array([raw[n] for n in names])
    informs = np.array([len(idx[n]) >= MIN_PAIRS and moments[n][1][1, 1] > 1e-12 for n in names])
    post = [_posterior(raw_b[:, j], sampling[:, j], informs) for j in range(2)]
    # The offset's error also carries how far the pool moved it from the segment's own estimate:
    # a segment that truly differs from the others is pulled toward them by about that much when
    # the few segments happen to look alike on the span (with three, often), and a reference
    # biased by it false-alarmed on a healthy demo stream (docs/detection.md).
    m0, v0, t0 = post[0]
    post[0] = (m0, v0 + np.where(np.isfinite(raw_b[:, 0]), (m0 - raw_b[:, 0]) ** 2, 0.0), t0)
    pool = SegmentPool(centre=centre, sigma2=sigma2, tau2=(post[0][2], post[1][2]))
    dev = np.zeros(len(x))
    for k, (name, i) in enumerate(idx.items()):
        design = moments[name][0]
        m = np.array([post[0][0][k], post[1][0][k]])
        dev[i] = design @ m
        ms = float(np.sum(w[i] * (r[i] - dev[i]) ** 2) / max(np.sum(w[i]), 1e-12))
        pool.segments[name] = [float(m[0]), float(m[1]), float(post[0][1][k]), 0.0, float(post[1][1][k]),
                               float(len(i)), ms, centres[name]]
    return pool, dev


_GRID = 80  # points of the between-segment s.d. grid


def _posterior(b: np.ndarray, v: np.ndarray, informs: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Posterior means and variances of the segments' deviations (raw estimates ``b`` with sampling
    variances ``v``), averaged over the between-segment s.d. ``t`` rather than given one estimate
    of it: a flat prior on ``t`` on a grid, the likelihood ``prod_i N(b_i; 0, v_i + t^2)`` of the
    segments with enough pairs (``informs``). With a handful of segments a point estimate of ``t`` is
    often 0 although they differ, and would pull each onto the pool with no uncertainty: an
    overconfident reference that breaks the budget. Also returns the posterior mean of ``t^2``, the
    variance of a segment never seen."""
    use = informs & np.isfinite(b)
    if use.sum() < 2:
        return np.zeros(len(b)), np.zeros(len(b)), 0.0
    top = 3.0 * math.sqrt(max(float(np.max(b[use] ** 2)), float(np.max(v[use]))))
    t2 = np.linspace(0.0, top, _GRID) ** 2  # flat in t
    var = v[use][None, :] + t2[:, None]
    loglik = -0.5 * np.sum(np.log(var) + b[use][None, :] ** 2 / var, axis=1)
    p = np.exp(loglik - loglik.max())
    p /= p.sum()
    shrink = t2[:, None] / (t2[:, None] + v[None, :])  # grid x segments
    means = shrink * b[None, :]
    variances = shrink * v[None, :]
    m = p @ means
    second = p @ (variances + means ** 2)
    return m, np.maximum(second - m * m, 0.0), float(p @ t2)


def star_tau(ref: ReferenceRelation, pool: SegmentPool) -> float:
    """The whole-stream level test's bias s.d.: the line's, plus the segment offsets' errors weighted
    by each segment's share of the reference pairs (independent errors)."""
    n = sum(s[5] for s in pool.segments.values())
    extra = sum((s[5] / n) ** 2 * s[2] for s in pool.segments.values()) if n else 0.0
    return math.hypot(ref.level_tau_, math.sqrt(extra) * ref.level_gain)


def segment_relation(ref: ReferenceRelation, pool: SegmentPool, segment: str) -> ReferenceRelation:
    """The segment's reference: the pooled line (fitted on audits less their segment's deviation)
    plus this segment's deviation, centred on the segment's own reference traffic, its residual
    scale shrunk toward the pool's, and the errors of its deviation (and of the pooled line at its
    traffic) added to those the calibration averages over."""
    out = copy.copy(ref)
    s = pool.segments.get(segment)
    u, d, c = (s[0], s[1], s[7]) if s is not None else (0.0, 0.0, ref.proxy_mean_)
    vuu, vud, vdd = pool.cov(segment)
    out.intercept_, out.slope_ = ref.intercept_ + u - d * c, ref.slope_ + d
    aa, ab, bb = ref.coef_cov_
    out.coef_cov_ = [aa + vuu - 2 * c * vud + c * c * vdd, ab + vud - c * vdd, bb + vdd]
    if s is not None and pool.sigma2 > 0:
        n = s[5]
        out.scale_ = ref.scale_ * math.sqrt((n * s[6] + PRIOR_DOF * pool.sigma2) / ((n + PRIOR_DOF) * pool.sigma2))
    out.proxy_mean_ = c
    out.audit_mean_ = out.intercept_ + out.slope_ * c
    out.n_ = pool.pairs(segment)
    # Bias s.d. in level-score units: the deviation's posterior error, plus the pooled line's own
    # error at this segment's traffic (intercept, and slope times the distance) in the part the
    # segment's own pairs did not replace (1 - B, B = V_uu / (sigma^2 / n_s) the weight on them).
    own = 1.0 - min(vuu * s[5] / pool.sigma2, 1.0) if s is not None and pool.sigma2 > 0 else 1.0
    line = math.hypot(ref.level_tau_, ref.slope_sd_ * abs(c - ref.proxy_mean_) / ref.proxy_sd_)
    out.level_tau_ = math.sqrt((own * line * out.level_gain / ref.level_gain) ** 2 + vuu * out.level_gain ** 2)
    out.slope_sd_ = math.hypot(ref.slope_sd_, math.sqrt(vdd) * ref.proxy_sd_ * out.level_gain)
    out.slope_tau_ = math.hypot(ref.slope_tau_, math.sqrt(vdd) * ref.proxy_sd_ / (out.scale_ * ref.slope_scale_))
    out.level_scores_ = np.asarray(pool.scores[0], dtype=float)
    out.slope_scores_ = np.asarray(pool.scores[1], dtype=float)
    return out
