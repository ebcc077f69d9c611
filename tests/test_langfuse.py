"""Langfuse scores as late labels (``type: http_pull``, ``flavour: langfuse``).

Langfuse itself cannot run here (it needs Postgres, ClickHouse, Redis and S3), so these tests talk
to ``langfuse_server.FakeLangfuse``, a real HTTP server on 127.0.0.1 that follows Langfuse's
documented Scores API v3: Basic auth, cursor pagination newest first, name/fromTimestamp filters.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langfuse_server import PUBLIC_KEY, SECRET_KEY, FakeLangfuse, score
from support import BASE_CONFIG, AgentProcess, append_lines, record, write_config

from agent.clock import WallClock
from agent.config import ConfigError, config_from_mapping
from agent.pipeline import Pipeline
from agent.sources.langfuse import LangfuseScoresSource, iso
from agent.store import Store

T0 = float(int(time.time()) - 3600)
ENV = {"LF_PUBLIC": PUBLIC_KEY, "LF_SECRET": SECRET_KEY}
AUDITS = [{"name": "resolved", "field": "/scores/resolved"}]


def langfuse_source(url: str, **langfuse: Any) -> dict[str, Any]:
    return {"name": "langfuse", "type": "http_pull", "flavour": "langfuse", "url": url, "poll_seconds": 5,
            "langfuse": {"scores": ["resolved"], "public_key_env": "LF_PUBLIC", "secret_key_env": "LF_SECRET",
                         **langfuse}}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Pulled:
    """A pipeline on a real store with the Langfuse source polling the fake server."""

    def __init__(self, tmp_path: Path, url: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch,
                 **langfuse: Any) -> None:
        for var, value in ENV.items():
            monkeypatch.setenv(var, value)
        self.config = config_from_mapping({**BASE_CONFIG, "audits": AUDITS, "state_dir": str(tmp_path),
                                           "sources": [langfuse_source(url, **langfuse)]}, environ={})
        self.store = Store(tmp_path)
        self.pipeline = Pipeline(self.config, self.store, WallClock())
        self.source = self.make(clock)

    def make(self, clock: FakeClock) -> LangfuseScoresSource:
        assert self.config.sources is not None
        source = LangfuseScoresSource.from_config(self.config, self.store.get_offset("langfuse"),
                                                  self.config.sources[0], "sources.0")
        source.clock, source.rng, source.name = clock, random.Random(3), "langfuse"
        source.wall = lambda: T0 + 3600
        return source

    def ingest(self) -> int:
        return self.pipeline.ingest(self.source)

    def early(self) -> dict[str, str]:
        return dict(self.store.conn.execute("SELECT id, audits FROM early_labels").fetchall())

    def rejected(self) -> int:
        return int(self.store.conn.execute(
            "SELECT COALESCE(SUM(value), 0) FROM counters WHERE name = 'records_rejected_total'").fetchone()[0])


@pytest.fixture
def api() -> Iterator[FakeLangfuse]:
    server = FakeLangfuse().start()
    yield server
    server.stop()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def pulled(tmp_path: Path, api: FakeLangfuse, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    made: list[Pulled] = []

    def make(**langfuse: Any) -> Pulled:
        made.append(Pulled(tmp_path / f"s{len(made)}", api.url, clock, monkeypatch, **langfuse))
        return made[-1]

    yield make
    for p in made:
        p.source.close()
        p.store.close()


def test_a_sweep_follows_the_cursor_through_every_page_with_basic_auth(api: FakeLangfuse, pulled: Any) -> None:
    api.scores = [score(f"s{i:03}", "resolved", i % 2, T0 + i, trace=f"t{i:03}") for i in range(250)]
    p = pulled(page_size=100)
    assert p.ingest() == 250
    assert len(api.requests) == 3 and all(api.authorized)
    first, *rest = api.requests
    assert "cursor" not in first and all(q["cursor"] for q in rest)
    assert {q["name"] for q in api.requests} == {"resolved"}
    assert {q["limit"] for q in api.requests} == {"100"} and {q["fields"] for q in api.requests} == {"subject"}
    assert first["fromTimestamp"] == rest[0]["fromTimestamp"]  # one lower bound for the whole sweep
    early = p.early()
    assert len(early) == 250 and early["t007"] == '{"resolved": 1.0}'


def test_the_next_sweep_reads_behind_the_watermark_and_skips_scores_already_read(
        api: FakeLangfuse, pulled: Any, clock: FakeClock) -> None:
    api.scores = [score(f"s{i}", "resolved", 1, T0 + i, trace=f"t{i}") for i in range(10)]
    p = pulled(lookback_seconds=60)
    assert p.ingest() == 10
    api.scores.append(score("late", "resolved", 0, T0 + 5, trace="t-late"))  # reached the API late
    api.scores.append(score("new", "resolved", 0, T0 + 20, trace="t-new"))
    assert p.ingest() == 0  # poll_seconds not over yet
    clock.now += 5
    assert p.ingest() == 2
    assert api.requests[-1]["fromTimestamp"] == iso(T0 + 9 - 60)
    assert set(p.early()) == {f"t{i}" for i in range(10)} | {"t-late", "t-new"}
    assert p.rejected() == 0  # the overlap re-read nothing as a duplicate


def test_boolean_scores_are_labels_and_other_kinds_are_counted_and_skipped(api: FakeLangfuse, pulled: Any) -> None:
    api.scores = [
        score("b1", "resolved", True, T0 + 1, trace="t1", data_type="BOOLEAN"),
        score("b2", "resolved", False, T0 + 2, trace="t2", data_type="BOOLEAN"),
        score("c1", "resolved", "good", T0 + 3, trace="t3", data_type="CATEGORICAL"),
        score("x1", "resolved", "looks fine", T0 + 4, trace="t4", data_type="TEXT"),
        score("x2", "resolved", "", T0 + 5, trace="t5", data_type="CORRECTION"),
        score("n1", "resolved", 1, T0 + 6, session="sess-1"),
    ]
    p = pulled()
    assert p.ingest() == 2
    assert p.early() == {"t1": '{"resolved": 1.0}', "t2": '{"resolved": 0.0}'}
    assert {k: v for k, v in p.source.skipped.items() if v} == {"categorical": 1, "text": 2, "no_join_id": 1}


def test_join_on_observation_uses_the_observation_id(api: FakeLangfuse, pulled: Any) -> None:
    api.scores = [score("o1", "resolved", 1, T0 + 1, trace="t1", observation="span-1"),
                  score("o2", "resolved", 0, T0 + 2, trace="t2")]
    by_observation = pulled(join_on="observation")
    assert by_observation.ingest() == 1 and set(by_observation.early()) == {"span-1"}
    assert by_observation.source.skipped["no_join_id"] == 1
    by_trace = pulled()  # an observation's score belongs to its trace
    assert by_trace.ingest() == 2 and set(by_trace.early()) == {"t1", "t2"}


def test_429_waits_exactly_retry_after_then_the_sweep_goes_on(api: FakeLangfuse, pulled: Any,
                                                              clock: FakeClock) -> None:
    api.scores = [score(f"s{i:02}", "resolved", 1, T0 + i, trace=f"t{i:02}") for i in range(30)]
    p = pulled(page_size=10)
    api.script = [(429, {"Retry-After": "7"})]
    assert p.ingest() == 0
    assert p.source.errors["http_429"] == 1 and p.source.up
    clock.now += 6.9
    assert p.ingest() == 0 and len(api.requests) == 1
    clock.now += 0.2
    assert p.ingest() == 30 and len(p.early()) == 30


def test_a_wrong_key_is_a_401_counted_and_the_source_is_down(api: FakeLangfuse, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    api.scores = [score("s1", "resolved", 1, T0, trace="t1")]
    p = Pulled(tmp_path, api.url, FakeClock(), monkeypatch)
    monkeypatch.setenv("LF_SECRET", "sk-lf-wrong")
    p.source = p.make(FakeClock())
    try:
        assert p.ingest() == 0
        assert api.authorized == [False] and p.source.errors["http_4xx"] == 1 and not p.source.up
    finally:
        p.source.close()
        p.store.close()


def test_a_restart_resumes_mid_sweep_at_the_stored_page(api: FakeLangfuse, pulled: Any, clock: FakeClock) -> None:
    api.scores = [score(f"s{i:02}", "resolved", 1, T0 + i, trace=f"t{i:02}") for i in range(30)]
    p = pulled(page_size=10)
    assert p.pipeline.ingest(p.source, max_batches=1) == 10
    p.source.close()
    p.source = p.make(clock)  # a new process: only the store remembers
    assert p.ingest() == 20
    assert api.requests[-2].get("cursor") and len(api.requests) == 3
    assert len(p.early()) == 30


@pytest.mark.parametrize(("langfuse", "source", "problem"), [
    ({}, {"langfuse": None}, "sources.0: langfuse is required when flavour is langfuse"),
    ({}, {"cursor_field": "next"}, "cursor_field: not used with flavour langfuse"),
    ({"public_key_file": "/k"}, {}, "set exactly one of public_key_env, public_key_file"),
    ({"page_size": 500}, {}, "sources.0.langfuse.page_size"),
])
def test_config_problems_name_their_key(langfuse: dict[str, Any], source: dict[str, Any], problem: str) -> None:
    settings = {**langfuse_source("http://127.0.0.1:1", **langfuse), **source}
    if settings.get("langfuse") is None:
        settings.pop("langfuse")
    with pytest.raises(ConfigError) as err:
        config_from_mapping({**BASE_CONFIG, "sources": [settings]}, environ={})
    assert any(problem in line for line in err.value.problems), err.value.problems


def test_a_missing_key_variable_is_a_config_error_naming_its_key(tmp_path: Path) -> None:
    config = config_from_mapping({**BASE_CONFIG, "sources": [langfuse_source("http://127.0.0.1:1")]}, environ={})
    with pytest.raises(ConfigError) as err:
        LangfuseScoresSource.from_config(config, None, config.sources[0] if config.sources else None, "sources.0")
    assert err.value.problems == ["sources.0.langfuse.public_key_env: environment variable LF_PUBLIC is not set"]


# -- the daemon: outputs from a JSONL file, labels from Langfuse -----------------------------------------------
def test_jsonl_outputs_and_langfuse_scores_join_into_audited_pairs(tmp_path: Path, api: FakeLangfuse,
                                                                   agent_factory: Any,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    for var, value in ENV.items():
        monkeypatch.setenv(var, value)
    outputs = tmp_path / "outputs.jsonl"
    append_lines(outputs, [record(f"trace-{i:03}", T0 + i) for i in range(40)])
    api.scores = [score(f"s{i:03}", "resolved", i % 2, T0 + i + 30, trace=f"trace-{i:03}") for i in range(0, 40, 2)]
    api.scores += [score("cat", "resolved", "good", T0 + 1, trace="trace-001", data_type="CATEGORICAL")]
    api.script = [(429, {"Retry-After": "1"})]
    config = write_config(tmp_path / "config.yaml", audits=AUDITS, state_dir=str(tmp_path / "state"),
                          sources=[{"name": "app", "type": "jsonl", "path": str(outputs)},
                                   {**langfuse_source(api.url, page_size=7), "poll_seconds": 0.2}],
                          schedule={"ingest_seconds": 0.1, "detect_seconds": 0.5, "retention_seconds": 60})
    agent: AgentProcess = agent_factory(config).start()
    assert agent.wait_for("goodhart_audited_pairs", 20, proxy="thumbs_up", audit="resolved", segment="*") == 20
    assert agent.value("goodhart_records_total", source="app") == 40
    assert agent.value("goodhart_records_total", source="langfuse") == 20
    assert agent.value("goodhart_langfuse_scores_skipped_total", source="langfuse", reason="categorical") == 1
    assert agent.value("goodhart_source_errors_total", reason="http_429") == 1
    api.scores.append(score("s-late", "resolved", 1, T0 + 80, trace="trace-001"))  # a new score, next sweep
    assert agent.wait_for("goodhart_audited_pairs", 21, proxy="thumbs_up", audit="resolved", segment="*") == 21
    assert agent.value("goodhart_records_rejected_total", reason="duplicate") == 0
