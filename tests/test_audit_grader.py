"""The HTTP grader, and judges/graders inside ``replay`` (the same pipeline, called for real)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from audit_servers import FakeGrader

from agent.audit.grader import HttpGrader
from agent.audit.sampler import hash_unit
from agent.config import ConfigError, HttpGraderConfig, config_from_mapping


@pytest.fixture
def grader() -> Iterator[FakeGrader]:
    server = FakeGrader()
    server.start()
    yield server
    server.stop()


def test_the_record_is_posted_and_the_number_read_at_the_pointer(grader: FakeGrader) -> None:
    producer = HttpGrader("grader_ok", HttpGraderConfig(url=grader.url, pointer="/result/score",
                                                        price_per_request=0.01), None)
    ok = producer.request({"id": "a", "output": "four"}, "key")
    assert (ok.score, ok.cost, ok.status) == (1.0, 0.01, 200)
    assert producer.request({"id": "bool-b"}, "key").score == 1.0  # true counts as 1, like record metrics
    words = producer.request({"id": "nan-c"}, "key")
    assert (words.score, words.reason, words.transient) == (None, "unparseable", False)
    html = producer.request({"id": "html-d"}, "key")
    assert (html.score, html.reason, html.transient) == (None, "bad_response", True)
    assert grader.calls == {"a": 1, "bool-b": 1, "nan-c": 1, "html-d": 1}


def test_an_unreachable_grader_is_a_transient_connection_failure() -> None:
    producer = HttpGrader("g", HttpGraderConfig(url="http://127.0.0.1:9/grade", timeout_seconds=2), None)
    outcome = producer.request({"id": "a"}, "key")
    assert (outcome.reason, outcome.transient) == ("connection", True)
    assert producer.component == "grader:g" and "key" not in repr(producer)


def test_grader_config_checks_url_and_pointer() -> None:
    with pytest.raises(ConfigError) as err:
        config_from_mapping({"proxies": [{"name": "p", "field": "p"}],
                             "audits": [{"name": "g", "http_grader": {"url": "grader:8001", "pointer": "score"}}]},
                            environ={})
    assert err.value.problems == ["audits.0.http_grader.url: must start with http:// or https://",
                                  "audits.0.http_grader.pointer: a JSON pointer is empty or starts with '/'"]


@pytest.mark.slow
def test_replay_sends_exactly_the_sampled_outputs_to_the_grader(tmp_path: Path, grader: FakeGrader) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "proxies": [{"name": "thumbs_up", "field": "proxy.thumbs_up"}],
        "audits": [{"name": "resolved", "field": "audit.resolved"},
                   {"name": "grader_ok", "http_grader": {"url": grader.url, "pointer": "/result/score"}}],
        "audit_sampling": {"rate": 0.2}}))
    stream = tmp_path / "stream.jsonl"
    ids = [f"conv-{i:04d}" for i in range(300)]
    stream.write_text("".join(json.dumps({"id": rid, "ts": 1_790_000_000 + i, "output": "x" * i,
                                          "proxy": {"thumbs_up": i % 2}}) + "\n" for i, rid in enumerate(ids)))
    events = tmp_path / "events.jsonl"
    result = subprocess.run([sys.executable, "-m", "agent", "replay", "--config", str(config), str(stream),
                             "--events-out", str(events)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    expected = {rid for rid in ids if hash_unit(rid) < 0.2}  # what any replica would have picked
    assert set(grader.calls) == expected and set(grader.calls.values()) == {1}
