"""The LLM judge through the real audit path: ingest hook → durable queue → HTTP → store → join.

An in-process pipeline on a real SQLite file and a virtual clock; the judge is a real HTTP server
speaking the Chat Completions wire format (``audit_servers.FakeJudge``). The circuit breaker and
Retry-After pauses run on a fake monotonic clock so no test sleeps through them.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from audit_servers import COMPLETION_TOKENS, PROMPT_TOKENS, FakeJudge, score_for

from agent.audit import AuditService, build_audits
from agent.audit.judge import parse_score, render_prompt
from agent.clock import VirtualClock
from agent.config import ConfigError, config_from_mapping
from agent.pipeline import Pipeline
from agent.store import Store

KEY = "sk-test-0123456789abcdef"
T0 = 1_790_000_000.0
AUDIT = "judge_helpful"


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def judge() -> Iterator[FakeJudge]:
    server = FakeJudge(api_key=KEY, slow_seconds=1.0)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def make_rig(tmp_path: Path, judge: FakeJudge) -> Iterator[Any]:
    """Builds rigs on one state directory (a second rig is a restart) and closes them all."""
    rigs: list[Rig] = []

    def make(**judge_overrides: Any) -> Rig:
        rigs.append(Rig(tmp_path, judge, **judge_overrides))
        return rigs[-1]

    yield make
    for rig in rigs:
        rig.close()


class Rig:
    """A pipeline with the judge wired in, on a store in ``tmp_path``."""

    def __init__(self, tmp_path: Path, judge: FakeJudge, **judge_overrides: Any) -> None:
        judge_cfg: dict[str, Any] = {
            "base_url": judge.base_url, "model": "judge-test", "api_key_env": "JUDGE_API_KEY",
            "prompt": "id={id} Request: {input} Reply: {output}. Rate 1 to 5.", "scale": [1, 5],
            "timeout_seconds": 5, "price_per_1k_prompt_tokens": 0.5, "price_per_1k_completion_tokens": 2.0,
            **judge_overrides}
        self.config = config_from_mapping({
            "proxies": [{"name": "thumbs_up", "field": "proxy.thumbs_up"}],
            "audits": [{"name": AUDIT, "llm_judge": judge_cfg}],
            "audit_sampling": {"rate": 1.0},
            "state_dir": str(tmp_path)}, environ={})
        self.store = Store(tmp_path)
        self.clock = VirtualClock(T0)
        self.monotonic = FakeMonotonic()
        self.pipeline = Pipeline(self.config, self.store, self.clock)
        service = build_audits(self.config, self.pipeline, environ={"JUDGE_API_KEY": KEY},
                               monotonic=self.monotonic, rng=random.Random(0))
        assert service is not None
        self.service: AuditService = service

    def ingest(self, *ids: str) -> None:
        self.pipeline.ingest_items("test", [
            {"id": rid, "ts": self.clock.now(), "input": "where is my refund?", "output": f"answer to {rid}",
             "proxy": {"thumbs_up": 1}} for rid in ids])

    def counter(self, name: str, **labels: str) -> float:
        return self.pipeline.counters.value(name, audit=AUDIT, **labels)

    def joined(self) -> dict[str, float]:
        with self.store.lock:
            rows = self.store.conn.execute("SELECT id, audit_value FROM pairs WHERE audit = ?", (AUDIT,)).fetchall()
        return {r[0]: r[1] for r in rows}

    def status(self, rid: str) -> str:
        found = self.service.queue.status(rid, AUDIT)
        assert found is not None
        return found[0]

    def advance(self, seconds: float) -> None:
        self.clock.advance_to(self.clock.now() + seconds)
        self.monotonic.now += seconds

    def close(self) -> None:
        if self.store.is_open:
            self.service.close()
            self.store.close()


def test_scores_are_joined_as_pairs_with_tokens_and_cost(make_rig: Any, judge: FakeJudge) -> None:
    rig = make_rig()
    rig.ingest("ok-1", "ok-2", "json-3")
    assert rig.service.step() == 3
    assert rig.joined() == {rid: float(score_for(rid)) for rid in ("ok-1", "ok-2", "json-3")}
    assert rig.counter("audits_requested_total") == 3
    assert rig.counter("audits_succeeded_total") == 3
    assert rig.counter("judge_tokens_total", kind="prompt") == 3 * PROMPT_TOKENS
    assert rig.counter("judge_tokens_total", kind="completion") == 3 * COMPLETION_TOKENS
    assert rig.counter("audit_cost_total") == pytest.approx(3 * (PROMPT_TOKENS * 0.5 + COMPLETION_TOKENS * 2.0) / 1000)
    request = next(r for r in judge.requests if "id=ok-1 " in r["messages"][-1]["content"])
    assert request["model"] == "judge-test" and request["temperature"] == 0.0
    assert request["messages"][-1]["content"] == \
        "id=ok-1 Request: where is my refund? Reply: answer to ok-1. Rate 1 to 5."
    assert judge.unauthorized == 0
    assert rig.service.step() == 0 and sum(judge.calls.values()) == 3  # nothing is asked twice


def test_429_pauses_the_judge_for_retry_after_then_succeeds(make_rig: Any, judge: FakeJudge) -> None:
    rig = make_rig()
    rig.ingest("r429-a")
    rig.service.step()
    assert judge.calls["r429-a"] == 1 and rig.status("r429-a") == "pending"
    assert rig.counter("audit_retries_total", reason="rate_limited") == 1
    rig.ingest("ok-b")
    rig.advance(6)  # Retry-After: 7 holds every request to this judge, not just the one item
    rig.service.step()
    assert judge.calls["ok-b"] == 0 and judge.calls["r429-a"] == 1
    rig.advance(1.5)
    rig.service.step()
    assert rig.joined() == {"r429-a": score_for("r429-a"), "ok-b": score_for("ok-b")}
    assert judge.calls["r429-a"] == 2


def test_server_errors_are_retried_with_backoff_until_they_succeed(make_rig: Any, judge: FakeJudge) -> None:
    rig = make_rig(retry={"initial_backoff_seconds": 10, "max_backoff_seconds": 100})
    rig.ingest("e500-a")
    rig.service.step()
    assert judge.calls["e500-a"] == 1
    rig.advance(4)  # backoff after attempt 1 is 5..10 s (equal jitter): not yet
    rig.service.step()
    assert judge.calls["e500-a"] == 1
    for _ in range(4):
        rig.advance(20)
        rig.service.step()
    assert judge.calls["e500-a"] == 3
    assert rig.joined() == {"e500-a": score_for("e500-a")}
    assert rig.counter("audit_retries_total", reason="server_error") == 2
    assert rig.counter("audits_failed_total", reason="attempts_exhausted") == 0


def test_a_timeout_is_retried_and_garbage_never_becomes_a_score(make_rig: Any, judge: FakeJudge) -> None:
    rig = make_rig(timeout_seconds=0.3)
    rig.ingest("slow-a", "garbage-b")
    rig.service.step()
    assert rig.joined() == {}
    assert rig.counter("audit_retries_total", reason="timeout") == 1
    assert rig.counter("audit_retries_total", reason="bad_response") == 1
    rig.advance(5)
    rig.service.step()
    assert rig.joined() == {"slow-a": score_for("slow-a"), "garbage-b": score_for("garbage-b")}


def test_replies_that_do_not_parse_or_leave_the_scale_fail_for_good(make_rig: Any, judge: FakeJudge) -> None:
    rig = make_rig()
    rig.ingest("words-a", "big-b", "ok-c")
    rig.service.step()
    rig.advance(3600)
    rig.service.step()
    assert rig.joined() == {"ok-c": score_for("ok-c")}
    assert (rig.status("words-a"), rig.status("big-b")) == ("failed", "failed")
    assert rig.counter("audits_failed_total", reason="unparseable") == 1
    assert rig.counter("audits_failed_total", reason="out_of_scale") == 1
    assert judge.calls["words-a"] == 1 and judge.calls["big-b"] == 1  # asking again would pay again
    assert rig.counter("judge_tokens_total", kind="completion") == 3 * COMPLETION_TOKENS  # all three were paid


def test_the_circuit_opens_after_repeated_failures_and_probes_one_request(make_rig: Any, judge: FakeJudge) -> None:
    rig = make_rig(concurrency=2, circuit_breaker={"failure_threshold": 2, "open_seconds": 30})
    rig.ingest(*(f"down-{i}" for i in range(6)))
    up = rig.service.components()["judge"]
    rig.service.step()
    assert sum(judge.calls.values()) == 2 and not up()
    rig.advance(10)
    rig.service.step()
    assert sum(judge.calls.values()) == 2  # open: nothing is sent
    rig.advance(25)
    rig.service.step()
    assert sum(judge.calls.values()) == 3  # one trial, which failed: open again
    assert all(rig.status(f"down-{i}") == "pending" for i in range(6))  # waiting, not lost


def test_attempts_run_out_and_audits_expire(make_rig: Any, judge: FakeJudge) -> None:
    rig = make_rig(retry={"max_attempts": 2, "initial_backoff_seconds": 1, "expire_after_seconds": 600},
              circuit_breaker={"failure_threshold": 100})
    rig.ingest("down-a")
    for _ in range(3):
        rig.service.step()
        rig.advance(5)
    assert rig.status("down-a") == "failed" and judge.calls["down-a"] == 2
    assert rig.counter("audits_failed_total", reason="attempts_exhausted") == 1
    rig.ingest("down-b")
    rig.service.step()
    rig.clock.advance_to(rig.clock.now() + 601)  # the server-side pause is over but the deadline passed
    rig.service.step()
    assert rig.status("down-b") == "failed" and judge.calls["down-b"] == 1
    assert rig.counter("audits_failed_total", reason="expired") == 1


def test_a_stored_score_is_joined_after_a_restart_without_asking_again(make_rig: Any, judge: FakeJudge) -> None:
    rig = make_rig()
    rig.ingest("ok-a")
    item = rig.service.queue.claim_due(AUDIT, rig.clock.now(), 1, lambda _: 60.0)[0]
    rig.service.queue.store_result(item.id, AUDIT, 4.0)  # the score arrived, then the process died
    rig.close()
    again = make_rig()
    assert again.status("ok-a") == "obtained"
    again.service.step()
    assert again.joined() == {"ok-a": 4.0} and again.status("ok-a") == "done"
    assert judge.calls["ok-a"] == 0


def test_the_queue_row_is_part_of_the_ingest_transaction(make_rig: Any, judge: FakeJudge) -> None:
    rig = make_rig()

    def crash(*_: Any) -> None:
        raise RuntimeError("disk full")

    rig.pipeline.output_hooks.append(crash)
    with pytest.raises(RuntimeError):
        rig.ingest("ok-a")
    assert rig.store.get_output("ok-a") is None and rig.service.queue.status("ok-a", AUDIT) is None


def test_a_missing_key_variable_is_a_config_error_naming_the_key_path(make_rig: Any, judge: FakeJudge) -> None:
    rig = make_rig()
    with pytest.raises(ConfigError) as err:
        build_audits(rig.config, rig.pipeline, environ={})
    assert err.value.problems == ["audits.0.llm_judge.api_key_env: environment variable JUDGE_API_KEY is not set"]


def test_prompt_rendering_and_reply_parsing() -> None:
    record = {"id": "c1", "input": "hi", "output": "hello", "labels": {"segment": "billing"}, "n": 3}
    assert render_prompt("{id}/{labels.segment}/{n}/{missing}/{labels}", record) == \
        'c1/billing/3//{"segment": "billing"}'
    assert '"output": "hello"' in render_prompt("{record}", record)
    assert parse_score("4") == 4.0 and parse_score("4.5.") == 4.5 and parse_score("-1") == -1.0
    assert parse_score('{"score": 2}') == 2.0 and parse_score('{"rating": {"value": "3"}}', "/rating/value") == 3.0
    assert parse_score('{"score": true}') is None and parse_score("") is None and parse_score("4/5") is None
    assert parse_score('{"verdict": "good"}') is None and parse_score("NaN") is None


def test_error_details_reach_the_logs_but_the_key_never_does(make_rig: Any, judge: FakeJudge,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    rig = make_rig()
    with caplog.at_level(logging.DEBUG):
        rig.ingest("echo-a", "words-b")
        rig.service.step()
    logged = "\n".join(r.getMessage() + json.dumps(getattr(r, "fields", {})) for r in caplog.records)
    assert "upstream rejected Bearer [redacted]" in logged  # the judge's error, for the operator
    assert "I would rate this reply as quite good." in logged  # the reply that did not parse
    assert KEY not in logged and "audits.0" not in logged
