"""Record parsing: dotted paths, timestamps, and one counted reason for every kind of bad record."""

from __future__ import annotations

import json
import logging

import pytest

from agent.config import config_from_mapping
from agent.records import REJECT_REASONS, Record, RecordParser, Rejection, parse_timestamp

CONFIG = config_from_mapping({
    "proxies": [{"name": "thumbs_up", "field": "proxy.thumbs_up"},
                {"name": "seconds", "field": "proxy.resolution_seconds", "direction": "lower"}],
    "audits": [{"name": "resolved", "field": "audit.resolved"}],
    "segments": {"field": "labels.segment"},
    "limits": {"max_record_bytes": 1024},
}, {})
PARSER = RecordParser(CONFIG)


def parse(obj: object) -> Record | Rejection:
    return PARSER.parse_line(obj if isinstance(obj, str | bytes) else json.dumps(obj))


def test_contract_record_is_parsed_by_dotted_paths() -> None:
    rec = parse({"id": "conv-000123", "ts": 1790000123.4, "labels": {"segment": "billing", "model": "bot-v2"},
                 "input": "hi", "output": "hello", "proxy": {"thumbs_up": 1, "resolution_seconds": 42.0},
                 "audit": {"resolved": 0}})
    assert isinstance(rec, Record)
    assert (rec.id, rec.ts, rec.segment) == ("conv-000123", 1790000123.4, "billing")
    assert rec.proxies == {"thumbs_up": 1.0, "seconds": 42.0}
    assert rec.audits == {"resolved": 0.0}
    assert rec.is_output


def test_label_only_record_is_not_an_output() -> None:
    rec = parse({"id": "conv-1", "audit": {"resolved": True}})
    assert isinstance(rec, Record) and not rec.is_output
    assert rec.audits == {"resolved": 1.0} and rec.ts is None


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-09-21T14:15:00Z", 1790000100.0),
    ("2026-09-21T16:15:00+02:00", 1790000100.0),
    (1790000100, 1790000100.0),
])
def test_timestamps_accept_epoch_and_rfc3339(text: object, expected: float) -> None:
    assert parse_timestamp(text) == expected


@pytest.mark.parametrize(("line", "reason"), [
    ("not json at all", "not_json"),
    (b"\xff\xfe{}", "not_json"),
    ("[1, 2]", "not_object"),
    (json.dumps({"id": "x" * 2000}), "too_large"),
    (json.dumps({"proxy": {"thumbs_up": 1}}), "no_id"),
    (json.dumps({"id": "", "proxy": {"thumbs_up": 1}}), "no_id"),
    (json.dumps({"id": 12, "proxy": {"thumbs_up": 1}}), "bad_id"),
    (json.dumps({"id": "a" * 257, "proxy": {"thumbs_up": 1}}), "bad_id"),
    (json.dumps({"id": "a", "ts": "yesterday", "proxy": {"thumbs_up": 1}}), "bad_timestamp"),
    (json.dumps({"id": "a", "ts": "2026-09-21T10:15:00", "proxy": {"thumbs_up": 1}}), "bad_timestamp"),
    (json.dumps({"id": "a", "ts": True, "proxy": {"thumbs_up": 1}}), "bad_timestamp"),
    ('{"id": "a", "proxy": {"thumbs_up": NaN}}', "bad_metric"),
    ('{"id": "a", "proxy": {"thumbs_up": Infinity}}', "bad_metric"),
    (json.dumps({"id": "a", "proxy": {"thumbs_up": "1"}}), "bad_metric"),
    (json.dumps({"id": "a", "audit": {"resolved": [1]}}), "bad_metric"),
    (json.dumps({"id": "a", "labels": {"segment": {"x": 1}}, "proxy": {"thumbs_up": 1}}), "bad_segment"),
    (json.dumps({"id": "a", "labels": {"segment": "s" * 200}, "proxy": {"thumbs_up": 1}}), "bad_segment"),
    (json.dumps({"id": "a", "output": "text only"}), "no_metrics"),
])
def test_bad_records_are_rejected_with_a_reason(line: str | bytes, reason: str) -> None:
    result = parse(line)
    assert isinstance(result, Rejection)
    assert result.reason == reason
    assert reason in REJECT_REASONS


def test_null_metric_means_absent_and_numbers_become_segments() -> None:
    rec = parse({"id": "a", "labels": {"segment": 3}, "proxy": {"thumbs_up": None, "resolution_seconds": 5}})
    assert isinstance(rec, Record)
    assert rec.proxies == {"seconds": 5.0}
    assert rec.segment == "3"


def test_a_field_path_absent_from_every_record_is_counted_and_logged_once_with_its_key(
        caplog: pytest.LogCaptureFixture) -> None:
    from agent.records import FIELD_CHECK_RECORDS

    config = config_from_mapping({"proxies": [{"name": "thumbs_up", "field": "proxy.thumbsup"},  # typo
                                              {"name": "seconds", "field": "proxy.seconds"}],
                                  "audits": [{"name": "resolved", "field": "audit.resolved"}],
                                  "segments": {"field": "labels.segment"}}, {})
    parser = RecordParser(config)
    with caplog.at_level(logging.WARNING, logger="agent.records"):
        for i in range(FIELD_CHECK_RECORDS + 5):
            parser.parse_object({"id": f"r{i}", "proxy": {"thumbs_up": 1, "seconds": 3},
                                 "audit": {"resolved": 1} if i % 2 else {}, "labels": {"segment": "billing"}})
    presence = parser.presence
    assert presence.records == FIELD_CHECK_RECORDS + 5
    assert presence.absent == {("proxy", "thumbs_up"): FIELD_CHECK_RECORDS + 5, ("proxy", "seconds"): 0,
                               ("audit", "resolved"): (FIELD_CHECK_RECORDS + 5 + 1) // 2, ("segment", "segment"): 0}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once, for the one field never present; not for the audit present in half
    assert warnings[0].fields["key"] == "proxies.0.field: proxy.thumbsup"  # type: ignore[attr-defined]


LABEL = b'{"id": "a", "audit": {"resolved": 1}}'


@pytest.mark.parametrize("line", [LABEL, LABEL + b" \r", b" \t" + LABEL, LABEL + b"x", b'{"id": "a"}{"id": "b"}',
                                  LABEL[:-2], b'{"id": "\\ud800"}'])
def test_a_line_decodes_as_json_loads_decodes_it(line: bytes) -> None:
    """Lines that are one object from first to last byte are scanned directly; whitespace around it,
    trailing garbage and broken objects go the usual way, with the same outcome."""
    from agent.records import decode_line

    try:
        expected: object = json.loads(line)
    except ValueError as err:
        expected = type(err)
    try:
        got: object = decode_line(line)
    except ValueError as err:
        got = type(err)
    assert got == expected
