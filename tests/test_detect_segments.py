"""One reference span per (proxy, audit), segments partially pooled (issue #14): the math, the
detector, the bank in a real pipeline (real SQLite store), and the deployment budget by simulation.

The streams follow a proxy that measures quality with noise: quality q ~ N(mu_s, 1) per segment,
proxy = q + N(0, 0.8^2), audit = q + N(0, 0.5^2). At the same proxy a harder segment's audits run
lower (E[audit | proxy, s] = mu_s + BETA (proxy - mu_s)): a pooled line is wrong for a new mix.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import BASE_CONFIG

from agent.clock import VirtualClock
from agent.config import config_from_mapping
from agent.detect.base import PairObservation
from agent.detect.decoupling import DecouplingDetector
from agent.detect.pooled import PooledDetector
from agent.detect.segments import SegmentPool, fit_pool
from agent.pipeline import Pipeline
from agent.store import Store

ARL0 = 200_000.0
BETA = 1.0 / 1.64
MU = {"chat": 0.5, "email": 0.0, "voice": -1.0, "billing": -0.5, "easy": 1.0, "hard": -1.0,
      "web": 0.1, "app": 0.0, "api": -0.1, "refunds": 0.0}
T0 = 1_790_000_000.0


def pairs(rng: np.random.Generator, n: int, share: dict[str, float], start: int = 0) -> list[PairObservation]:
    names = list(share)
    seg = rng.choice(names, size=n, p=[share[s] for s in names])
    q = np.array([MU[s] for s in seg]) + rng.normal(size=n)
    p = q + rng.normal(scale=0.8, size=n)
    a = q + rng.normal(scale=0.5, size=n)
    return [PairObservation(float(start + i), float(p[i]), float(a[i]), 1.0, str(seg[i])) for i in range(n)]


SHARE = {"chat": 0.5, "email": 0.3, "voice": 0.15, "billing": 0.05}


class Deployment:
    """The whole-stream test and its segments' tests, fed as agent/bank.py feeds them."""

    def __init__(self, arl0: float, make: type[DecouplingDetector] = PooledDetector) -> None:
        self.make, self.arl0 = make, arl0
        self.star = make(arl0)
        self.tests: dict[str, DecouplingDetector] = {}
        self.alarming: dict[str, bool] = {}
        self.alarms: list[tuple[str, int]] = []

    def feed(self, obs: PairObservation, tick: bool = True) -> None:
        self.star.observe_pair(obs)
        seg = obs.segment
        assert seg is not None
        det = self.tests.setdefault(seg, self.make(self.arl0))
        if det.reference_info() is None and self.star.pools_segments:
            pinned = self.star.segment_reference(seg)
            if pinned is not None:
                det.adopt_reference(pinned)
        if det.reference_info() is not None or not self.star.pools_segments:
            det.observe_pair(obs)
        if tick:
            for name, test in (("*", self.star), (seg, det)):
                now = test.verdict(obs.ts).state == "alarm"
                if now and not self.alarming.get(name, False):
                    self.alarms.append((name, int(obs.ts)))
                self.alarming[name] = now


# -- the pool ----------------------------------------------------------------------------------
def test_pool_recovers_the_segments_offsets_at_the_same_proxy_and_the_within_slope() -> None:
    obs = pairs(np.random.default_rng(1), 4000, {"chat": 0.4, "email": 0.3, "voice": 0.3})
    x, y = np.array([o.proxy for o in obs]), np.array([o.audit for o in obs])
    pool = fit_pool(x, y, np.ones(len(x)), [o.segment for o in obs])
    # at the same proxy, chat's audits run (0.5 - (-1.0)) * (1 - BETA) = 0.59 above voice's
    gap = pool.deviation("chat", 0.0) - pool.deviation("voice", 0.0)
    assert gap == pytest.approx(1.5 * (1 - BETA), abs=0.08)
    assert pool.tau2[0] > 0 and pool.sigma2 == pytest.approx(0.64, rel=0.1)
    # an unseen segment gets no deviation and the between-segment variance as its uncertainty
    assert pool.deviation("refunds", 1.0) == 0.0 and pool.cov("refunds") == (pool.tau2[0], 0.0, pool.tau2[1])
    assert SegmentPool.from_dict(pool.to_dict()) == pool


PASS_RATES = {"billing": 0.8, "technical": 0.52, "account": 0.68}


def pass_fail(seed: int, n: int) -> list[PairObservation]:
    """Three equal segments with 0/1 audits at different pass rates, weakly related to the proxy
    (a word count), as in the demo; nothing changes."""
    rng = np.random.default_rng(seed)
    names, out = list(PASS_RATES), []
    for i in range(n):
        seg = names[int(rng.integers(3))]
        words = rng.normal(14.5, 3.0)
        rate = min(max(PASS_RATES[seg] + 0.02 * (words - 14.5), 0.02), 0.98)
        out.append(PairObservation(T0 + i, float(words), float(rng.random() < rate), 1.0, seg))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1060, 1168, 1186])
