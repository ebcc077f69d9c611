"""The OTLP source end to end: the real OpenTelemetry Python SDK exports GenAI spans to a running agent.

The demo's support bot (agent/demo_world.py) is sent as OpenTelemetry GenAI spans: its resolution
time as ``gen_ai.usage.output_tokens`` (lower is "better"), the user's thumbs-up as an app
attribute, the segment as ``gen_ai.request.model``, and whether the conversation was resolved as a
``gen_ai.evaluation.result`` event named ``helpful``; the config addresses them with JSON Pointers.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from support import AgentProcess, free_port, wait_until, write_config

from agent.demo_world import SupportBot

OTLP_PROXIES = [
    {"name": "output_tokens", "field": "/attributes/gen_ai.usage.output_tokens", "direction": "lower"},
    {"name": "thumbs_up", "field": "/attributes/app.feedback.thumbs_up", "direction": "higher"},
]
OTLP_AUDITS = [{"name": "helpful", "field": "/evaluations/helpful"}]
OTLP_SEGMENTS = {"field": "/attributes/gen_ai.request.model"}


def otlp_config(tmp_path: Path, port: int, **overrides: Any) -> Path:
    return write_config(tmp_path / "config.yaml", source={"type": "otlp", "listen": f"127.0.0.1:{port}"},
                        proxies=OTLP_PROXIES, audits=OTLP_AUDITS, segments=OTLP_SEGMENTS,
                        state_dir=str(tmp_path / "state"), **overrides)


@pytest.fixture
def otlp_agent(tmp_path: Path) -> Iterator[tuple[AgentProcess, str]]:
    port = free_port()
    config = otlp_config(tmp_path, port, schedule={"detect_seconds": 0.5},
                         detection={"reference_pairs": 100, "audits_between_false_alarms": 1000})
    agent = AgentProcess(config, free_port(), tmp_path / "agent.log").start()
    yield agent, f"http://127.0.0.1:{port}"
    agent.stop_quietly()


def tracer_for(endpoint: str, **exporter: Any) -> tuple[TracerProvider, Any]:
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint + "/v1/traces", **exporter)))
    return provider, provider.get_tracer("support-bot")


def messages(role: str, text: str) -> str:
    return json.dumps([{"role": role, "parts": [{"type": "text", "content": text}]}])


def send_conversation(tracer: Any, record: dict[str, Any], resolved: int, evaluate: bool,
                      response_id: str | None) -> None:
    start = int(record["ts"] * 1e9)
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat", "gen_ai.request.model": record["labels"]["segment"],
        "gen_ai.usage.output_tokens": int(record["proxy"]["resolution_seconds"]),
        "app.feedback.thumbs_up": record["proxy"]["thumbs_up"],
        "gen_ai.input.messages": messages("user", record["input"]),
        "gen_ai.output.messages": messages("assistant", record["output"])}
    if response_id is not None:
        attributes["gen_ai.response.id"] = response_id
    span = tracer.start_span("chat " + record["labels"]["segment"], start_time=start, attributes=attributes)
    if evaluate:
        span.add_event("gen_ai.evaluation.result", {"gen_ai.evaluation.name": "helpful",
                                                    "gen_ai.evaluation.score.value": float(resolved)})
    span.end(end_time=start + 2_000_000_000)


@pytest.mark.slow
def test_sdk_spans_become_records_and_pairs_and_a_goodhart_turn_alarms(otlp_agent: Any) -> None:
    agent, endpoint = otlp_agent
    provider, tracer = tracer_for(endpoint)
    bot = SupportBot(7)
    t0 = time.time() - 3600
    n, change_at, evaluated = 500, 400, 0
    for i in range(n):
        record, resolved = bot.conversation(t0 + i, gamed=i >= change_at)
        evaluate = i % 5 != 4  # four in five carry their evaluation; the rest are outputs only
        evaluated += evaluate
        send_conversation(tracer, record, resolved, evaluate, record["id"] if i % 2 else None)
        # a span that is not a GenAI operation (an HTTP call, say) is skipped, not a record
        tracer.start_span("GET /health", start_time=int(record["ts"] * 1e9)).end()
    provider.shutdown()
    wait_until(lambda: agent.value("goodhart_records_total", source="otlp") == n, what="every GenAI span stored")
    assert agent.value("goodhart_otlp_spans_skipped_total", source="otlp", reason="not_genai") == n
    # pair series are rebuilt after each detect step (docs/metrics.md), so they follow the records
    wait_until(lambda: agent.value("goodhart_audited_pairs", proxy="output_tokens", audit="helpful",
                                   segment="*") == evaluated, what="every evaluation joined to its output")
    assert not any(v for (name, _), v in agent.metrics().items() if name == "goodhart_records_rejected_total")
    wait_until(lambda: agent.value("goodhart_divergence_alarm", proxy="output_tokens", audit="helpful",
                                   segment="*") == 1, timeout=30, what="the Goodhart turn to alarm")


def post(endpoint: str, path: str, body: bytes, content_type: str, **headers: str) -> requests.Response:
    return requests.post(endpoint + path, data=body, headers={"Content-Type": content_type, **headers}, timeout=10)


def genai_request(span_id: str, **attributes: Any) -> dict[str, Any]:
    """An OTLP/JSON trace export request with one GenAI span (ids in hex, as OTLP/JSON writes them)."""
    attrs = [{"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
             {"key": "gen_ai.request.model", "value": {"stringValue": "billing"}}]
    attrs += [{"key": k, "value": {"intValue": str(v)} if isinstance(v, int) else {"stringValue": v}}
              for k, v in attributes.items()]
    now = int(time.time() * 1e9)
    return {"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"spans": [{
        "traceId": "5b8efff798038103d269b633813fc60c", "spanId": span_id, "name": "chat billing", "kind": 3,
        "startTimeUnixNano": str(now), "endTimeUnixNano": str(now + 10**9), "attributes": attrs}]}]}]}


def evaluation_log(score: float, span_id: str | None = None, response_id: str | None = None) -> dict[str, Any]:
    attrs = [{"key": "gen_ai.evaluation.name", "value": {"stringValue": "helpful"}},
             {"key": "gen_ai.evaluation.score.value", "value": {"doubleValue": score}}]
    if response_id:
        attrs.append({"key": "gen_ai.response.id", "value": {"stringValue": response_id}})
    log: dict[str, Any] = {"timeUnixNano": str(int(time.time() * 1e9)), "eventName": "gen_ai.evaluation.result",
                           "attributes": attrs}
    if span_id:
        log.update(traceId="5b8efff798038103d269b633813fc60c", spanId=span_id)
    return {"resourceLogs": [{"scopeLogs": [{"logRecords": [log]}]}]}


@pytest.mark.slow
def test_json_gzip_late_evaluations_and_refusals(tmp_path: Path) -> None:
    port = free_port()
    agent = AgentProcess(otlp_config(tmp_path, port), free_port(), tmp_path / "agent.log").start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        # the SDK with gzip, then hand-built OTLP/JSON (gzip too) and late evaluations over /v1/logs
        provider, tracer = tracer_for(endpoint, compression=Compression.Gzip)
        bot = SupportBot(3)
        record, _ = bot.conversation(time.time(), gamed=False)
        send_conversation(tracer, record, 1, True, "resp-sdk")
        provider.shutdown()
        body = gzip.compress(json.dumps(genai_request("00f067aa0ba902b7", **{
            "gen_ai.usage.output_tokens": 120, "app.feedback.thumbs_up": 1})).encode())
        reply = post(endpoint, "/v1/traces", body, "application/json", **{"Content-Encoding": "gzip"})
        assert reply.status_code == 200 and reply.headers["Content-Type"] == "application/json"
        assert reply.json() == {}  # an empty ExportTraceServiceResponse: everything accepted
        reply = post(endpoint, "/v1/traces", json.dumps(genai_request(
            "00f067aa0ba902b8", **{"gen_ai.response.id": "resp-2", "gen_ai.usage.output_tokens": 80})).encode(),
            "application/json")
        assert reply.status_code == 200
        wait_until(lambda: agent.value("goodhart_records_total", source="otlp") == 3, what="three outputs")
        # late: one by the span it is parented to (no response id), one by response id, one by a span
        # whose record id is its response id (remembered by the receiver)
        for late in (evaluation_log(1.0, span_id="00f067aa0ba902b7"), evaluation_log(0.0, response_id="resp-sdk"),
                     evaluation_log(1.0, span_id="00f067aa0ba902b8")):
            reply = post(endpoint, "/v1/logs", json.dumps(late).encode(), "application/json")
            assert reply.status_code == 200, reply.text
        not_an_evaluation = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"stringValue": "hi"}}]}]}]}
        assert post(endpoint, "/v1/logs", json.dumps(not_an_evaluation).encode(), "application/json").ok
        wait_until(lambda: agent.value("goodhart_audited_pairs", proxy="output_tokens", audit="helpful",
                                       segment="*") == 3, what="three audited pairs, two from late labels")
        assert agent.value("goodhart_otlp_log_records_skipped_total", source="otlp", reason="not_evaluation") == 1

        # partial success: a GenAI span whose proxy is not a number is rejected, counted in the reply
        bad = ExportTraceServiceRequest()
        span = bad.resource_spans.add().scope_spans.add().spans.add()
        span.span_id, span.start_time_unix_nano = bytes.fromhex("1111111111111111"), time.time_ns()
        span.attributes.add(key="gen_ai.operation.name", value=AnyValue(string_value="chat"))
        span.attributes.add(key="gen_ai.usage.output_tokens", value=AnyValue(string_value="many"))
        reply = post(endpoint, "/v1/traces", bad.SerializeToString(), "application/x-protobuf")
        assert reply.status_code == 200 and reply.headers["Content-Type"] == "application/x-protobuf"
        answer = ExportTraceServiceResponse.FromString(reply.content)
        assert answer.partial_success.rejected_spans == 1
        assert "bad_metric" in answer.partial_success.error_message

        # refusals, answered per OTLP/HTTP and counted by reason
        assert post(endpoint, "/v1/traces", b"\xff\xff\xff not protobuf", "application/x-protobuf").status_code == 400
        assert post(endpoint, "/v1/logs", b"{not json", "application/json").status_code == 400
        assert post(endpoint, "/v1/traces", b"x", "text/plain").status_code == 415
        assert post(endpoint, "/v1/traces", b"x", "application/json", **{"Content-Encoding": "br"}).status_code == 415
        assert post(endpoint, "/v1/traces", b"\0" * (2 << 20), "application/x-protobuf").status_code == 413
        bomb = gzip.compress(b"\0" * (17 << 20))  # small on the wire, above the decompressed limit
        assert post(endpoint, "/v1/traces", bomb, "application/x-protobuf",
                    **{"Content-Encoding": "gzip"}).status_code == 413
        assert agent.value("goodhart_source_errors_total", reason="bad_body") == 2
        assert agent.value("goodhart_source_errors_total", reason="unsupported_media_type") == 2
        assert agent.value("goodhart_source_errors_total", reason="too_large") == 2
        assert agent.value("goodhart_up", component="source") == 1
        empty = ExportLogsServiceRequest().SerializeToString()
        assert post(endpoint, "/v1/logs", empty, "application/x-protobuf").status_code == 200
    finally:
        agent.stop_quietly()
