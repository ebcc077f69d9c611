"""Seeded scenario generator covering every case of issue #4.

Each scenario yields the audited pairs one (proxy, audit, segment) test sees, in arrival order:
the first ``REF`` pairs are in control (the detector's reference), the change starts at pair
``change`` (``None``: nothing should fire). Proxies are already oriented (larger = better).
The oracle is told the true pre-change line and the shift of the score the change moves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

REF = 200
SLOPE, NOISE = 0.6, 0.8  # audit = 0.6 proxy + N(0, 0.8^2): Spearman ~0.6 between proxy and audit


@dataclass(frozen=True)
class Stream:
    ts: np.ndarray  # output time of each pair, in arrival order (late labels: not sorted)
    proxy: np.ndarray
    audit: np.ndarray
    weight: np.ndarray
    segment: np.ndarray | None = None  # each pair's segment (str), for the segmented cases
    offset: np.ndarray | None = None  # each pair's segment's true line less the Truth line (its offset)


@dataclass(frozen=True)
class Truth:
    """What the oracle knows: the pre-change line, the noise s.d., the score and its shift."""

    intercept: float
    slope: float
    sigma: float
    score: str  # "level": residual / sigma; "slope": residual / sigma * proxy deviation
    shift: float  # in s.d. of that score
    logistic: bool = False  # pass/fail: the true pass probability is 1 / (1 + exp(-(a + b p)))


@dataclass(frozen=True)
class Scenario:
    name: str
    change: int | None
    n: int
    make: Callable[[np.random.Generator], Stream]
    truth: Truth
    note: str = ""
    peak: int | None = None  # where the audit peaks (over-optimisation): alarms before it are counted


def _stream(p: np.ndarray, a: np.ndarray, w: np.ndarray | None = None, ts: np.ndarray | None = None) -> Stream:
    n = len(p)
    return Stream(np.arange(n, dtype=float) if ts is None else ts, p, a,
                  np.ones(n) if w is None else w)


def _line(rng: np.random.Generator, p: np.ndarray) -> np.ndarray:
    return SLOPE * p + rng.normal(scale=NOISE, size=len(p))


def _after(n: int, start: int) -> np.ndarray:
    return np.maximum(np.arange(n) - start, 0).astype(float)


LINE = Truth(0.0, SLOPE, NOISE, "level", 1.0)


def stable(n: int = 3000) -> Scenario:
    def make(rng: np.random.Generator) -> Stream:
        p = rng.normal(size=n)
        return _stream(p, _line(rng, p))
    return Scenario("stable", None, n, make, LINE)


def heavy_tails(n: int = 3000) -> Scenario:
    def make(rng: np.random.Generator) -> Stream:
        p = rng.normal(size=n)
        return _stream(p, SLOPE * p + 0.5 * rng.standard_t(2.5, size=n))
    return Scenario("heavy-tailed noise (t, 2.5 df)", None, n, make, Truth(0.0, SLOPE, 0.5 * 5**0.5, "level", 1.0))


def genuine_improvement(n: int = 3000, start: int = 500) -> Scenario:
    def make(rng: np.random.Generator) -> Stream:
        p = rng.normal(size=n) + 5.0 * _after(n, start) / (n - start)  # to 5 s.d. past the mean
        return _stream(p, _line(rng, p))
    return Scenario("genuine improvement, far beyond range", None, n, make, LINE)


def mix_shift(n: int = 3000, start: int = 500) -> Scenario:
    def make(rng: np.random.Generator) -> Stream:
        hard = rng.random(n) < np.where(np.arange(n) < start, 0.2, 0.8)
        p = np.where(hard, -1.5, 0.5) + 0.7 * rng.normal(size=n)
        return _stream(p, _line(rng, p))
    return Scenario("traffic mix shift to a harder segment", None, n, make, LINE)


def binary_stable(n: int = 3000) -> Scenario:
    def make(rng: np.random.Generator) -> Stream:
        p = rng.normal(size=n)
        return _stream(p, (rng.random(n) < 1 / (1 + np.exp(-(1.0 + p)))).astype(float))
    return Scenario("pass/fail audit, stable", None, n, make, LINE)


def beyond_range(n: int = 1500, start: int = 500) -> Scenario:
    def make(rng: np.random.Generator) -> Stream:
        lift = _after(n, start) / 100  # the proxy climbs 1 s.d. per 100 audits, audit flat
        p = rng.normal(size=n) + lift
        return _stream(p, SLOPE * (p - lift) + rng.normal(scale=NOISE, size=n))
    # the gap grows 0.6/0.8 s.d. per 100 audits; the oracle is tuned to a 1 s.d. gap
    return Scenario("proxy climbs beyond range, audit flat", start, n, make, LINE)


def proxy_up_audit_down(n: int = 1500, start: int = 500) -> Scenario:
    def make(rng: np.random.Generator) -> Stream:
        step = (np.arange(n) >= start).astype(float)
        p = rng.normal(size=n) + step
        return _stream(p, SLOPE * (p - step) - 0.3 * step + rng.normal(scale=NOISE, size=n))
    return Scenario("proxy up 1 s.d., audit down 0.3", start, n, make, Truth(0, SLOPE, NOISE, "level", 0.9 / NOISE))


def audit_drop(n: int = 1500, start: int = 500) -> Scenario:
    def make(rng: np.random.Generator) -> Stream:
        p = rng.normal(size=n)
        return _stream(p, _line(rng, p) - 0.8 * (np.arange(n) >= start))
    return Scenario("audit drops 0.8, proxy flat", start, n, make, LINE)


def relation_lost(n: int = 1500, start: int = 500) -> Scenario:
    def make(rng: np.random.Generator) -> Stream:
        p = rng.normal(size=n)
        hidden = np.where(np.arange(n) >= start, rng.normal(size=n), p)
        return _stream(p, _line(rng, hidden))
    # E[(r / sigma) * x] drops by slope / sigma; the product's s.d. is ~1.2 after the change
    return Scenario("proxy turns to noise (same marginal)", start, n, make,
                    Truth(0, SLOPE, NOISE, "slope", SLOPE / NOISE / 1.2))


def one_segment(n: int = 1500, start: int = 500) -> Scenario:
    """The per-segment test of the one segment (30% of traffic) whose audits drop."""
    def make(rng: np.random.Generator) -> Stream:
        p = rng.normal(size=n) - 0.5
        return _stream(p, _line(rng, p) - 0.8 * (np.arange(n) >= start))
    return Scenario("one segment: its audits drop 0.8", start, n, make, LINE)


def binary_drop(n: int = 1500, start: int = 500) -> Scenario:
    def make(rng: np.random.Generator) -> Stream:
        p = rng.normal(size=n)
        prob = 1 / (1 + np.exp(-(1.0 + p))) - 0.2 * (np.arange(n) >= start)
        return _stream(p, (rng.random(n) < prob).astype(float))
    # pass rate ~0.7 on average, residual s.d. ~0.43: a 0.2 drop is ~0.47 s.d.
    truth = Truth(1.0, 1.0, 0.43, "level", 0.2 / 0.43, logistic=True)
    return Scenario("pass/fail: pass rate drops 0.2", start, n, make, truth)


def lower_is_better(n: int = 1500, start: int = 500) -> Scenario:
    def make(rng: np.random.Generator) -> Stream:
        rush = 4.0 * (np.arange(n) >= start)
        minutes = 10 + 4 * rng.normal(size=n) - rush  # resolution time drops: the bot rushes
        quality = -0.15 * (minutes + rush) + rng.normal(scale=NOISE, size=n)
        return _stream(-minutes, quality)  # the pipeline orients direction: lower
    return Scenario("resolution time (lower=better) drops, quality flat", start, n, make,
                    Truth(0, 0.15, NOISE, "level", 0.6 / NOISE))


def late_labels(n: int = 1500, start: int = 500) -> Scenario:
    def make(rng: np.random.Generator) -> Stream:
        p = rng.normal(size=n)
        a = _line(rng, p) - 0.8 * (np.arange(n) >= start)
        ts = np.arange(n, dtype=float)
        # labels arrive in random order within blocks of 100 audits (minutes to days late)
        order = np.concatenate([b + rng.permutation(100) for b in range(0, n, 100)])
        order = order[order < n]
        return _stream(p[order], a[order], ts=ts[order])
    return Scenario("late labels (shuffled in blocks of 100), audit drops", start, n, make, LINE)


def weighted(n: int = 1500, start: int = 500) -> Scenario:
    def make(rng: np.random.Generator) -> Stream:
        in_a = rng.random(n) < 1 / 3  # 80% of traffic, audited 8x less: weight 8
        p = rng.normal(size=n)
        a = _line(rng, p) - 1.2 * (in_a & (np.arange(n) >= start))
        return _stream(p, a, w=np.where(in_a, 8.0, 1.0))
    return Scenario("weighted audit sample, heavy stratum drops 1.2", start, n, make,
                    Truth(0, SLOPE, NOISE, "level", 0.4 / NOISE))


def gao(n: int = 1800, start: int = 200) -> Scenario:
    """Gao et al.: d grows linearly; proxy ~ d, gold d (1 - d/4) peaks at d = 2 (pair 1200)."""
    def make(rng: np.random.Generator) -> Stream:
        d = 3.0 * _after(n, start) / 1500
        p = d + rng.normal(size=n)
        return _stream(p, d * (1 - d / 4) + 0.8 * (p - d) + rng.normal(scale=0.5, size=n))
    return Scenario("gradual over-optimisation (Gao), peak at +1000", start, n, make,
                    Truth(0, 0.8, 0.5, "level", 1.0), note="caught before gold peaks", peak=start + 1000)


def steeper(n: int = 3000, start: int = 500) -> Scenario:
    """Genuine improvement that pays more audit per proxy unit than the reference promised."""
    def make(rng: np.random.Generator) -> Stream:
        lift = 3.0 * _after(n, start) / (n - start)
        p = rng.normal(size=n) + lift
        return _stream(p, _line(rng, p) + 0.4 * lift)
    return Scenario("improvement along a steeper relation", None, n, make, LINE)


def bounded_spread(n: int = 3000, start: int = 500) -> Scenario:
    """A probability audit (Beta, mean 0.45 + 0.08 proxy) whose s.d. grows ~1.7x (concentration
    20 -> 5) while the proxy climbs 3 s.d.: the mean relation holds, the spread does not."""
    def make(rng: np.random.Generator) -> Stream:
        lift = 3.0 * _after(n, start) / (n - start)
        p = rng.normal(size=n) + lift
        mean = np.clip(0.45 + 0.08 * p, 0.02, 0.98)
        conc = np.where(np.arange(n) < start, 20.0, 5.0)
        return _stream(p, rng.beta(mean * conc, (1 - mean) * conc))
    return Scenario("bounded audit, spread grows, mean relation holds", None, n, make, LINE)


def best_of_n(n: int = 2000, start: int = 500, peak: int = 1150) -> Scenario:
    """Best-of-n against a trained reward model on real data (:mod:`bench.bestofn`): n doubles
    every 150 audited pairs from pair 500; the gold model's probability peaks over pairs 1100-1199
    (n ~ 16-25, ``python -m bench.bestofn``) and falls while the proxy keeps climbing."""
    def make(rng: np.random.Generator) -> Stream:
        from bench.bestofn import best_of, schedule
        p, g = best_of(schedule(n, start), rng)
        return _stream(p, g)
    # The oracle is told the gap at the end of the peak block (0.05 below the line, s.d. 0.22).
    per = (n - start) // 10
    return Scenario(f"best-of-n vs a trained reward model (real data), n doubles every {per}, gold peaks ~{peak}",
                    start, n, make, Truth(0.51, 0.044, 0.22, "level", 0.25), note="caught before gold peaks", peak=peak)


# Segmented cases (issue #14): latent quality q ~ N(mu_s, 1) per segment, proxy = q + N(0, 0.8^2),
# audit = q + N(0, 0.5^2). The proxy measures quality with noise, so at the same proxy a harder
# segment's audits run lower: E[audit | proxy, s] = mu_s + BETA (proxy - mu_s), residual s.d. 0.8.
BETA = 1.0 / 1.64
SEG_TRUTH = Truth(0.0, BETA, 0.8, "level", 1.0)


def _segmented(rng: np.random.Generator, names: list[str], mus: dict[str, float], share: np.ndarray,
               lift: np.ndarray | None = None, drop: np.ndarray | None = None) -> Stream:
    """Pairs whose segment is drawn with per-pair probabilities ``share`` (rows: pairs); ``lift``
    inflates the proxy and ``drop`` lowers the audit of a pair without changing its quality."""
    n = len(share)
    pick = np.minimum((rng.random(n)[:, None] > np.cumsum(share, axis=1)).sum(axis=1), len(names) - 1)
    seg = np.array([names[i] for i in pick])
    mu = np.array([mus[x] for x in seg])
    q = mu + rng.normal(size=n)
    p = q + rng.normal(scale=0.8, size=n)
    lift = np.zeros(n) if lift is None else lift
    drop = np.zeros(n) if drop is None else drop
    return Stream(np.arange(n, dtype=float), p + lift, q + rng.normal(scale=0.5, size=n) - drop, np.ones(n),
                  seg, mu * (1.0 - BETA))


SEGMENTS = ["chat", "email", "voice", "billing"]
SEG_MU = {"chat": 0.5, "email": 0.0, "voice": -1.0, "billing": -0.5}
SEG_SHARE = np.array([0.5, 0.3, 0.15, 0.05])


def small_segment_gamed(n: int = 3000, start: int = 500) -> Scenario:
    """Only billing (5% of traffic: ~10 of the 200 reference pairs) is gamed: its proxy rises
    1.5 s.d. while its audits fall 0.3."""
    def make(rng: np.random.Generator) -> Stream:
        probe = _segmented(rng, SEGMENTS, SEG_MU, np.tile(SEG_SHARE, (n, 1)))
        after = (np.arange(n) >= start) & (probe.segment == "billing")
        return Stream(probe.ts, probe.proxy + 1.5 * after, probe.audit - 0.3 * after, probe.weight,
                      probe.segment, probe.offset)
    return Scenario("segments: 5% segment gamed (proxy +1.5, audit -0.3)", start, n, make,
                    Truth(0.0, BETA, 0.8, "level", (0.3 + 1.5 * BETA) / 0.8), note="segmented")


def small_segment_gamed_alike(n: int = 3000, start: int = 500) -> Scenario:
    """As above, with segments that differ little at the same proxy (quality means -0.1 to 0.1):
    the pool gives the small segment a reference nearly as certain as the whole stream's."""
    names, mus = ["web", "app", "api", "refunds"], {"web": 0.1, "app": 0.0, "api": -0.1, "refunds": 0.0}

    def make(rng: np.random.Generator) -> Stream:
        probe = _segmented(rng, names, mus, np.tile(SEG_SHARE, (n, 1)))
        after = (np.arange(n) >= start) & (probe.segment == "refunds")
        return Stream(probe.ts, probe.proxy + 1.5 * after, probe.audit - 0.3 * after, probe.weight,
                      probe.segment, probe.offset)
    return Scenario("segments: 5% segment gamed, segments alike", start, n, make,
                    Truth(0.0, BETA, 0.8, "level", (0.3 + 1.5 * BETA) / 0.8), note="segmented")


