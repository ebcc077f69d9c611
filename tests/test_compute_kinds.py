"""Each compute kind on its own, and the record parser around them: a failure loses one proxy of one
record, with a counted reason, and never the record or the stream."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from compute_support import NEGATIVE, POSITIVE, train_model

from agent.compute import ComputeFailure, Computer, build_computer
from agent.config import ConfigError, config_from_mapping
from agent.records import Record, RecordParser, Rejection


def computer(**spec: Any) -> Computer:
    config = config_from_mapping({"proxies": [{"name": "p", "compute": spec}],
                                  "audits": [{"name": "a", "field": "audit.a"}]}, environ={})
    compute = config.proxies[0].compute
    assert compute is not None
    return build_computer(compute)


def failure(compute: Computer, record: dict[str, Any]) -> str:
    with pytest.raises(ComputeFailure) as err:
        compute(record)
    return err.value.reason


def test_length_counts_chars_words_and_approximate_tokens() -> None:
    text = "Thanks! Your refund of $40 is on its way."
    assert computer(kind="length", unit="chars")({"output": text}) == len(text)
    assert computer(kind="length")({"output": text}) == 9  # words is the default unit
    tokens = computer(kind="length", unit="tokens", field="reply.text")
    assert tokens({"reply": {"text": text}}) == 12  # 9 words (with "40") and 3 punctuation marks
    assert tokens({"reply": {"text": "Internationalization"}}) == 3  # long words count as several pieces
    assert failure(tokens, {"reply": {}}) == "missing_field"
    assert failure(tokens, {"reply": {"text": ["a list"]}}) == "not_text"


def test_duration_takes_epoch_seconds_and_rfc3339() -> None:
    seconds = computer(kind="duration", start="opened_at", end="closed_at")
    assert seconds({"opened_at": 1790000000, "closed_at": 1790000042.5}) == 42.5
    assert seconds({"opened_at": "2026-01-05T10:00:00Z", "closed_at": "2026-01-05T12:00:00+02:00"}) == 0.0
    assert failure(seconds, {"opened_at": 10, "closed_at": 5}) == "negative_duration"
    assert failure(seconds, {"opened_at": "2026-01-05T10:00:00", "closed_at": 5}) == "bad_timestamp"  # no offset
    assert failure(seconds, {"opened_at": 10}) == "missing_field"


def test_keywords_match_whole_words_and_phrases_case_insensitively() -> None:
    refusal = computer(kind="match", keywords=["I can't", "unable", "sorry"])
    assert refusal({"output": "Sorry, I CAN'T share that."}) == 1.0
    assert refusal({"output": "We were unable to reach you"}) == 1.0
    assert refusal({"output": "The sorrynotsorry plan is enabled"}) == 0.0  # not a whole word
    strict = computer(kind="match", keywords=["Sorry"], case_insensitive=False)
    assert strict({"output": "sorry"}) == 0.0 and strict({"output": "Sorry"}) == 1.0


def test_a_regex_is_searched_anywhere() -> None:
    upsell = computer(kind="match", regex=r"anything else (I|we) can help( you)? with\??$")
    assert upsell({"output": "Done! Is there anything else I can help you with?"}) == 1.0
    assert upsell({"output": "Anything else we can help with"}) == 1.0
    assert upsell({"output": "anything else? I can help"}) == 0.0


def test_a_catastrophic_regex_times_out_on_one_record_and_works_on_the_next() -> None:
    runaway = computer(kind="match", regex=r"^(a|aa)+$", timeout_seconds=0.02)
    # unbounded with Python's re (about 2**55 steps): only the timeout can end it, with this reason
    assert failure(runaway, {"output": "a" * 80 + "b"}) == "regex_timeout"
    assert runaway({"output": "aaaa"}) == 1.0


def test_json_valid_parses_strictly_and_checks_the_schema(tmp_path: Path) -> None:
    valid = computer(kind="json_valid", field="structured")
    assert valid({"structured": '{"intent": "refund", "amount": 40}'}) == 1.0
    assert valid({"structured": "Sure! Here it is: {intent: refund}"}) == 0.0
    assert valid({"structured": "NaN"}) == 0.0  # Python's json accepts it, JSON does not
    assert valid({"structured": {"already": "parsed"}}) == 1.0
    schema = {"type": "object", "required": ["intent"], "properties": {"intent": {"enum": ["refund", "cancel"]}}}
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    for spec_schema in (schema, str(tmp_path / "schema.json")):
        checked = computer(kind="json_valid", schema=spec_schema)
        assert checked({"output": '{"intent": "refund"}'}) == 1.0
        assert checked({"output": '{"intent": "upgrade"}'}) == 0.0
        assert checked({"output": '["refund"]'}) == 0.0


def test_json_valid_fails_one_value_when_the_schema_cannot_be_resolved() -> None:
    remote = computer(kind="json_valid", schema={"$ref": "https://example.invalid/schema.json"})
    assert failure(remote, {"output": "{}"}) == "schema_error"


def test_a_skops_model_round_trip_scores_like_the_trained_pipeline(tmp_path: Path) -> None:
    model = train_model(tmp_path / "thumbs.skops")
    predicted = computer(kind="model", path=str(tmp_path / "thumbs.skops"))
    for text in [*POSITIVE, *NEGATIVE, "something else entirely"]:
        assert predicted({"output": text}) == pytest.approx(model.predict_proba([text])[0][1], abs=1e-12)
    assert predicted({"output": POSITIVE[0]}) > 0.5 > predicted({"output": NEGATIVE[0]})
    negative_class = computer(kind="model", path=str(tmp_path / "thumbs.skops"), positive_class=0)
    assert negative_class({"output": POSITIVE[0]}) == pytest.approx(1 - predicted({"output": POSITIVE[0]}))
    labels = computer(kind="model", path=str(tmp_path / "thumbs.skops"), output="predict")
    assert labels({"output": POSITIVE[0]}) == 1.0
    sha256 = hashlib.sha256((tmp_path / "thumbs.skops").read_bytes()).hexdigest()
    assert predicted.info() == {"version": sha256[:12], "sha256": sha256}  # no version configured: the hash
    assert failure(predicted, {"output": 3}) == "not_text"


def test_a_model_error_on_one_record_is_a_counted_failure(tmp_path: Path) -> None:
    predicted = computer(kind="model", path=str(train_model_path(tmp_path)))
    predicted.model.estimator.steps[-1][1].coef_ = None  # type: ignore[attr-defined]  # broken after loading
    assert failure(predicted, {"output": "hello"}) == "model_error"


def train_model_path(tmp_path: Path) -> Path:
    train_model(tmp_path / "m.skops")
    return tmp_path / "m.skops"


def parser(*proxies: dict[str, Any]) -> RecordParser:
    return RecordParser(config_from_mapping({"proxies": list(proxies),
                                             "audits": [{"name": "resolved", "field": "audit.resolved"}]},
                                            environ={}))


def test_a_failed_proxy_leaves_the_record_and_its_other_proxies() -> None:
    p = parser({"name": "thumbs_up", "field": "proxy.thumbs_up"},
               {"name": "words", "compute": {"kind": "length"}},
               {"name": "handle_seconds", "compute": {"kind": "duration", "start": "opened", "end": "closed"}})
    record = p.parse_object({"id": "c1", "output": "two words", "opened": 5, "closed": 1,
                             "proxy": {"thumbs_up": 1}, "audit": {"resolved": 1}})
    assert isinstance(record, Record)
    assert record.proxies == {"thumbs_up": 1.0, "words": 2.0}
    assert record.audits == {"resolved": 1.0}
    assert record.problems == (("handle_seconds", "negative_duration"),)


def test_a_late_label_has_nothing_to_compute_and_reports_nothing() -> None:
    p = parser({"name": "words", "compute": {"kind": "length"}})
    label = p.parse_object({"id": "c1", "audit": {"resolved": 0}})
    assert isinstance(label, Record) and not label.is_output and label.problems == ()
    output = p.parse_object({"id": "c2", "output": None, "audit": {"resolved": 0}, "other": 1})
    assert isinstance(output, Record) and output.problems == ()  # audits only: a label, not an output


def test_a_record_left_with_nothing_is_rejected_but_its_failures_still_count() -> None:
    p = parser({"name": "words", "compute": {"kind": "length"}})
    rejected = p.parse_object({"id": "c1", "output": 7})
    assert rejected == Rejection("no_metrics", problems=(("words", "not_text"),))


def test_field_proxies_build_no_computers() -> None:
    p = parser({"name": "thumbs_up", "field": "proxy.thumbs_up"})
    assert p.computers == {}


def test_computed_and_field_proxies_share_the_name_space() -> None:
    with pytest.raises(ConfigError) as err:
        config_from_mapping({"proxies": [{"name": "x", "field": "proxy.x"},
                                         {"name": "x", "compute": {"kind": "length"}}],
                             "audits": [{"name": "a", "field": "audit.a"}]}, environ={})
    assert err.value.problems == ["(top level): metric names must be unique across proxies and audits: x"]
