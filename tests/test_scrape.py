"""/metrics serves the per-pair series as the last detect step left them, never waiting for an ingest,
and exports at most ``segments.max_exported`` segments (alarming ones always) with the count left out."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from support import parse_metrics, wait_until

from agent.clock import VirtualClock
from agent.config import ConfigError, config_from_mapping
from agent.daemon import Agent
from agent.pair_metrics import PairCollector, choose_segments
from agent.pipeline import Pipeline
from agent.store import Store

T0 = time.time() - 3600
BASE: dict[str, Any] = {
    "proxies": [{"name": "thumbs_up", "field": "proxy.thumbs_up"}],
    "audits": [{"name": "resolved", "field": "audit.resolved"}],
    "segments": {"field": "labels.segment"},
    "detection": {"detector": "placeholder", "reference_pairs": 20},
}
PAIR = {"proxy": "thumbs_up", "audit": "resolved"}


def rec(i: int, segment: str, audit: float, ts: float = T0) -> dict[str, Any]:
    return {"id": f"{segment}-{i}", "ts": ts + i, "labels": {"segment": segment},
            "proxy": {"thumbs_up": 1.0}, "audit": {"resolved": audit}}


def agent_config(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {**BASE, "source": {"type": "http_push", "listen": "shared"}, "state_dir": str(tmp_path / "state"),
            "schedule": {"detect_seconds": 3600, "ingest_seconds": 3600}, "log": {"level": "ERROR"}, **extra}


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    running = Agent(config_from_mapping(agent_config(tmp_path), {}), listen="127.0.0.1:0")
    assert running.pipeline is not None
    running.pipeline.ingest_items("test", [rec(i, "billing", 1.0) for i in range(30)])
    running.pipeline.detect()
    running.start()
    for task in ("detect", "ingest"):  # every job runs once at start; then not for an hour
        wait_until(lambda t=task: (stats := running.wired.jobs.stats.get(t)) is not None and stats.runs >= 1,
                   what=f"the first scheduled {task} step")
    yield running
    running.stop()


def scrape(agent: Agent, accept: str = "") -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = requests.get(f"http://127.0.0.1:{agent.port}/metrics", headers={"Accept": accept}, timeout=10)
    assert resp.status_code == 200
    return parse_metrics(resp.text)


def audited(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], segment: str) -> float | None:
    return metrics.get(("goodhart_audited_pairs", tuple(sorted({**PAIR, "segment": segment}.items()))))


def test_a_scrape_is_answered_with_the_last_exposition_while_an_ingest_holds_the_pipeline(agent: Agent) -> None:
    assert agent.pipeline is not None
    # A long ingest holds the pipeline's lock and the store's for its whole transaction; so does this test.
    with agent.pipeline.lock, agent.store.lock:
        metrics = scrape(agent)
    assert audited(metrics, "*") == 30
    assert metrics[("goodhart_divergence_alarm", tuple(sorted({**PAIR, "segment": "billing"}.items())))] == 0
    assert metrics[("goodhart_records_total", (("source", "test"),))] == 30
    assert metrics[("goodhart_up", (("component", "store"),))] == 1


def test_counters_are_live_and_pair_series_follow_the_detect_step(agent: Agent) -> None:
    assert agent.pipeline is not None
    agent.pipeline.ingest_items("test", [rec(i, "billing", 1.0) for i in range(30, 40)])
    metrics = scrape(agent)
    assert metrics[("goodhart_records_total", (("source", "test"),))] == 40  # counted since the last detect step
    assert audited(metrics, "*") == 30  # as the last detect step left it
    agent.pipeline.detect()
    assert audited(scrape(agent), "*") == 40


def test_a_rebaseline_publishes_a_new_exposition(agent: Agent) -> None:
    assert agent.pipeline is not None
    agent.pipeline.ingest_items("test", [rec(i, "billing", 1.0) for i in range(30, 35)])
    agent.pipeline.rebaseline()
    assert audited(scrape(agent), "*") == 35


def test_openmetrics_scrape_has_the_pair_series_and_one_eof_at_the_end(agent: Agent) -> None:
    resp = requests.get(f"http://127.0.0.1:{agent.port}/metrics", timeout=10,
                        headers={"Accept": "application/openmetrics-text;version=1.0.0"})
    assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
    assert resp.text.endswith("# EOF\n") and resp.text.count("# EOF") == 1
    names = {family.name for family in parse_openmetrics(resp.text)}  # the parser refuses a malformed body
    assert {"goodhart_divergence_alarm", "goodhart_records", "goodhart_segments_left_out"} <= names


# -- the cap on exported segments -----------------------------------------------------------------------------

def test_the_cap_keeps_alarming_segments_then_warn_then_volume_and_counts_the_rest() -> None:
    key = ("p", "a")
    levels = {(*key, "*"): 2, (*key, "quiet"): 0, (*key, "big"): 0, (*key, "warned"): 1, (*key, "alarmed"): 2,
              (*key, "small"): 0}
    held = {(*key, "quiet"): 50, (*key, "big"): 900, (*key, "small"): 5, (*key, "alarmed"): 1}
    assert choose_segments(levels, held, 2) == (frozenset({"alarmed", "warned"}), 3)
    assert choose_segments(levels, held, 3) == (frozenset({"alarmed", "warned", "big"}), 2)
    # alarming segments are exported even past the cap: an alert must find its series
    assert choose_segments(levels, held, 0) == (frozenset({"alarmed"}), 4)
    assert choose_segments(levels, held, None) == (frozenset({"quiet", "big", "warned", "alarmed", "small"}), 0)


def test_a_capped_collector_exports_the_chosen_segments_and_how_many_were_left_out(tmp_path: Path) -> None:
    config = config_from_mapping({**BASE, "segments": {"field": "labels.segment", "max_exported": 2}}, {})
    pipeline = Pipeline(config, Store(tmp_path), VirtualClock(T0 + 10_000))
    items = [rec(i, seg, 1.0) for seg, n in (("a", 12), ("b", 9), ("c", 6), ("d", 3)) for i in range(n)]
    items += [rec(i, "failing", 1.0 if i < 20 else 0.0) for i in range(70)]  # the placeholder's alarm: audits drop
    pipeline.ingest_items("test", items)
    pipeline.detect()
    assert pipeline.view.snapshot.states[("thumbs_up", "resolved", "failing")] == "alarm"
    registry = CollectorRegistry()
    registry.register(PairCollector(pipeline.view, config.segments.max_exported if config.segments else None))
    value = registry.get_sample_value
    exported = {seg for seg in ("a", "b", "c", "d", "failing")
                if value("goodhart_detector_state", {**PAIR, "segment": seg}) is not None}
    assert exported == {"failing", "a"}  # the alarming one, then the most audited pairs held
    assert value("goodhart_proxy_mean", {"proxy": "thumbs_up", "segment": "d"}) is None
    assert value("goodhart_audited_pairs", {**PAIR, "segment": "*"}) == 100  # the whole stream, always
    assert value("goodhart_segments_exported") == 2
    assert value("goodhart_segments_left_out") == 3
    pipeline.store.close()


def test_detection_still_runs_on_segments_left_out_of_the_export(tmp_path: Path) -> None:
    config = config_from_mapping({**BASE, "segments": {"field": "labels.segment", "max_exported": 0}}, {})
    pipeline = Pipeline(config, Store(tmp_path), VirtualClock(T0 + 10_000))
    events = []
    pipeline.event_sinks.append(events.append)
    pipeline.ingest_items("test", [rec(i, "x", 1.0) for i in range(30)] + [rec(i, "y", 1.0) for i in range(30)])
    pipeline.detect()
    assert {k[2] for k in pipeline.view.snapshot.verdicts} == {"*", "x", "y"}
    registry = CollectorRegistry()
    registry.register(PairCollector(pipeline.view, 0))
    assert registry.get_sample_value("goodhart_segments_left_out") == 2
    assert registry.get_sample_value("goodhart_detector_state", {**PAIR, "segment": "x"}) is None
    pipeline.store.close()


def test_the_default_cap_exports_every_segment_of_a_default_config() -> None:
    config = config_from_mapping(BASE, {})
    assert config.segments is not None and config.segments.max_exported is not None
    assert config.segments.max_exported >= config.segments.max_values  # the default fold never hits the cap


@pytest.mark.parametrize("value", [-1, 1001, "many"])
def test_a_bad_cap_fails_with_its_key_path(value: object) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_mapping({**BASE, "segments": {"field": "labels.segment", "max_exported": value}}, {})
    assert any(problem.startswith("segments.max_exported") for problem in err.value.problems), err.value.problems


def test_no_cap_is_null() -> None:
    config = config_from_mapping({**BASE, "segments": {"field": "labels.segment", "max_exported": None}}, {})
    assert config.segments is not None and config.segments.max_exported is None
