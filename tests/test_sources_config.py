"""Field paths in both forms wherever a path is configured, and several named sources per agent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests
from support import BASE_CONFIG, AgentProcess, append_lines, free_port, label, record, wait_until, write_config

from agent.config import ConfigError, config_from_mapping
from agent.records import RecordParser

POINTER_CONFIG: dict[str, Any] = {
    "id_field": "/meta/id", "ts_field": "/meta/ts",
    "proxies": [{"name": "tokens", "field": "/usage/completion_tokens"},
                {"name": "chars", "compute": {"kind": "length", "field": "/choices/0/message/content"}}],
    "audits": [{"name": "ok", "field": "/evaluations/a~1b"}],
    "segments": {"field": "/attributes/gen_ai.request.model"},
}


def test_json_pointers_are_accepted_wherever_a_path_is_configured_and_read() -> None:
    config = config_from_mapping(POINTER_CONFIG, environ={})
    parser = RecordParser(config)
    parsed = parser.parse_object({
        "meta": {"id": "chatcmpl-1", "ts": 1_790_000_000}, "usage": {"completion_tokens": 17},
        "choices": [{"message": {"content": "one two three four"}}], "evaluations": {"a/b": 1},
        "attributes": {"gen_ai.request.model": "gpt-x"}})
    assert (parsed.id, parsed.ts, parsed.segment) == ("chatcmpl-1", 1_790_000_000.0, "gpt-x")  # type: ignore[union-attr]
    assert parsed.proxies == {"tokens": 17.0, "chars": 4.0}  # type: ignore[union-attr]
    assert parsed.audits == {"ok": 1.0}  # type: ignore[union-attr]


def test_dotted_paths_still_read_array_indices() -> None:
    config = config_from_mapping({**POINTER_CONFIG, "proxies": [{"name": "tokens", "field": "choices.0.tokens"}],
                                  "id_field": "id", "ts_field": "ts", "segments": None}, environ={})
    parsed = RecordParser(config).parse_object({"id": "a", "choices": [{"tokens": 3}]})
    assert parsed.proxies == {"tokens": 3.0}  # type: ignore[union-attr]


@pytest.mark.parametrize(("key", "value"), [("field", "/a~2b"), ("field", "a..b"), ("field", "a b")])
def test_a_malformed_path_is_named_by_its_key(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_mapping({**BASE_CONFIG, "proxies": [{"name": "p", key: value}]}, environ={})
    assert any(line.startswith("proxies.0.field: ") for line in err.value.problems)


def test_pull_cursor_fields_take_pointers() -> None:
    config = config_from_mapping({**BASE_CONFIG, "source": {
        "type": "http_pull", "url": "http://127.0.0.1:1/x", "cursor_field": "/page/next",
        "records_field": "/data", "cursor_record_field": "/meta/ts"}}, environ={})
    assert config.source is not None and config.source.cursor_record_field == "/meta/ts"


def two_sources(**second: Any) -> dict[str, Any]:
    return {**BASE_CONFIG, "sources": [{"type": "otlp", "listen": "127.0.0.1:0"},
                                       {"type": "http_pull", "url": "http://127.0.0.1:1/labels", **second}]}


def test_sources_is_a_list_of_named_sources() -> None:
    config = config_from_mapping(two_sources(name="labels"), environ={})
    assert [s.source_name for s in config.source_list] == ["otlp", "labels"]
    assert config.source_list[0].listen_address == "127.0.0.1:0"


@pytest.mark.parametrize(("tree", "problem"), [
    ({**BASE_CONFIG, "sources": [{"type": "otlp", "listen": "127.0.0.1:0"}, {"type": "otlp"}]},
     "sources: names must be unique (set name: on each): otlp"),
    ({**two_sources(), "source": {"type": "jsonl", "path": "x"}}, "set at most one of source, sources"),
    ({**BASE_CONFIG, "sources": [{"type": "http_push", "listen": "shared", "name": "a"},
                                 {"type": "http_push", "listen": "shared", "name": "b"}]},
     "at most one source of each type may listen on 'shared'"),
])
def test_conflicting_sources_are_refused(tree: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_mapping(tree, environ={})
    assert any(problem in line for line in err.value.problems), err.value.problems


def test_an_item_of_sources_is_named_by_its_index() -> None:
    with pytest.raises(ConfigError) as err:
        config_from_mapping({**BASE_CONFIG, "sources": [{"type": "jsonl"}]}, environ={})
    assert err.value.problems == ["sources.0: path is required when type is jsonl"]


@pytest.mark.slow
def test_outputs_from_a_file_and_labels_pushed_join_with_health_and_counts_per_source(tmp_path: Path) -> None:
    outputs, push_port = tmp_path / "outputs.jsonl", free_port()
    outputs.write_text("")
    config = write_config(tmp_path / "config.yaml", state_dir=str(tmp_path / "state"), sources=[
        {"type": "jsonl", "name": "app_log", "path": str(outputs)},
        {"type": "http_push", "name": "reviews", "listen": f"127.0.0.1:{push_port}"}])
    agent = AgentProcess(config, free_port(), tmp_path / "agent.log").start()
    try:
        append_lines(outputs, [record(f"c{i}", 1_790_000_000 + i) for i in range(10)])
        reply = requests.post(f"http://127.0.0.1:{push_port}/v1/records", timeout=10,
                              json=[label(f"c{i}", 1_790_000_100 + i, resolved=i % 2) for i in range(6)])
        assert reply.status_code == 202
        wait_until(lambda: agent.value("goodhart_records_total", source="app_log") == 10, what="outputs read")
        assert agent.value("goodhart_records_total", source="reviews") == 6
        wait_until(lambda: agent.value("goodhart_audited_pairs", proxy="thumbs_up", audit="resolved",
                                       segment="*") == 6, what="labels from one source joined to outputs of another")
        for component in ("source", "source:app_log", "source:reviews"):
            assert agent.value("goodhart_up", component=component) == 1, component
    finally:
        agent.stop_quietly()
