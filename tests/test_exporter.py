"""The collector in process, with a private registry: series built from the pipeline's read-only view."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric

from agent.clock import VirtualClock
from agent.config import config_from_mapping
from agent.exporter import AgentCollector
from agent.pair_metrics import PairCollector
from agent.pipeline import Pipeline
from agent.scheduler import Jobs
from agent.store import Store

CONFIG = {"proxies": [{"name": "thumbs_up", "field": "proxy.thumbs_up"}],
          "audits": [{"name": "resolved", "field": "audit.resolved"}],
          "segments": {"field": "labels.segment"}}


@pytest.fixture
def pipeline() -> Iterator[Pipeline]:
    clock = VirtualClock(1_790_000_000.0)
    pipe = Pipeline(config_from_mapping(CONFIG, {}), Store(":memory:"), clock)
    items: list[bytes | dict[str, object]] = [
        {"id": f"r{i}", "ts": clock.now(), "labels": {"segment": "billing"}, "proxy": {"thumbs_up": i % 2},
         "audit": {"resolved": i % 2}} for i in range(30)]
    items += [b"not json", {"id": "r0", "proxy": {"thumbs_up": 1}}]
    pipe.ingest_items("test", items)
    pipe.detect()
    yield pipe
    pipe.store.close()


def registry_for(collector: AgentCollector) -> CollectorRegistry:
    """The live series and the per-pair ones, both collected afresh (as ``replay --metrics-out`` does)."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)
    registry.register(PairCollector(collector.view))
    return registry


def test_series_come_from_the_pipeline_state(pipeline: Pipeline) -> None:
    jobs = Jobs()
    jobs.run("detect", pipeline.detect)
    registry = registry_for(AgentCollector(pipeline.view, jobs.stats, {"source": lambda: True}))
    value = registry.get_sample_value
    assert value("goodhart_records_total", {"source": "test"}) == 32
    assert value("goodhart_records_rejected_total", {"reason": "not_json"}) == 1
    assert value("goodhart_records_rejected_total", {"reason": "duplicate"}) == 1
    assert value("goodhart_records_rejected_total", {"reason": "bad_id"}) == 0  # every reason, from the start
    pair = {"proxy": "thumbs_up", "audit": "resolved", "segment": "*"}
    assert value("goodhart_audited_pairs", pair) == 30
    assert value("goodhart_audited_pairs", {**pair, "segment": "billing"}) == 30
    assert value("goodhart_divergence_alarm", pair) == 0
    assert value("goodhart_job_runs_total", {"task": "detect"}) == 1
    assert value("goodhart_field_checked_total") == 31  # records with an id; the duplicate too
    assert value("goodhart_field_absent_total", {"kind": "segment", "name": "segment"}) == 1
    assert value("goodhart_field_absent_total", {"kind": "audit", "name": "resolved"}) == 1
    assert value("goodhart_up", {"component": "source"}) == 1
    assert value("goodhart_build_info", {"version": __import__("agent").__version__}) == 1


def test_a_scrape_with_failing_parts_still_answers(pipeline: Pipeline) -> None:
    def broken_check() -> bool:
        raise OSError("unreachable")

    def broken_block() -> Iterator[Metric]:
        raise RuntimeError("this block is broken")
        yield  # pragma: no cover - makes this a generator

    registry = registry_for(AgentCollector(pipeline.view, {}, {"judge": broken_check, "source": lambda: True},
                                           extra=[broken_block]))
    pipeline.store.close()  # every block that reads the store now fails
    text = generate_latest(registry).decode()
    assert 'goodhart_up{component="judge"} 0.0' in text  # a failing health check reads as down
    assert 'goodhart_up{component="source"} 1.0' in text
    assert 'goodhart_records_total{source="test"} 32.0' in text  # counters come from their mirror
    assert 'goodhart_divergence_alarm{audit="resolved",proxy="thumbs_up",segment="*"} 0.0' in text
    assert "goodhart_store_size_bytes" not in text.replace("# HELP goodhart_store_size_bytes", "")