def segment_mix_shift(n: int = 3000, start: int = 500) -> Scenario:
    """Two segments 0.8 audit s.d. apart at the same proxy; the hard one goes from 20% to 80%."""
    def make(rng: np.random.Generator) -> Stream:
        hard = np.where(np.arange(n) < start, 0.2, 0.8)
        return _segmented(rng, ["easy", "hard"], {"easy": 1.0, "hard": -1.0}, np.column_stack([1 - hard, hard]))
    return Scenario("segments: mix shift to a segment lower at the same proxy", None, n, make, SEG_TRUTH,
                    note="segmented")


def segment_stable(n: int = 3000) -> Scenario:
    """Four segments that differ at the same proxy, nothing changes."""
    def make(rng: np.random.Generator) -> Stream:
        return _segmented(rng, SEGMENTS, SEG_MU, np.tile(SEG_SHARE, (n, 1)))
    return Scenario("segments: four differing segments, stable", None, n, make, SEG_TRUTH, note="segmented")


def new_segment(n: int = 3000, start: int = 1000) -> Scenario:
    """A fifth segment (10% of traffic) first appears after the reference span, its own relation
    within the spread of the others."""
    def make(rng: np.random.Generator) -> Stream:
        share = np.tile(np.array([0.5, 0.3, 0.15, 0.05, 0.0]), (n, 1))
        share[start:] = [0.45, 0.27, 0.13, 0.05, 0.1]
        return _segmented(rng, [*SEGMENTS, "refunds"], {**SEG_MU, "refunds": -0.25}, share)
    return Scenario("segments: a new segment appears after the span", None, n, make, SEG_TRUTH, note="segmented")


def all_scenarios() -> list[Scenario]:
    return [stable(), heavy_tails(), binary_stable(), genuine_improvement(), mix_shift(), steeper(),
            bounded_spread(), beyond_range(), proxy_up_audit_down(), audit_drop(), relation_lost(), one_segment(),
            binary_drop(), lower_is_better(), late_labels(), weighted(), gao(), best_of_n(),
            segment_stable(), segment_mix_shift(), new_segment(), small_segment_gamed(),
            small_segment_gamed_alike()]
