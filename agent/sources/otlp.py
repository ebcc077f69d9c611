"""An OTLP/HTTP receiver: ``POST /v1/traces`` and ``POST /v1/logs`` from OpenTelemetry SDKs and Collectors.

It is the push source with the OTLP/HTTP protocol in front (https://opentelemetry.io/docs/specs/otlp/,
"OTLP/HTTP"): the same admission (token, type, size, in-flight slots: 401/415/413/429 before the
body is kept) and the same promise (the 200 is sent once the records are committed through the
``ingest`` callable). Bodies are binary protobuf (``application/x-protobuf``) or OTLP/JSON
(``application/json``, ids in hex), optionally gzip-compressed (bounded once inflated), decoded
with the ``opentelemetry-proto`` messages. The reply is an ``Export*ServiceResponse`` in the
request's encoding, with ``partial_success`` (``rejected_spans``/``rejected_log_records`` and a
message) when the pipeline rejected some records; errors carry a ``google.rpc.Status``. The
mapping from spans and log records to records is :mod:`agent.sources.otlp_records`.
"""

from __future__ import annotations

import base64
import json
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from prometheus_client.core import CounterMetricFamily, Metric

from agent.config import SourceConfig
from agent.http.media import media_type
from agent.http.server import Handler, HttpServer, Request, Response
from agent.http.wire import ServerLimits
from agent.sources.base import Ingest
from agent.sources.http_push import HttpPushSource, log
from agent.sources.otlp_records import Mapped, SpanIds, map_logs, map_traces

TRACES_PATH, LOGS_PATH = "/v1/traces", "/v1/logs"
PROTOBUF, JSON = "application/x-protobuf", "application/json"
#: HTTP status → google.rpc.Code carried in the error ``Status``
RPC_CODES = {400: 3, 401: 16, 413: 8, 415: 3, 429: 8, 503: 14}
ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})
SPAN_SKIP_REASONS = ("not_genai",)
LOG_SKIP_REASONS = ("not_evaluation", "no_score", "no_target")


class PayloadError(ValueError):
    """A body that is not an OTLP export request (answered 400)."""


class TooLarge(ValueError):
    """A body above the decompressed limit (answered 413)."""


@dataclass(frozen=True)
class Signal:
    """What differs between traces and logs: the messages, the mapping, the rejected-count field."""

    request: type[Message]
    response: type[Message]
    mapping: Callable[[Any, SpanIds], Mapped]
    rejected_field: str
    items: str


TRACES = Signal(ExportTraceServiceRequest, ExportTraceServiceResponse, map_traces, "rejected_spans", "spans")
LOGS = Signal(ExportLogsServiceRequest, ExportLogsServiceResponse, map_logs, "rejected_log_records", "log records")


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def status_bytes(code: int, message: str) -> bytes:
    """A ``google.rpc.Status`` (code = 1, message = 2) in protobuf wire format, without its package.

    >>> status_bytes(3, "bad")
    b'\\x08\\x03\\x12\\x03bad'
    """
    text = message.encode("utf-8")
    return b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text