def test_a_healthy_segment_whose_span_ran_high_by_chance_does_not_page(seed: int) -> None:
    # Seeds whose reference span (~66 pairs of "technical") ran >= 1.5 s.d. above its true pass
    # rate, as a healthy demo stream's did when it paged: the pool pulled the segment further
    # toward the others and its threshold did not know it. Before its offset's error carried that
    # pull, 4 of the first 12 such seeds (1000-1399) paged in 4,000 healthy pairs, these three
    # among them; now 1 of 12 does (1120, after 3,600 pairs), within the budget's share.
    dep = Deployment(ARL0)
    for obs in pass_fail(seed, 4000):
        dep.feed(obs)
    assert not dep.alarms, dep.alarms


def test_without_segments_the_pooled_detector_is_the_unpooled_one() -> None:
    rng = np.random.default_rng(4)
    plain, pooled = DecouplingDetector(ARL0), PooledDetector(ARL0)
    for i in range(600):
        p = float(rng.normal())
        obs = PairObservation(float(i), p, 0.6 * p + float(rng.normal(scale=0.8)) - (0.8 if i >= 400 else 0.0))
        plain.observe_pair(obs)
        pooled.observe_pair(obs)
        a, b = plain.verdict(float(i)), pooled.verdict(float(i))
        assert (a.state, a.statistic, a.threshold) == (b.state, b.statistic, b.threshold) or (
            math.isnan(a.statistic) and math.isnan(b.statistic))
    assert pooled.verdict(600.0).state == "alarm"


def test_every_segment_gets_its_reference_from_the_span_and_a_small_one_is_less_certain() -> None:
    dep = Deployment(ARL0)
    for obs in pairs(np.random.default_rng(2), 200, SHARE):
        dep.feed(obs, tick=False)
    assert dep.star.reference_info() is not None
    span = dep.star.reference_info()
    refs = {}
    for seg in [*SHARE, "refunds"]:  # refunds: not in the span
        pinned = dep.star.segment_reference(seg)
        assert pinned is not None and pinned["span"] == [span.first_ts, span.last_ts]
        refs[seg] = pinned
    big, small, new = (refs[s]["thresholds"]["level"][0] for s in ("chat", "billing", "refunds"))
    assert big < small <= new  # fewer reference pairs: more uncertainty, a higher threshold
    assert refs["billing"]["reference"]["n_"] < 20


def test_a_small_gamed_segment_is_caught_that_unpooled_tests_never_see() -> None:
    """Segments that differ little at the same proxy: the pool gives refunds (5%, ~10 reference
    pairs) a reference nearly as certain as the pool's."""
    def gamed(make: type[DecouplingDetector]) -> list[tuple[str, int]]:
        dep = Deployment(ARL0, make)
        for obs in pairs(np.random.default_rng(3), 2500, {"web": 0.5, "app": 0.3, "api": 0.15, "refunds": 0.05}):
            if obs.ts >= 500 and obs.segment == "refunds":
                obs = PairObservation(obs.ts, obs.proxy + 1.5, obs.audit - 0.3, 1.0, obs.segment)
            dep.feed(obs)
        return dep.alarms

    pooled = gamed(PooledDetector)
    assert "refunds" in {name for name, _ in pooled} and all(at >= 500 for _, at in pooled), pooled
    assert {name for name, _ in pooled} <= {"refunds", "*"}  # the whole stream holds the gamed pairs too
    assert "refunds" not in {name for name, _ in gamed(DecouplingDetector)}  # never 200 pairs of its own


@pytest.mark.parametrize("seed", [3, 4])  # seeds where one line for all alarms
def test_a_mix_shift_toward_a_segment_lower_at_the_same_proxy_is_quiet(seed: int) -> None:
    def shifted(make: type[DecouplingDetector]) -> list[tuple[str, int]]:
        rng = np.random.default_rng(seed)
        dep = Deployment(ARL0, make)
        for obs in pairs(rng, 500, {"easy": 0.8, "hard": 0.2}) + pairs(rng, 2000, {"easy": 0.2, "hard": 0.8}, 500):
            dep.feed(obs)
        return dep.alarms

    assert shifted(PooledDetector) == []
    assert [name for name, _ in shifted(DecouplingDetector)][:1] == ["*"]  # one line for all: the stream alarms


# -- the bank, in a real pipeline ----------------------------------------------------------------
def _pipeline(tmp_path: Path) -> tuple[Pipeline, VirtualClock]:
    tree: dict[str, Any] = {**BASE_CONFIG, "proxies": [{"name": "score", "field": "proxy.score"}],
                            "audits": [{"name": "quality", "field": "audit.quality"}],
                            "detection": {"reference_pairs": 200}}
    clock = VirtualClock(T0)
    return Pipeline(config_from_mapping(tree, {}), Store(tmp_path), clock), clock


