"""goodhart_proxy_validity: ROC AUC for binary audits, Spearman for scores, over the newest pairs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from agent.store import PairRow, Store
from agent.validity import MIN_PAIRS, ValidityTracker, roc_auc, spearman, validity_of


@pytest.mark.parametrize("seed", range(5))
def test_auc_and_spearman_equal_the_library_values_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    proxy = np.round(rng.normal(size=500), 1)  # rounded: many ties
    audit = (proxy + rng.normal(size=500) > 0).astype(float)
    score = np.round(proxy + rng.normal(size=500), 0)
    assert roc_auc(proxy, audit) == pytest.approx(roc_auc_score(audit, proxy), abs=1e-12)
    assert spearman(proxy, score) == pytest.approx(spearmanr(proxy, score).statistic, abs=1e-12)


def test_worthless_and_undefined_cases() -> None:
    ones = np.ones(50)
    assert roc_auc(np.arange(50.0), ones) != roc_auc(np.arange(50.0), ones)  # one class only: NaN
    assert roc_auc(ones, np.arange(50.0) % 2) == 0.5  # a constant proxy is a coin
    assert math.isnan(spearman(ones, np.arange(50.0)))
    assert math.isnan(validity_of(np.arange(MIN_PAIRS - 1.0), np.arange(MIN_PAIRS - 1.0) % 2, True).value)


def fill(store: Store, n: int, start: int = 0, segment_of: int = 2, gamed: bool = False, seed: int = 0) -> None:
    """Outputs whose 'length' tracks 'resolved' until gamed; a 1-5 'rating' audit tracks it too."""
    rng = np.random.default_rng(seed + start)
    with store.transaction():
        for i in range(start, start + n):
            quality = rng.normal()
            length = 70 + 25 * quality + rng.normal(0, 10) + (rng.uniform(0, 400) if gamed else 0)
            seconds = 300 - 50 * quality + rng.normal(0, 20)
            segment = ("billing", "technical", None)[i % 3] if segment_of else None
            output = store.insert_output(f"c{i}", float(i), segment, {"length": length, "seconds": seconds}, 1e12)
            assert output is not None
            store.insert_pairs(output, {"resolved": float(rng.random() < 1 / (1 + math.exp(-2 * quality))),
                                        "rating": float(np.clip(round(3 + quality), 1, 5))}, 1.0)


def keys() -> list[tuple[str, str, str]]:
    return [(p, a, s) for p in ("length", "seconds") for a in ("resolved", "rating")
            for s in ("*", "billing", "technical")]


def test_validity_falls_when_the_proxy_is_gamed_and_a_restart_resumes_it() -> None:
    store = Store(":memory:")
    tracker = ValidityTracker({"length": 1.0, "seconds": -1.0}, window=600)
    fill(store, 1500)
    before = tracker.compute(store, keys())
    assert before[("length", "resolved", "*")].kind == "roc_auc"
    assert before[("length", "rating", "*")].kind == "spearman"
    assert before[("length", "resolved", "*")].value > 0.75 and before[("length", "rating", "*")].value > 0.7
    # direction lower is oriented: shorter handling tracks quality, so its validity is high too
    assert before[("seconds", "resolved", "*")].value > 0.75
    assert before[("length", "resolved", "*")].pairs == 600 and before[("length", "resolved", "billing")].pairs == 500
    fill(store, 600, start=1500, gamed=True)
    after = tracker.compute(store, keys())
    assert after[("length", "resolved", "*")].value < 0.62  # the newest 600 pairs are all gamed
    assert after[("length", "rating", "*")].value < 0.3
    # a segment's window is its own newest 600 pairs: here a third of them gamed so far
    assert after[("length", "rating", "billing")].value < before[("length", "rating", "billing")].value - 0.1
    assert after[("seconds", "resolved", "*")].value == pytest.approx(before[("seconds", "resolved", "*")].value,
                                                                    abs=0.06)
    restarted = ValidityTracker({"length": 1.0, "seconds": -1.0}, window=600).compute(store, keys())
    assert restarted == after


class CountingStore(Store):
    """A real store that counts the audited outputs it hands out (what a validity update costs)."""

    read = 0

    def pairs_since(self, seq: int, limit: int = 50_000) -> list[PairRow]:
        rows = super().pairs_since(seq, limit)
        self.read += len(rows)
        return rows

    def recent_pairs(self, proxy: str, audit: str, segment: str | None, limit: int) -> list[tuple[int, float, float]]:
        rows = super().recent_pairs(proxy, audit, segment, limit)
        self.read += len(rows)
        return rows


def test_a_tick_reads_only_what_is_new_and_an_idle_tick_reads_nothing() -> None:
    store = CountingStore(":memory:")
    fill(store, 5000)  # x2 audits x2 proxies: 20,000 audited outputs
    tracker = ValidityTracker({"length": 1.0, "seconds": -1.0}, window=1000)
    tracker.compute(store, keys())
    first, store.read = store.read, 0
    assert first <= 4 * 1000 * 3  # at most one window per (proxy, audit) and segment, not the whole table
    fill(store, 50, start=5000)  # a detect tick's worth of new outputs
    tracker.compute(store, keys())
    tick, store.read = store.read, 0
    assert tick == 50 * 2 * 2
    tracker.compute(store, keys())
    assert store.read == 0
