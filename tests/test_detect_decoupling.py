"""The decoupling detector, scenario by scenario (issue #4). Seeded; each test one property."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable

import numpy as np
import pytest

from agent.detect.base import PairObservation, Verdict
from agent.detect.decoupling import DecouplingDetector
from agent.detect.reference import ReferenceRelation

ARL0 = 200_000.0  # the pipeline's value for one pair at the default 100,000 audits per alarm
REF = 200
SLOPE, NOISE = 0.6, 0.8  # audit = 0.6 * proxy + N(0, 0.8^2): rank correlation ~0.6


def stream(seed: int, n: int, proxy: Callable[[np.ndarray, np.random.Generator], np.ndarray],
           audit: Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]) -> list[PairObservation]:
    """Pairs for t = 0..n-1; ``proxy(t, rng)`` and ``audit(t, proxy, rng)`` are vectorised."""
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=float)
    p = proxy(t, rng)
    a = audit(t, p, rng)
    return [PairObservation(float(i), float(x), float(y)) for i, x, y in zip(t, p, a, strict=True)]


def run(det: DecouplingDetector, pairs: Iterable[PairObservation]) -> tuple[int | None, Verdict]:
    """Feed pairs, tick after each; return the index of the first alarm (or None), last verdict."""
    v = Verdict("ok")
    for i, obs in enumerate(pairs):
        det.observe_pair(obs)
        v = det.verdict(obs.ts)
        if v.state == "alarm":
            return i, v
    return None, v


def normal_proxy(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return rng.normal(size=len(t))


def on_line(t: np.ndarray, p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return SLOPE * p + rng.normal(scale=NOISE, size=len(t))


def after(t: np.ndarray, start: float) -> np.ndarray:
    return np.maximum(t - start, 0.0)


# -- warm-up, thresholds ---------------------------------------------------------------------
def test_warming_up_is_a_warn_never_a_silent_ok() -> None:
    det = DecouplingDetector(ARL0)
    for obs in stream(0, REF - 1, normal_proxy, on_line):
        det.observe_pair(obs)
        v = det.verdict(obs.ts)
        assert (v.state, v.reason) == ("warn", "warming up")
    det.observe_pair(PairObservation(1e3, 0.0, 0.0))
    assert det.verdict(1e3).state == "ok"


def test_verdict_carries_the_documented_details() -> None:
    det = DecouplingDetector(ARL0)
    _, v = run(det, stream(1, 400, normal_proxy, on_line))
    for key in ("gap", "gap_lower", "gap_upper", "rank_corr_reference", "rank_corr_window", "samples",
                "warn_threshold", "since", "reference_pairs"):
        assert getattr(v.estimates, key) is not None
    assert v.estimates.gap_lower < v.estimates.gap < v.estimates.gap_upper
    assert v.estimates.gap_lower < 0 < v.estimates.gap_upper
    assert v.estimates.warn_threshold < v.threshold
    assert v.estimates.rank_corr_window == pytest.approx(v.estimates.rank_corr_reference, abs=0.15)
    json.dumps(v.estimates.reported(), allow_nan=False)


def test_reference_estimation_error_is_about_one_over_sqrt_n() -> None:
    pairs = stream(2, REF, normal_proxy, on_line)
    ref = ReferenceRelation().fit([o.proxy for o in pairs], [o.audit for o in pairs])
    assert ref.level_tau_ == pytest.approx(1 / math.sqrt(REF), rel=0.25)
    assert ref.slope_tau_ == pytest.approx(1 / math.sqrt(REF), rel=0.25)
    # a bigger reference, a smaller error and a lower threshold for the same ARL
    big = DecouplingDetector(ARL0, reference_pairs=2000)
    small = DecouplingDetector(ARL0, reference_pairs=REF)
    for obs in stream(3, 2000, normal_proxy, on_line):
        big.observe_pair(obs)
        small.observe_pair(obs)
    assert big.verdict(0).threshold < small.verdict(0).threshold


# -- false alarms ------------------------------------------------------------------------------
@pytest.mark.slow
def test_deployment_false_alarms_stay_within_budget_with_estimated_references() -> None:
    """2 pairs x ('*' + 3 segments), arl0 = 2 * n_pairs * audits_between_false_alarms per test.

    A small budget (one false alarm per 250 audits) makes the count large enough to test; the
    references are estimated from each deployment's own first 200 pairs.
    """
    budget, n_pairs, segments = 250, 2, 3
    arl0 = 2 * n_pairs * budget
    audits, ticks_every = 12_000, 5
    alarms = 0
    for deployment in range(3):
        rng = np.random.default_rng(100 + deployment)
        dets = {(p, s): DecouplingDetector(arl0) for p in range(n_pairs) for s in ("*", 0, 1, 2)}
        alarming = dict.fromkeys(dets, False)
        seg = rng.choice(segments, size=audits, p=[0.5, 0.3, 0.2])
        proxies = rng.normal(size=(n_pairs, audits)) + seg  # segments differ, same relation
        audit_vals = SLOPE * proxies + rng.normal(scale=NOISE, size=(n_pairs, audits))
        for i in range(audits):
            for p in range(n_pairs):
                obs = PairObservation(float(i), float(proxies[p, i]), float(audit_vals[p, i]))
                dets[(p, "*")].observe_pair(obs)
                dets[(p, int(seg[i]))].observe_pair(obs)
            if i % ticks_every == 0:
                for key, det in dets.items():
                    now = det.verdict(float(i)).state == "alarm"
                    alarms += now and not alarming[key]
                    alarming[key] = now
    total = 3 * audits
    print("false alarms", alarms, "budget", total / budget)
    assert alarms <= total / budget, (alarms, total / budget)


@pytest.mark.slow
@pytest.mark.parametrize(("noise", "reps"), [("t2.5", 4), ("binary", 12)])
def test_single_test_false_alarm_rate_within_arl0_for_hard_noise(noise: str, reps: int) -> None:
    # 0/1 audits over 12 references (the rate is an average over references, dominated by a
    # few biased ones; 4 were too few to see it): 57 against a budget of 72. Before alarms held
    # for their excursion, a CUSUM hovering at its threshold re-alarmed on every re-crossing
    # (87 here), which the run-length calibration never counted.
    arl0, n = 1_000.0, 6_000
    alarms = 0
    for rep in range(reps):
        rng = np.random.default_rng(200 + rep)
        p = rng.normal(size=REF + n)
        if noise == "binary":
            a = (rng.random(REF + n) < 1 / (1 + np.exp(-(1.5 + p)))).astype(float)
        else:
            a = SLOPE * p + 0.5 * rng.standard_t(2.5, size=REF + n)
        det = DecouplingDetector(arl0)
        alarming = False
        for i in range(REF + n):
            det.observe_pair(PairObservation(float(i), float(p[i]), float(a[i])))
            if i % 2 == 0:
                now = det.verdict(float(i)).state == "alarm"
                alarms += now and not alarming
                alarming = now
    print("false alarms", alarms, "budget", reps * n / arl0)
    assert alarms <= reps * n / arl0, alarms


# -- must alarm --------------------------------------------------------------------------------
def test_proxy_climbing_beyond_reference_range_with_flat_audit_alarms() -> None:
    # after pair 300 the proxy climbs 1 s.d. per 100 pairs, past everything the reference saw;
    # the audit stays where it was.
    det = DecouplingDetector(ARL0)
    pairs = stream(4, 1000, lambda t, rng: rng.normal(size=len(t)) + after(t, 300) / 100,
                   lambda t, p, rng: SLOPE * (p - after(t, 300) / 100) + rng.normal(scale=NOISE, size=len(t)))
    i, v = run(det, pairs)
    assert i is not None and 300 < i < 600
    # zero gain per proxy unit: the curvature test may see it before the level test does
    assert v.reason in ("proxy_inflated", "gains_bending")
    assert v.estimates.gap > 0 and v.estimates.since >= 300


def test_proxy_inflated_and_audit_falling_alarms() -> None:
    det = DecouplingDetector(ARL0)
    pairs = stream(5, 800, lambda t, rng: rng.normal(size=len(t)) + 1.0 * (t >= 300),
                   lambda t, p, rng: SLOPE * (p - 1.0 * (t >= 300)) - 0.3 * (t >= 300)
                   + rng.normal(scale=NOISE, size=len(t)))
    i, v = run(det, pairs)
    assert i is not None and 300 < i < 450
    assert v.reason == "proxy_inflated"


def test_audit_drop_with_flat_proxy_alarms_audit_dropped() -> None:
    det = DecouplingDetector(ARL0)
    pairs = stream(6, 800, normal_proxy,
                   lambda t, p, rng: on_line(t, p, rng) - 0.8 * (t >= 300))
    i, v = run(det, pairs)
    assert i is not None and 300 < i < 400
    assert v.reason == "audit_dropped"
    assert v.estimates.excursion_gap == pytest.approx(0.8, abs=0.3)
    for obs in pairs[i + 1 : i + 201]:
        det.observe_pair(obs)
    assert det.verdict(pairs[i + 200].ts).estimates.gap_lower > 0  # window: post-change only


def test_relation_lost_alarms_relation_lost() -> None:
    # after 300 the proxy is fresh noise with the very same marginal distribution
    def proxy(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return rng.normal(size=len(t))

    def audit(t: np.ndarray, p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        hidden = np.where(t >= 300, rng.normal(size=len(t)), p)
        return SLOPE * hidden + rng.normal(scale=NOISE, size=len(t))

    det = DecouplingDetector(ARL0)
    i, v = run(det, stream(7, 900, proxy, audit))
    assert i is not None and 300 < i < 450
    assert v.reason == "relation_lost"
    assert abs(v.estimates.rank_corr_window) < v.estimates.rank_corr_reference


@pytest.mark.slow
def test_gradual_over_optimisation_caught_before_gold_peaks() -> None:
    # Gao et al.: d = sqrt(KL) grows; proxy ~ d, gold R(d) = d (1 - d / 4) peaks at d = 2.
    # Within a batch an output's proxy predicts its gold with slope 0.8.
    def d(t: np.ndarray) -> np.ndarray:
        return 3.0 * after(t, REF) / 1500

    def proxy(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return d(t) + rng.normal(size=len(t))

    def gold(t: np.ndarray, p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return d(t) * (1 - d(t) / 4) + 0.8 * (p - d(t)) + rng.normal(scale=0.5, size=len(t))

    peak = REF + 1000  # d = 2
    for seed in range(3):
        i, v = run(DecouplingDetector(ARL0), stream(10 + seed, 1800, proxy, gold))
        assert i is not None and i < peak, (seed, i)
        assert v.reason in ("proxy_inflated", "relation_lost", "gains_bending")


def test_binary_audits_drop_in_pass_rate_alarms() -> None:
    def audit(t: np.ndarray, p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        prob = 1 / (1 + np.exp(-(1.0 + p))) - 0.2 * (t >= 300)
        return (rng.random(len(t)) < prob).astype(float)

    det = DecouplingDetector(ARL0)
    i, v = run(det, stream(8, 900, normal_proxy, audit))
    assert i is not None and 300 < i < 500
    assert v.reason == "audit_dropped"


def test_lower_is_better_proxy_oriented_by_pipeline() -> None:
    # resolution time in minutes, lower = better; the pipeline feeds -time. After 300 the bot
    # rushes users out: times drop by 4 minutes, quality does not follow.
    def minutes(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return 10 + 4 * rng.normal(size=len(t)) - 4 * (t >= 300)

    def quality(t: np.ndarray, m: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return -0.15 * (m + 4 * (t >= 300)) + rng.normal(scale=NOISE, size=len(t))

    raw = stream(9, 800, minutes, quality)
    oriented = [PairObservation(o.ts, -o.proxy, o.audit) for o in raw]
    i, v = run(DecouplingDetector(ARL0), oriented)
    assert i is not None and v.reason == "proxy_inflated"
    assert v.estimates.rank_corr_reference > 0.3


# -- must stay quiet ---------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(3))
def test_genuine_improvement_far_beyond_range_stays_quiet(seed: int) -> None:
    # proxy and audit rise together along the reference line, to 5 s.d. past the reference mean
    pairs = stream(20 + seed, 2000, lambda t, rng: rng.normal(size=len(t)) + 5 * after(t, 300) / 1700,
                   on_line)
    i, v = run(DecouplingDetector(ARL0), pairs)
    assert i is None
    assert v.estimates.beyond_range_fraction > 0.5
    assert v.estimates.gap_lower < 0 < v.estimates.gap_upper


@pytest.mark.parametrize("seed", range(3))
def test_traffic_mix_shift_stays_quiet(seed: int) -> None:
    # three segments with different difficulty on the same line; the mix moves to the hard one
    def proxy(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        hard_share = np.where(t < 400, 0.2, 0.8)
        hard = rng.random(len(t)) < hard_share
        return np.where(hard, -1.5, 0.5) + 0.7 * rng.normal(size=len(t))

    i, _ = run(DecouplingDetector(ARL0), stream(30 + seed, 2000, proxy, on_line))
    assert i is None


@pytest.mark.slow
def test_heavy_tailed_noise_stays_quiet() -> None:
    for seed in range(3):
        pairs = stream(40 + seed, 3000, normal_proxy,
                       lambda t, p, rng: SLOPE * p + 0.5 * rng.standard_t(2, size=len(t)))
        i, _ = run(DecouplingDetector(ARL0), pairs)
        assert i is None, seed


# -- weights, late labels, lifecycle ------------------------------------------------------------
def test_weights_make_the_gap_a_population_estimate() -> None:
    # Stratified audit: segment A is 80% of traffic but audited at 1/8 the rate of B, so it is
    # a third of the audited pairs (weight 8 vs 1). Only A's quality drops, by 0.6.
    rng = np.random.default_rng(50)
    n = 4000
    in_a = rng.random(n) < 1 / 3
    p = rng.normal(size=n)
    a = SLOPE * p + rng.normal(scale=NOISE, size=n) - 0.6 * (in_a & (np.arange(n) >= 2000))
    weighted = DecouplingDetector(ARL0, reference_pairs=1000, window=1000)
    plain = DecouplingDetector(ARL0, reference_pairs=1000, window=1000)
    for i in range(n):
        w = 8.0 if in_a[i] else 1.0
        weighted.observe_pair(PairObservation(float(i), p[i], a[i], w))
        plain.observe_pair(PairObservation(float(i), p[i], a[i]))
    population_gap = 0.6 * 0.8
    gw, gp = weighted.verdict(n).estimates, plain.verdict(n).estimates
    assert gw.gap == pytest.approx(population_gap, abs=0.12)
    assert gp.gap == pytest.approx(0.6 / 3, abs=0.12)  # biased toward the over-sampled B
    assert weighted.sufficient_statistics()["samples"] > plain.sufficient_statistics()["samples"]


@pytest.mark.slow
def test_weighted_level_evidence_catches_a_drop_in_the_under_sampled_stratum_sooner() -> None:
    # Stratum A: 80% of traffic, audited 8x less (weight 8, a third of the audited pairs).
    # Its quality drops 1.2: the population mean drops 0.96, the audited-pair mean only 0.4.
    first: dict[str, list[int]] = {"weighted": [], "unweighted": []}
    for seed in range(3):
        rng = np.random.default_rng(90 + seed)
        n = 1500
        in_a = rng.random(n) < 1 / 3
        p = rng.normal(size=n)
        a = SLOPE * p + rng.normal(scale=NOISE, size=n) - 1.2 * (in_a & (np.arange(n) >= 500))
        for kind in first:
            w = np.where(in_a, 8.0, 1.0) if kind == "weighted" else np.ones(n)
            i, v = run(DecouplingDetector(ARL0), [PairObservation(float(t), p[t], a[t], w[t]) for t in range(n)])
            assert i is not None and i >= 500, (kind, seed, i)
            first[kind].append(i - 500)
            if kind == "weighted":
                assert v.reason == "audit_dropped"
                assert v.estimates.excursion_gap == pytest.approx(0.96, abs=0.45)
    assert np.median(first["weighted"]) < 0.5 * np.median(first["unweighted"]), first


@pytest.mark.slow
def test_weighted_null_run_stays_within_budget() -> None:
    arl0, n, reps = 1_000.0, 6_000, 3
    alarms = 0
    for rep in range(reps):
        rng = np.random.default_rng(300 + rep)
        in_a = rng.random(REF + n) < 1 / 3
        p = rng.normal(size=REF + n) + 0.5 * in_a
        a = SLOPE * p + rng.normal(scale=NOISE, size=REF + n)
        det, alarming = DecouplingDetector(arl0), False
        for i in range(REF + n):
            det.observe_pair(PairObservation(float(i), float(p[i]), float(a[i]), 8.0 if in_a[i] else 1.0))
            if i % 2 == 0:
                v = det.verdict(float(i))
                now = v.state == "alarm"
                assert now >= (v.statistic > v.threshold)  # an alarm holds until its excursion ends
                assert v.statistic > 0 or not now
                alarms += now and not alarming
                alarming = now
    print("false alarms", alarms, "budget", reps * n / arl0)
    assert alarms <= reps * n / arl0, alarms


def test_one_statistic_and_threshold_read_every_cusum() -> None:
    det = DecouplingDetector(ARL0)
    pairs = stream(91, 700, normal_proxy, lambda t, p, rng: on_line(t, p, rng) - 0.6 * (t >= 300))
    states = set()
    for obs in pairs:
        det.observe_pair(obs)
        v = det.verdict(obs.ts)
        if v.warming_up:
            continue
        states.add(v.state)
        warn = v.estimates.warn_threshold
        expected = "alarm" if v.statistic > v.threshold else "warn" if v.statistic > warn else "ok"
        # an alarm holds while the excursion that crossed the threshold lasts (statistic > 0)
        assert v.state == expected or (v.state == "alarm" and v.statistic > 0)
        assert v.statistic == pytest.approx(max(v.estimates.level_statistic, v.estimates.slope_statistic))
    assert states == {"ok", "warn", "alarm"}


def test_late_labels_out_of_order_still_alarm_with_since_at_oldest_output() -> None:
    pairs = stream(60, 800, normal_proxy, lambda t, p, rng: on_line(t, p, rng) - 0.8 * (t >= 300))
    order = np.random.default_rng(61).permutation(np.arange(300, 800))  # labels arrive shuffled
    shuffled = pairs[:300] + [pairs[j] for j in order]
    i, v = run(DecouplingDetector(ARL0), shuffled)
    assert i is not None and v.reason == "audit_dropped"
    assert 300 <= v.estimates.since <= max(pairs[j].ts for j in order[: i - 300 + 1])


def test_state_round_trip_gives_identical_subsequent_verdicts() -> None:
    pairs = stream(70, 900, normal_proxy, lambda t, p, rng: on_line(t, p, rng) - 0.5 * (t >= 500))
    a = DecouplingDetector(ARL0, window=150)
    for cut in (150, 450):  # during warm-up, and after the fit with a full window
        a = DecouplingDetector(ARL0, window=150)
        for obs in pairs[:cut]:
            a.observe_pair(obs)
            a.observe_proxy(obs.ts, obs.proxy)
        b = DecouplingDetector(1.5)
        b.load_state(json.loads(json.dumps(a.state_dict(), allow_nan=False)))
        for obs in pairs[cut:]:
            for det in (a, b):
                det.observe_pair(obs)
                det.observe_proxy(obs.ts, obs.proxy)
            va, vb = a.verdict(obs.ts), b.verdict(obs.ts)
            assert (va.state, va.reason, va.warming_up, va.estimates.reported()) == (
                vb.state, vb.reason, vb.warming_up, vb.estimates.reported())
            assert va.statistic == vb.statistic or math.isnan(va.statistic)
        assert a.state_dict() == b.state_dict()
        assert a.sufficient_statistics() == b.sufficient_statistics()


def test_rebaseline_warms_up_ignores_older_outputs_and_keeps_counters_monotone() -> None:
    det = DecouplingDetector(ARL0)
    for obs in stream(80, 500, normal_proxy, on_line):
        det.observe_pair(obs)
    before = det.sufficient_statistics()
    det.rebaseline(now=500.0)
    v = det.verdict(500.0)
    assert (v.state, v.reason, v.warming_up) == ("warn", "warming up", True)
    det.observe_pair(PairObservation(ts=400.0, proxy=0.0, audit=0.0))  # a late label, old regime
    assert det.verdict(501.0).estimates.samples == 0
    assert det.verdict(501.0).estimates.late_pairs_ignored == 1
    for obs in stream(81, 300, normal_proxy, on_line):
        det.observe_pair(PairObservation(obs.ts + 500, obs.proxy, obs.audit))
    after_ = det.sufficient_statistics()
    assert not det.verdict(900.0).warming_up
    assert set(before) >= {"audited", "samples", "residual_positive_sum", "residual_negative_sum", "residual_squares"}
    assert all(after_[k] >= before[k] for k in before)


def test_rejects_invalid_input() -> None:
    with pytest.raises(ValueError):
        DecouplingDetector(arl0=1.0)
    with pytest.raises(ValueError):
        DecouplingDetector(ARL0).observe_pair(PairObservation(0.0, math.nan, 1.0))
    with pytest.raises(ValueError):
        DecouplingDetector(ARL0).observe_pair(PairObservation(0.0, 1.0, 1.0, weight=0.0))


@pytest.mark.parametrize("kind", ["binary proxy equals binary audit", "constant audit"])
def test_degenerate_reference_neither_alarms_on_one_mismatch_nor_never(kind: str) -> None:
    # A reference with no residual spread at all: the fit is smoothed by pseudo pairs (a
    # rule-of-succession prior), so thresholds stay finite and meaningful.
    rng = np.random.default_rng(95)

    def pair(t: int, mismatch_rate: float) -> PairObservation:
        if kind == "constant audit":
            return PairObservation(float(t), float(rng.normal()), 3.0 - float(rng.random() < mismatch_rate))
        y = float(rng.random() < 0.7)
        return PairObservation(float(t), y, 1.0 - y if rng.random() < mismatch_rate else y)

    det = DecouplingDetector(ARL0)
    for t in range(REF):
        det.observe_pair(pair(t, 0.0))
    v = det.verdict(REF)
    assert v.state == "ok" and 5 < v.threshold < 100
    det.observe_pair(PairObservation(float(REF), 1.0, 0.0) if kind != "constant audit"
                     else PairObservation(float(REF), 0.0, 2.0))
    assert det.verdict(REF).state != "alarm"  # one mismatch
    i, v = run(det, [pair(t, 0.0) for t in range(REF + 1, REF + 500)])
    assert i is None
    i, v = run(det, [pair(t, 0.1) for t in range(REF + 500, REF + 1000)])  # a run of them
    assert i is not None and i < 200 and v.reason in ("audit_dropped", "relation_lost")


def test_binary_reference_gets_its_design_drop_and_old_states_still_load() -> None:
    pairs = stream(96, 300, normal_proxy,
                   lambda t, p, rng: (rng.random(len(t)) < 1 / (1 + np.exp(-(1.0 + p)))).astype(float))
    det = DecouplingDetector(ARL0)
    for obs in pairs:
        det.observe_pair(obs)
    assert det._ref is not None and det._ref.binary
    # a 0.3 pass-rate drop in residual s.d. of ~0.43: k ~ 0.35, below shift / 2
    assert det.k == pytest.approx(0.5 * 0.3 * det._ref.level_gain) and 0.25 < det.k < 0.5
    old = json.loads(json.dumps(det.state_dict()))
    old["version"] = 2  # before 0/1 audits had their own design drop: k was shift / 2
    del old["ks"]
    again = DecouplingDetector(1.5)
    again.load_state(old)
    assert again.k == 0.5


def test_alarm_holds_for_its_excursion_and_old_states_load() -> None:
    # One excursion, one alarm: a statistic that crosses, dips below and re-crosses its
    # threshold is one alarm (the run-length calibration counts excursions), and it ends when
    # the excursion does.
    det = DecouplingDetector(ARL0)
    for obs in stream(97, REF, normal_proxy, on_line):
        det.observe_pair(obs)
    h = det._h["level"][0]
    det._cusum["level"].update(s=h + 0.1, a=0.0)
    det._step("level", 0.0, 1e3, 1.0, 0.0, 0.0)
    assert det.verdict(1e3).state == "alarm"
    det._step("level", -0.5, 1e3, 1.0, 0.0, 0.0)  # below the threshold, still in the excursion
    v = det.verdict(1e3)
    assert v.state == "alarm" and 0 < v.statistic < v.threshold
    state = json.loads(json.dumps(det.state_dict()))
    assert state["version"] == 4
    state["version"] = 3
    for e in state["cusum"].values():
        del e["a"]
    old = DecouplingDetector(1.5)
    old.load_state(state)  # version 3: no latch; below the threshold it is not an alarm
    assert old.verdict(1e3).state != "alarm"
    det._step("level", -2 * h, 1e3, 1.0, 0.0, 0.0)  # the excursion ends
    assert det.verdict(1e3).state == "ok"


def test_a_state_saved_when_the_audited_count_was_called_pairs_loads_as_audited() -> None:
    det = DecouplingDetector(ARL0)
    for obs in stream(82, REF + 50, normal_proxy, on_line):
        det.observe_pair(obs)
    state = json.loads(json.dumps(det.state_dict(), allow_nan=False))
    state["counters"]["pairs"] = state["counters"].pop("audited")
    old = DecouplingDetector(1.5)
    old.load_state(state)
    assert old.sufficient_statistics() == det.sufficient_statistics()
    assert old.sufficient_statistics()["audited"] == 50.0 and "pairs" not in old.sufficient_statistics()