def inflate(body: bytes, limit: int) -> bytes:
    """A gzip body inflated, at most ``limit`` bytes (TooLarge above, PayloadError when corrupt)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error:
        raise PayloadError("body is not valid gzip") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise TooLarge(f"body above {limit} bytes once decompressed")
    if not inflater.eof:
        raise PayloadError("gzip body is truncated")
    return out


def _hex_ids_to_base64(node: Any) -> Any:
    """OTLP/JSON writes trace and span ids in hex; the protobuf JSON parser reads bytes as base64."""
    if isinstance(node, dict):
        return {k: (base64.b64encode(bytes.fromhex(v)).decode() if k in ID_KEYS and isinstance(v, str)
                    else _hex_ids_to_base64(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [_hex_ids_to_base64(v) for v in node]
    return node


def decode(signal: Signal, kind: str, body: bytes) -> Message:
    """The export request in a protobuf or OTLP/JSON body; PayloadError when it is not one."""
    message = signal.request()
    try:
        if kind == PROTOBUF:
            message.ParseFromString(body)
        else:
            json_format.ParseDict(_hex_ids_to_base64(json.loads(body)), message, ignore_unknown_fields=True)
    except (DecodeError, json_format.ParseError, ValueError, TypeError, RecursionError) as err:
        raise PayloadError(f"not an OTLP {signal.items} export request ({type(err).__name__})") from None
    return message


def encode(message: Message, kind: str, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    if kind == JSON:
        return Response(status, json_format.MessageToJson(message, indent=None).encode(), JSON, headers or {})
    return Response(status, message.SerializeToString(), PROTOBUF, headers or {})


class OtlpSource(HttpPushSource):
    """GenAI spans and evaluation events over OTLP/HTTP, stored before the reply."""

    name = "otlp"

    def __init__(self, ingest: Ingest, *, listen: str = "127.0.0.1:4318", server: HttpServer | None = None,
                 max_body_bytes: int = 1 << 20, max_in_flight: int = 4, retry_after_seconds: int = 1,
                 token: str | None = None, max_decompressed_bytes: int = 16 << 20,
                 span_ids_remembered: int = 100_000, limits: ServerLimits | None = None) -> None:
        super().__init__(ingest, listen=listen, server=server, max_body_bytes=max_body_bytes,
                         max_in_flight=max_in_flight, retry_after_seconds=retry_after_seconds, token=token,
                         limits=limits)
        self.max_decompressed_bytes = max_decompressed_bytes
        self.span_ids = SpanIds(span_ids_remembered)
        self._lock = threading.Lock()
        self.skipped: dict[str, dict[str, int]] = {"spans": dict.fromkeys(SPAN_SKIP_REASONS, 0),
                                                   "log records": dict.fromkeys(LOG_SKIP_REASONS, 0)}

    @classmethod
    def from_config(cls, s: SourceConfig, ingest: Ingest, agent_server: HttpServer | None,
                    key: str = "source", limits: ServerLimits | None = None) -> OtlpSource:
        made = super().from_config(s, ingest, agent_server, key, limits)
        made.max_decompressed_bytes = s.max_decompressed_bytes
        made.span_ids = SpanIds(s.span_ids_remembered)
        return made

    def routes(self) -> dict[str, Handler]:
        return {TRACES_PATH: lambda request: self.export(TRACES, request),
                LOGS_PATH: lambda request: self.export(LOGS, request)}

    # -- the protocol --------------------------------------------------------------------------------
    def unsupported_media(self, request: Request) -> str | None:
        if media_type(request.headers.get("content-type", "")) not in (PROTOBUF, JSON):
            return f"Content-Type must be {PROTOBUF} or {JSON}"
        if request.headers.get("content-encoding", "identity").strip().lower() not in ("gzip", "identity"):
            return "Content-Encoding must be gzip or absent"
        return None

    def error_response(self, status: int, message: str, headers: dict[str, str] | None,
                       request: Request | None) -> Response:
        """A ``google.rpc.Status`` in the request's encoding (protobuf when it cannot be told)."""
        code = RPC_CODES.get(status, 2)
        kind = media_type(request.headers.get("content-type", "")) if request is not None else PROTOBUF
        if kind == JSON:
            return Response.json({"code": code, "message": message}, status, headers)
        return Response(status, status_bytes(code, message), PROTOBUF, headers or {})

    def export(self, signal: Signal, request: Request) -> Response:
        """Decode, map, store in one transaction, then answer with the export response."""
        kind = media_type(request.headers.get("content-type", ""))
        try:
            body = request.body
            if request.headers.get("content-encoding", "").strip().lower() == "gzip":
                body = inflate(body, self.max_decompressed_bytes)
            mapped = signal.mapping(decode(signal, kind, body), self.span_ids)
        except TooLarge as err:
            return self._refuse("too_large", 413, str(err), request=request)
        except PayloadError as err:
            return self._refuse("bad_body", 400, str(err), request=request)
        with self._lock:
            for reason, count in mapped.skipped.items():
                self.skipped[signal.items][reason] = self.skipped[signal.items].get(reason, 0) + count
        response = signal.response()
        if mapped.records:
            try:
                result = self.ingest(self.name, list(mapped.records))
            except Exception:
                log.exception("otlp ingest failed")
                return self._refuse("ingest_failed", 503, "records not stored, retry later",
                                    {"Retry-After": str(self.retry_after_seconds)}, request)
            rejected = sum(result.rejected.values())
            if rejected:
                partial: Any = response.partial_success  # type: ignore[attr-defined]
                setattr(partial, signal.rejected_field, rejected)
                reasons = ", ".join(f"{r}={n}" for r, n in sorted(result.rejected.items()))
                partial.error_message = f"{rejected} {signal.items} rejected ({reasons})"
        return encode(response, kind)

    def collect(self) -> Iterator[Metric]:
        for items, family in (("spans", "goodhart_otlp_spans_skipped"),
                              ("log records", "goodhart_otlp_log_records_skipped")):
            metric = CounterMetricFamily(family, f"OTLP {items} received but not made into records, by reason.",
                                         labels=["source", "reason"])
            for reason, count in sorted(self.skipped[items].items()):
                metric.add_metric([self.name, reason], float(count))
            yield metric
