"""Ingest rate over OTLP/HTTP (protobuf GenAI spans) against http_push of the same records, one agent.

    python -m bench.otlp [--spans 20000] [--batch 100]

One agent subprocess runs with two sources (``otlp`` and ``http_push``); the same support-bot
conversations are sent once as OTLP export requests (binary protobuf, ``batch`` spans each, 4 in 5
with an evaluation event) and once as the records the OTLP source makes of them, as JSON arrays to
``/v1/records``. Requests are sequential, prepared before the clock starts; reported: spans (records)
per second of wall time, and the agent's CPU seconds (user + system, from /proc) per 1,000. The
ratio is the figure to keep: the machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from agent.demo_world import SupportBot
from agent.sources.otlp_records import SpanIds, map_traces

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support import AgentProcess, free_port, write_config

CONFIG: dict[str, Any] = {
    "proxies": [{"name": "output_tokens", "field": "/attributes/gen_ai.usage.output_tokens", "direction": "lower"},
                {"name": "thumbs_up", "field": "/attributes/app.feedback.thumbs_up"}],
    "audits": [{"name": "helpful", "field": "/evaluations/helpful"}],
    "segments": {"field": "/attributes/gen_ai.request.model"},
    "schedule": {"detect_seconds": 3600, "retention_seconds": 3600},
}


def _attr(span: Any, key: str, value: Any) -> None:
    any_value = AnyValue(int_value=value) if isinstance(value, int) else AnyValue(string_value=value)
    span.attributes.add(key=key, value=any_value)


def build_requests(spans: int, batch: int, seed: int = 1) -> list[ExportTraceServiceRequest]:
    bot, t0 = SupportBot(seed), time.time() - spans
    made: list[ExportTraceServiceRequest] = []
    for start in range(0, spans, batch):
        request = ExportTraceServiceRequest()
        scope = request.resource_spans.add().scope_spans.add()
        for i in range(start, min(spans, start + batch)):
            record, resolved = bot.conversation(t0 + i, gamed=False)
            span = scope.spans.add(name="chat", span_id=i.to_bytes(8, "big"), trace_id=i.to_bytes(16, "big"),
                                   start_time_unix_nano=int((t0 + i) * 1e9),
                                   end_time_unix_nano=int((t0 + i + 2) * 1e9))
            for key, value in (("gen_ai.operation.name", "chat"), ("gen_ai.request.model", record["labels"]["segment"]),
                               ("gen_ai.response.id", record["id"]),
                               ("gen_ai.usage.output_tokens", int(record["proxy"]["resolution_seconds"])),
                               ("app.feedback.thumbs_up", record["proxy"]["thumbs_up"]),
                               ("gen_ai.output.messages", json.dumps(
                                   [{"role": "assistant", "parts": [{"type": "text", "content": record["output"]}]}]))):
                _attr(span, key, value)
            if i % 5 != 4:
                event = span.events.add(name="gen_ai.evaluation.result")
                _attr(event, "gen_ai.evaluation.name", "helpful")
                event.attributes.add(key="gen_ai.evaluation.score.value", value=AnyValue(double_value=resolved))
        made.append(request)
    return made


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(pid: int, bodies: list[bytes], url: str, content_type: str) -> tuple[float, float]:
    """(wall seconds, agent CPU seconds) to post every body in order."""
    session = requests.Session()
    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    for body in bodies:
        reply = session.post(url, data=body, headers={"Content-Type": content_type}, timeout=60)
        reply.raise_for_status()
    return time.perf_counter() - t0, cpu_seconds(pid) - cpu0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args(argv)
    otlp_requests = build_requests(args.spans, args.batch)
    span_ids = SpanIds(0)
    protobuf = [r.SerializeToString() for r in otlp_requests]
    # the same records for http_push, with other ids so that neither run deduplicates the other
    arrays = [json.dumps([{**rec, "id": "push-" + rec["id"]} for rec in map_traces(r, span_ids).records]).encode()
              for r in otlp_requests]
    with tempfile.TemporaryDirectory() as tmp:
        otlp_port, push_port = free_port(), free_port()
        limit = {"max_body_bytes": 16 << 20, "max_in_flight": 4}
        config = write_config(Path(tmp) / "config.yaml", state_dir=str(Path(tmp) / "state"), sources=[
            {"type": "otlp", "listen": f"127.0.0.1:{otlp_port}", **limit},
            {"type": "http_push", "listen": f"127.0.0.1:{push_port}", **limit}], **CONFIG)
        agent = AgentProcess(config, free_port(), Path(tmp) / "agent.log").start()
        try:
            assert agent.proc is not None
            otlp_wall, otlp_cpu = timed(agent.proc.pid, protobuf, f"http://127.0.0.1:{otlp_port}/v1/traces",
                                        "application/x-protobuf")
            push_wall, push_cpu = timed(agent.proc.pid, arrays, f"http://127.0.0.1:{push_port}/v1/records",
                                        "application/json")
            stored = {s: agent.value("goodhart_records_total", source=s) for s in ("otlp", "http_push")}
        finally:
            agent.terminate()
    n = args.spans
    print(f"{n} spans in batches of {args.batch}; records stored: {stored}")
    print(f"otlp protobuf : {n / otlp_wall:8.0f} spans/s   agent CPU {1000 * otlp_cpu / n:.3f} s per 1,000 spans")
    print(f"http_push JSON: {n / push_wall:8.0f} records/s agent CPU {1000 * push_cpu / n:.3f} s per 1,000 records")
    print(f"ratio otlp/http_push: throughput {push_wall / otlp_wall:.2f}x, CPU per item {otlp_cpu / push_cpu:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
