"""The audit series are built from the state passed in at scrape time: no service, no pipeline."""

from __future__ import annotations

from prometheus_client.core import Metric

from agent.audit.metrics import AuditState, Counts, LatencyHistograms, add_counts, audit_families, count
from agent.counters import Counters
from agent.store import Store


def samples(families: list[Metric]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def test_families_come_from_the_given_counters_and_states() -> None:
    stored = {("audits_requested_total", (("audit", "judge_ok"),)): 7.0,
              ("judge_tokens_total", (("audit", "judge_ok"), ("kind", "prompt"))): 120.0}

    def counter(name: str, **labels: str) -> float:
        return stored.get((name, tuple(sorted(labels.items()))), 0.0)

    latency = LatencyHistograms(["judge_ok", "grader_ok"])
    latency.observe("judge_ok", 0.3)
    states = [AuditState("judge_ok", "judge", {"day": 4.5}, {"day": 10.0}, 3, False),
              AuditState("grader_ok", "grader", {}, {}, 0, True)]
    found = samples(list(audit_families(states, counter, latency)))
    assert found[("goodhart_audits_requested_total", (("audit", "judge_ok"),))] == 7.0
    assert found[("goodhart_audits_skipped_total", (("audit", "grader_ok"), ("reason", "budget")))] == 0.0
    assert found[("goodhart_judge_tokens_total", (("audit", "judge_ok"), ("kind", "prompt")))] == 120.0
    assert ("goodhart_judge_tokens_total", (("audit", "grader_ok"), ("kind", "prompt"))) not in found
    assert found[("goodhart_audit_budget_remaining", (("audit", "judge_ok"), ("window", "day")))] == 4.5
    assert found[("goodhart_audit_queue_depth", (("audit", "judge_ok"),))] == 3.0
    assert found[("goodhart_audit_circuit_open", (("audit", "grader_ok"),))] == 1.0
    assert found[("goodhart_audit_latency_seconds_count", (("audit", "judge_ok"),))] == 1.0


def test_counts_are_persisted_and_mirrored() -> None:
    store = Store(":memory:")
    counters = Counters(store)
    counts: Counts = {}
    count(counts, "audits_failed_total", audit="a", reason="expired")
    count(counts, "audits_failed_total", 2, audit="a", reason="expired")
    with store.transaction():
        add_counts(counters, counts)
    assert counters.value("audits_failed_total", audit="a", reason="expired") == 3.0
    assert store.counter("audits_failed_total", audit="a", reason="expired") == 3.0
    assert Counters(store).value("audits_failed_total", audit="a", reason="expired") == 3.0  # after a restart
