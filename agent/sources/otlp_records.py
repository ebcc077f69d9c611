"""OTLP GenAI telemetry to records: spans become outputs, evaluation events become (late) labels.

The mapping follows the OpenTelemetry GenAI semantic conventions: a span with the attribute
``gen_ai.operation.name`` is one model call and becomes one record (``id`` = ``gen_ai.response.id``,
else the span id in hex); its ``gen_ai.evaluation.result`` events become ``evaluations``
(``{gen_ai.evaluation.name: gen_ai.evaluation.score.value}``). A ``gen_ai.evaluation.result`` *log
record* (the conventions' event, emitted later by an evaluator) becomes a label record
``{id, ts, evaluations}`` for the output it names: by ``gen_ai.response.id``, else by the span it is
parented to, looked up in :class:`SpanIds` (span id → record id of spans seen by this process), else
the span id itself (the id of a span that had no response id). Everything here is pure: the
receiver (:mod:`agent.sources.otlp`) does the HTTP and the counting.
"""

from __future__ import annotations

import base64
import json
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

OPERATION = "gen_ai.operation.name"
RESPONSE_ID = "gen_ai.response.id"
EVALUATION_EVENT = "gen_ai.evaluation.result"
EVALUATION_NAME = "gen_ai.evaluation.name"
EVALUATION_SCORE = "gen_ai.evaluation.score.value"
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"


def any_value(value: Any) -> Any:
    """An OTLP ``AnyValue`` as plain JSON: scalars, lists, dicts; bytes as base64."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attribute_map(value.kvlist_value.values)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    if kind == "double_value" and not math.isfinite(value.double_value):
        return None  # JSON has no NaN; a metric would be rejected anyway
    return getattr(value, kind)


def attribute_map(attributes: Any) -> dict[str, Any]:
    """``repeated KeyValue`` as a flat dict, keys kept whole (``gen_ai.usage.output_tokens`` is one key)."""
    return {kv.key: any_value(kv.value) for kv in attributes}


def message_text(raw: Any) -> str | None:
    """The text parts of a ``gen_ai.*.messages`` attribute (a JSON string of messages, or the list).

    >>> message_text('[{"role": "assistant", "parts": [{"type": "text", "content": "Hi"}, '
    ...              '{"type": "tool_call", "name": "f"}, {"type": "text", "content": "there"}]}]')
    'Hi\\nthere'
    >>> message_text("not json") is None
    True
    """
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except (ValueError, RecursionError):  # not JSON, or an integer over 4,300 digits
            return None
    if not isinstance(raw, list):
        return None
    texts = [part["content"] for message in raw if isinstance(message, dict)
             for part in message.get("parts") or [] if isinstance(part, dict)
             and part.get("type") == "text" and isinstance(part.get("content"), str)]
    return "\n".join(texts) if texts else None


def evaluation(attributes: dict[str, Any]) -> tuple[str, float] | None:
    """(name, score) of an evaluation result's attributes; None without a name or a numeric score."""
    name, score = attributes.get(EVALUATION_NAME), attributes.get(EVALUATION_SCORE)
    if not isinstance(name, str) or not name or isinstance(score, bool) or not isinstance(score, int | float):
        return None
    return name, float(score)


class SpanIds:
    """Span id → record id of recent GenAI spans whose record id is their response id, bounded (oldest
    forgotten first), so a later evaluation that names only its span joins the right output."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, str] = OrderedDict()

    def remember(self, span_id: str, record_id: str) -> None:
        if self.capacity <= 0 or span_id == record_id:
            return
        self._ids[span_id] = record_id
        self._ids.move_to_end(span_id)
        while len(self._ids) > self.capacity:
            self._ids.popitem(last=False)

    def record_id(self, span_id: str) -> str:
        return self._ids.get(span_id, span_id)


@dataclass
class Mapped:
    """What one export request made: records for the pipeline, and items skipped by reason."""

    records: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def span_record(span: Any, resource: dict[str, Any], span_ids: SpanIds) -> dict[str, Any] | None:
    """One GenAI span as a record, or None for a span that is not a GenAI operation."""
    attributes = attribute_map(span.attributes)
    if OPERATION not in attributes:
        return None
    span_id = span.span_id.hex()
    response_id = attributes.get(RESPONSE_ID)
    rid = response_id if isinstance(response_id, str) and response_id else span_id
    span_ids.remember(span_id, rid)
    record: dict[str, Any] = {
        "id": rid, "ts": span.start_time_unix_nano / 1e9, "name": span.name,
        "duration_seconds": max(0, span.end_time_unix_nano - span.start_time_unix_nano) / 1e9,
        "trace_id": span.trace_id.hex(), "span_id": span_id, "attributes": attributes, "resource": resource}
    for key, attr in (("input", INPUT_MESSAGES), ("output", OUTPUT_MESSAGES)):
        text = message_text(attributes.get(attr))
        if text is not None:
            record[key] = text
    evaluations = dict(e for e in (evaluation(attribute_map(ev.attributes)) for ev in span.events
                                   if ev.name == EVALUATION_EVENT) if e is not None)
    if evaluations:
        record["evaluations"] = evaluations
    return record


def map_traces(request: Any, span_ids: SpanIds) -> Mapped:
    """An ``ExportTraceServiceRequest``: one record per GenAI span; other spans skipped (``not_genai``)."""
    mapped = Mapped()
    for resource_spans in request.resource_spans:
        resource = attribute_map(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                record = span_record(span, resource, span_ids)
                if record is None:
                    mapped.skip("not_genai")
                else:
                    mapped.records.append(record)
    return mapped


def _is_evaluation(log_record: Any, attributes: dict[str, Any]) -> bool:
    name = getattr(log_record, "event_name", "") or attributes.get("event.name")
    return name == EVALUATION_EVENT


def label_record(log_record: Any, span_ids: SpanIds) -> dict[str, Any] | str:
    """An evaluation log record as a label ``{id, ts, evaluations}``, or the reason it is skipped."""
    attributes = attribute_map(log_record.attributes)
    if not _is_evaluation(log_record, attributes):
        return "not_evaluation"
    result = evaluation(attributes)
    if result is None:
        return "no_score"
    response_id = attributes.get(RESPONSE_ID)
    if isinstance(response_id, str) and response_id:
        rid = response_id
    elif log_record.span_id:
        rid = span_ids.record_id(log_record.span_id.hex())
    else:
        return "no_target"
    ts_nano = log_record.time_unix_nano or log_record.observed_time_unix_nano
    label: dict[str, Any] = {"id": rid, "evaluations": dict([result])}
    if ts_nano:
        label["ts"] = ts_nano / 1e9
    return label


def map_logs(request: Any, span_ids: SpanIds) -> Mapped:
    """An ``ExportLogsServiceRequest``: one label per evaluation result; other log records skipped."""
    mapped = Mapped()
    for resource_logs in request.resource_logs:
        for scope_logs in resource_logs.scope_logs:
            for log_record in scope_logs.log_records:
                made = label_record(log_record, span_ids)
                if isinstance(made, str):
                    mapped.skip(made)
                else:
                    mapped.records.append(made)
    return mapped