def _ingest(pipeline: Pipeline, clock: VirtualClock, obs: list[PairObservation]) -> None:
    for o in obs:
        clock.advance_to(T0 + o.ts)
        pipeline.ingest_items("test", [{"id": f"r{int(o.ts)}", "ts": clock.now(), "labels": {"segment": o.segment},
                                        "proxy": {"score": o.proxy}, "audit": {"quality": o.audit}}])
    pipeline.detect()


def test_the_bank_gives_segments_the_span_and_a_rebaseline_resets_it_for_all(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    pipeline, clock = _pipeline(tmp_path)
    span = pairs(rng, 200, SHARE)
    _ingest(pipeline, clock, span[:199])
    assert pipeline.view.snapshot.references == {}  # the span is not over: no segment is fitted on its own
    _ingest(pipeline, clock, span[199:])
    refs = pipeline.view.snapshot.references
    assert sorted(k[2] for k in refs) == ["*", *sorted(SHARE)]  # billing: a handful of pairs
    assert {(r.first_ts, r.last_ts) for r in refs.values()} == {(T0, T0 + 199)}
    [fitted] = [e for e in pipeline.store.recent_events() if e.get("event") == "reference_fitted"]
    assert (fitted["first_ts"], fitted["last_ts"], fitted["segments"]) == (T0, T0 + 199, sorted(SHARE))

    pipeline.rebaseline(segment="billing")  # one span per pair: every segment starts again
    assert pipeline.view.snapshot.references == {}
    _ingest(pipeline, clock, pairs(rng, 200, {**SHARE, "refunds": 0.0}, 1000))
    assert {(r.first_ts, r.last_ts) for r in pipeline.view.snapshot.references.values()} == {(T0 + 1000, T0 + 1199)}
    pipeline.checkpoint()
    pipeline.store.close()

    # after a restart, a segment first seen now gets the pooled line with the prior's uncertainty
    again, clock = _pipeline(tmp_path)
    _ingest(again, clock, [PairObservation(1300.0, 0.1, 0.0, 1.0, "refunds")])
    info = again.view.snapshot.references[("score", "quality", "refunds")]
    assert (info.origin, info.first_ts, info.last_ts) == ("fitted", T0 + 1000, T0 + 1199)
    again.store.close()


# -- the deployment budget ------------------------------------------------------------------------
@pytest.mark.slow
def test_deployment_false_alarms_stay_within_budget_with_pooled_segments() -> None:
    """1 pair x ('*' + 4 segments, one of 5% and one appearing after the span), arl0 = 2 * n_pairs
    * audits_between_false_alarms per test, segments that differ at the same proxy. A small budget
    (one false alarm per 250 audits) makes the count large enough to test."""
    budget, n_pairs = 250, 1
    arl0 = 2 * n_pairs * budget
    audits, alarms = 8_000, 0
    for deployment in range(4):
        rng = np.random.default_rng(300 + deployment)
        dep = Deployment(arl0)
        stream = pairs(rng, 1000, SHARE) + pairs(rng, audits - 1000, {
            "chat": 0.45, "email": 0.25, "voice": 0.15, "billing": 0.05, "refunds": 0.1}, 1000)
        for obs in stream:
            dep.feed(obs, tick=obs.ts % 5 == 0)
        alarms += len(dep.alarms)
    total = 4 * audits
    print("false alarms", alarms, "budget", total / budget)
    assert alarms <= total / budget, (alarms, total / budget)


def test_an_explicit_span_is_the_reference_whatever_the_count_and_survives_a_restart(tmp_path: Path) -> None:
    """``detection.reference_span``: every audited output from start to end, fitted at the first after it."""
    rng = np.random.default_rng(9)
    tree: dict[str, Any] = {**BASE_CONFIG, "proxies": [{"name": "score", "field": "proxy.score"}],
                            "audits": [{"name": "quality", "field": "audit.quality"}],
                            "detection": {"reference_span": {"start": T0 + 50, "end": T0 + 349}}}
    config = config_from_mapping(tree, {})
    clock = VirtualClock(T0)
    pipeline = Pipeline(config, Store(tmp_path), clock)
    stream = pairs(rng, 400, SHARE)
    _ingest(pipeline, clock, stream[:350])
    assert pipeline.view.snapshot.references == {}  # 300 pairs in the span, more than reference_pairs: not yet
    pipeline.checkpoint()
    pipeline.store.close()
    again = Pipeline(config, Store(tmp_path), clock)
    _ingest(again, clock, stream[350:])
    star = again.bank.detectors[("score", "quality", "*")]
    info = star.reference_info()
    assert info is not None and (info.first_ts, info.last_ts) == (T0 + 50, T0 + 349)
    assert star.verdict(clock.now()).eager.reference_pairs == 300
    assert {(r.first_ts, r.last_ts) for r in again.view.snapshot.references.values()} == {(T0 + 50, T0 + 349)}
    again.store.close()
    with pytest.raises(Exception, match="end must be after start"):
        config_from_mapping({**tree, "detection": {"reference_span": {"start": 5, "end": 1}}}, {})
