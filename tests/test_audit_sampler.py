"""Which outputs get audited, and how many: consistent hashing, stratified weights, token buckets."""

from __future__ import annotations

import math
import random

import pytest

from agent.audit.budget import Budget, TokenBucket
from agent.audit.sampler import Sampler, hash_unit
from agent.config import AuditBudgetConfig, StratifyConfig
from agent.store import Store, load_budget, save_budget


def test_replicas_pick_the_same_outputs_whatever_order_they_see_them_in() -> None:
    ids = [f"conv-{i}" for i in range(5000)]
    shuffled = ids[:]
    random.Random(3).shuffle(shuffled)
    a, b = Sampler(0.05, salt="fleet"), Sampler(0.05, salt="fleet")
    picked_a = {rid for rid in ids if a.decide(rid).selected}
    picked_b = {rid for rid in shuffled if b.decide(rid).selected}
    assert picked_a == picked_b
    assert 0.04 < len(picked_a) / len(ids) < 0.06
    other = {rid for rid in ids if Sampler(0.05, salt="other").decide(rid).selected}
    assert len(other & picked_a) < 0.2 * len(picked_a)  # a different salt is an independent sample
    assert all(Sampler(0.05).decide(rid).weight == 1.0 for rid in ids[:10])  # uniform: weight 1


def test_a_larger_rate_keeps_every_output_a_smaller_rate_picked() -> None:
    ids = [f"o{i}" for i in range(2000)]
    small = {rid for rid in ids if Sampler(0.02).decide(rid).selected}
    large = {rid for rid in ids if Sampler(0.10).decide(rid).selected}
    assert small and small <= large  # raising the rate adds outputs, never swaps them


def test_stratified_replicas_with_the_same_stream_agree() -> None:
    strat = StratifyConfig(proxy="score", weights=[1, 1, 1, 5], window=500)
    rng = random.Random(11)
    stream = [(f"id-{i}", {"score": rng.gauss(0, 1)}) for i in range(3000)]
    a, b = Sampler(0.1, stratify=strat), Sampler(0.1, stratify=strat)
    assert [a.offer(rid, p) for rid, p in stream] == [b.offer(rid, p) for rid, p in stream]


def test_stratified_weights_keep_the_weighted_estimate_unbiased() -> None:
    """Gaming lives at the top of the proxy: oversample it, and the weighted audit mean stays right."""
    strat = StratifyConfig(proxy="score", weights=[1, 1, 1, 6], window=2000)
    sampler = Sampler(0.1, stratify=strat)
    rng = random.Random(7)
    population, picked = [], []
    for i in range(40_000):
        x = rng.gauss(0, 1)
        y = (2.0 if x > 0.8 else 0.0) + rng.gauss(0, 1)  # audited quality jumps at the top of the proxy
        population.append(y)
        decision = sampler.offer(f"seed7-{i}", {"score": x})
        if decision.selected:
            picked.append((y, decision.weight))
    true_mean = sum(population) / len(population)
    weighted = sum(y * w for y, w in picked) / sum(w for _, w in picked)
    naive = sum(y for y, _ in picked) / len(picked)
    se = math.sqrt(sum(w * w * (y - weighted) ** 2 for y, w in picked)) / sum(w for _, w in picked)
    assert abs(weighted - true_mean) < 3 * se
    assert naive - true_mean > 10 * se  # without the weights the oversampled top inflates the mean
    assert 0.09 < len(picked) / 40_000 < 0.11  # oversampling the top does not raise the total rate
    assert sum(w for _, w in picked) / len(picked) == pytest.approx(1.0, abs=0.05)


def test_direction_lower_oversamples_the_smallest_values() -> None:
    strat = StratifyConfig(proxy="seconds", weights=[1, 4], window=200)
    sampler = Sampler(0.2, stratify=strat, direction=-1.0)
    sampler.warm(float(v) for v in range(200))
    assert sampler.probability(5.0) == pytest.approx(0.32) and sampler.probability(190.0) == pytest.approx(0.08)


def test_token_bucket_caps_refills_and_never_overfills() -> None:
    bucket = TokenBucket(capacity=3, period=60, tokens=3, updated_at=0)
    budget = Budget({"minute": bucket})
    assert [budget.take(0) for _ in range(4)] == [True, True, True, False]
    assert not budget.take(19.9) and budget.take(20.0)  # one token per 20 s
    assert budget.remaining(10_000) == {"minute": 3.0}
    assert budget.take(9_999) and budget.remaining(5_000)["minute"] == 2.0  # a clock stepping back refills nothing


def test_every_bucket_must_allow_and_all_are_charged() -> None:
    budget = Budget.from_config(AuditBudgetConfig(per_minute=10, per_day=2), now=0)
    assert [budget.take(0) for _ in range(3)] == [True, True, False]
    assert budget.remaining(0) == {"minute": 8.0, "day": 0.0}
    assert budget.capacity() == {"minute": 10.0, "day": 2.0}


def test_budget_levels_survive_a_restart(tmp_path: object) -> None:
    store = Store(":memory:")
    budget = Budget.from_config(AuditBudgetConfig(per_day=5), now=100)
    for _ in range(5):
        budget.take(100)
    save_budget(store, "judge", budget.levels())
    restarted = Budget.from_config(AuditBudgetConfig(per_day=5), now=200)  # a fresh bucket would be full
    restarted.restore(load_budget(store, "judge"))
    assert not restarted.take(200)
    assert restarted.remaining(100 + 86400 / 5)["day"] == pytest.approx(1.0)


def test_hash_unit_is_uniform_enough() -> None:
    values = [hash_unit(f"x{i}") for i in range(20_000)]
    counts = [0] * 10
    for v in values:
        counts[int(v * 10)] += 1
    assert min(counts) > 1800 and max(counts) < 2200
