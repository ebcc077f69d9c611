"""The pipeline in-process: restarts resume exactly, and changed detection settings are never ignored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from support import BASE_CONFIG

from agent.clock import VirtualClock
from agent.config import config_from_mapping
from agent.detect.decoupling import DecouplingDetector
from agent.detect.placeholder import PlaceholderDetector
from agent.pipeline import Pipeline
from agent.store import JoinBatch, Store


def feed(pipeline: Pipeline, clock: VirtualClock, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        clock.advance_to(1_790_000_000.0 + i)
        pipeline.ingest_items("test", [{"id": f"r{i}", "ts": clock.now(), "labels": {"segment": "billing"},
                                        "proxy": {"thumbs_up": i % 2, "resolution_seconds": 60 + i % 7},
                                        "audit": {"resolved": i % 2}}])
    pipeline.detect()


def make(tmp_path: Path, **detection: Any) -> tuple[Pipeline, VirtualClock]:
    config = config_from_mapping({**BASE_CONFIG, "detection": detection}, {})
    clock = VirtualClock(1_790_000_000.0)
    return Pipeline(config, Store(tmp_path), clock), clock


def test_a_restart_resumes_the_detectors_where_the_checkpoint_left_them(tmp_path: Path) -> None:
    pipeline, clock = make(tmp_path)
    feed(pipeline, clock, 250)
    pipeline.checkpoint()
    before = pipeline.bank.detectors[("thumbs_up", "resolved", "*")].state_dict()
    pipeline.store.close()
    again, _ = make(tmp_path)
    assert again.bank.detectors[("thumbs_up", "resolved", "*")].state_dict() == before


def test_changed_detection_settings_start_a_fresh_reference_instead_of_being_ignored(tmp_path: Path) -> None:
    pipeline, clock = make(tmp_path)
    feed(pipeline, clock, 250)
    pipeline.checkpoint()
    old = pipeline.bank.detectors[("thumbs_up", "resolved", "*")]
    assert isinstance(old, DecouplingDetector) and old.arl0 == 2 * 2 * 100_000
    pipeline.store.close()
    changed, _ = make(tmp_path, audits_between_false_alarms=1000, reference_pairs=50)
    new = changed.bank.detectors[("thumbs_up", "resolved", "*")]
    assert isinstance(new, DecouplingDetector)
    assert (new.arl0, new.reference_pairs) == (2 * 2 * 1000, 50)
    assert any(e.get("event") == "settings_changed" for e in changed.store.recent_events())
    changed.store.close()
    placeholder, _ = make(tmp_path, detector="placeholder")  # switching the kind must not crash
    assert isinstance(placeholder.bank.detectors[("thumbs_up", "resolved", "*")], PlaceholderDetector)


def test_pushed_objects_obey_the_record_size_limit(tmp_path: Path) -> None:
    config = config_from_mapping({**BASE_CONFIG, "limits": {"max_record_bytes": 1024}}, {})
    pipeline = Pipeline(config, Store(tmp_path), VirtualClock(1_790_000_000.0))
    result = pipeline.ingest_items("http_push", [{"id": "big", "output": "y" * 5000, "proxy": {"thumbs_up": 1}},
                                                 {"id": "ok", "proxy": {"thumbs_up": 1}}])
    assert result.accepted == 1 and result.rejected == {"too_large": 1}


def test_a_redelivered_label_is_a_duplicate(tmp_path: Path) -> None:
    pipeline, clock = make(tmp_path)
    pipeline.ingest_items("t", [{"id": "a", "ts": clock.now(), "proxy": {"thumbs_up": 1}}])
    first = pipeline.ingest_items("t", [{"id": "a", "audit": {"resolved": 1}}])
    again = pipeline.ingest_items("t", [{"id": "a", "audit": {"resolved": 1}}])
    assert first.joined == 1 and first.accepted == 1
    assert again.accepted == 0 and again.rejected == {"duplicate": 1}


def test_an_output_redelivered_after_its_ttl_is_a_duplicate_and_never_fed_again(tmp_path: Path) -> None:
    config = config_from_mapping({**BASE_CONFIG, "retention": {"label_ttl_seconds": 100}}, {})
    clock = VirtualClock(1_790_000_000.0)
    pipeline = Pipeline(config, Store(tmp_path), clock)
    output = {"id": "o", "ts": clock.now(), "proxy": {"thumbs_up": 1}}
    assert pipeline.ingest_items("t", [output]).accepted == 1
    pipeline.detect()
    pipeline.checkpoint()  # the detectors have seen it: retention may drop it
    clock.advance_to(1_790_000_150.0)
    assert pipeline.retention()["output"] == 1 and pipeline.store.get_output("o") is None
    seen = pipeline.store.max_seq("outputs")
    pipeline.store.close()
    pipeline = Pipeline(config, Store(tmp_path), clock)  # a restart in between changes nothing
    again = pipeline.ingest_items("t", [output, {**output, "audit": {"resolved": 1}}])
    assert again.accepted == 0 and again.rejected == {"duplicate": 2}
    assert pipeline.counters.value("records_rejected_total", reason="duplicate") == 2
    assert pipeline.store.max_seq("outputs") == seen  # nothing new for the detectors
    clock.advance_to(1_790_000_200.0)  # twice the TTL after ingest: the id is forgotten
    pipeline.retention()
    assert pipeline.ingest_items("t", [output]).accepted == 1


def test_segments_beyond_the_maximum_fold_into_other_and_stay_folded_after_a_restart(tmp_path: Path) -> None:
    config = config_from_mapping({**BASE_CONFIG, "segments": {"field": "labels.segment", "max_values": 2}}, {})
    pipeline = Pipeline(config, Store(tmp_path), VirtualClock(1_790_000_000.0))

    def push(rid: str, segment: str) -> None:
        pipeline.ingest_items("t", [{"id": rid, "labels": {"segment": segment}, "proxy": {"thumbs_up": 1},
                                     "audit": {"resolved": 1}}])

    for i, segment in enumerate(["a", "b", "c", "d", "a"]):
        push(f"r{i}", segment)
    pipeline.detect()
    counts = pipeline.view.store_stats().pair_counts
    assert {k[2] for k in counts if k[:2] == ("thumbs_up", "resolved")} == {"*", "a", "b", "other"}
    assert counts[("thumbs_up", "resolved", "other")] == 2
    pipeline.store.close()
    again = Pipeline(config, Store(tmp_path), VirtualClock(1_790_000_100.0))
    again.ingest_items("t", [{"id": "late", "labels": {"segment": "e"}, "proxy": {"thumbs_up": 1},
                              "audit": {"resolved": 0}}])
    again.ingest_items("t", [{"id": "b2", "labels": {"segment": "b"}, "proxy": {"thumbs_up": 1},
                              "audit": {"resolved": 0}}])
    again.detect()
    counts = again.view.store_stats().pair_counts
    assert counts[("thumbs_up", "resolved", "other")] == 3 and counts[("thumbs_up", "resolved", "b")] == 2


def test_when_two_proxies_alarm_against_one_audit_the_one_that_rose_is_ranked_first() -> None:
    """A gamed proxy rises while the audit falls; a second proxy stays put and only sees the drop."""
    import numpy as np

    config = config_from_mapping({
        "proxies": [{"name": "gamed", "field": "proxy.gamed"}, {"name": "steady", "field": "proxy.steady"}],
        "audits": [{"name": "rubric", "field": "audit.rubric"}],
        "detection": {"reference_pairs": 100}}, {})
    clock = VirtualClock(1_790_000_000.0)
    pipeline = Pipeline(config, Store(":memory:"), clock)
    rng = np.random.default_rng(3)
    events: list[dict[str, Any]] = []
    for i in range(1500):
        clock.advance_to(1_790_000_000.0 + i)
        quality = rng.normal()
        after = i >= 300
        record = {"id": f"r{i}", "ts": clock.now(),
                  "proxy": {"gamed": quality + rng.normal(0, 0.5) + (2.5 if after else 0.0),
                            "steady": quality + rng.normal(0, 0.5)},
                  "audit": {"rubric": quality + rng.normal(0, 0.5) - (0.8 if after else 0.0)}}
        pipeline.ingest_items("test", [record])
        if i % 10 == 0:
            events += pipeline.detect()
    alarms = {e["proxy"]: e for e in events if e["state"] == "alarm"}
    assert set(alarms) == {"gamed", "steady"}
    ranked = [e for e in alarms.values() if "rank" in e]
    assert ranked, "the second alarm against the same audit must carry a rank"
    assert all((e["rank"] == 1) == (e["proxy"] == "gamed") for e in ranked)
    assert all(e["ranked_of"] == 2 for e in ranked)
    pipeline.store.close()


POISON = {  # each once stopped a whole stream: the batch failed on every retry, valid records included
    b'{"id": "b\\ud800", "proxy": {"thumbs_up": 1}}': "bad_id",  # a lone surrogate: JSON yes, UTF-8 no
    b'{"id": "s", "labels": {"segment": "x\\udc00"}, "proxy": {"thumbs_up": 1}}': "bad_segment",
    b'{"id": "big", "proxy": {"thumbs_up": 1' + b"0" * 400 + b"}}": "bad_metric",  # 10**400: no float
    b'{"id": "long", "proxy": {"thumbs_up": ' + b"1" * 5000 + b"}}": "not_json",  # over 4,300 digits
}


def test_a_poison_record_is_rejected_alone_and_the_rest_of_its_batch_is_stored(tmp_path: Path) -> None:
    pipeline, clock = make(tmp_path)
    good = [f'{{"id": "ok{i}", "ts": {clock.now()}, "proxy": {{"thumbs_up": 1}}}}'.encode() for i in range(3)]
    result = pipeline.store_items("jsonl", [good[0], *POISON, good[1], good[2]], offset={"offset": 99})
    assert result.accepted == 3
    assert result.rejected == {reason: 1 for reason in POISON.values()}
    assert pipeline.store.get_offset("jsonl") == {"offset": 99}  # the source moves past them
    for reason in POISON.values():
        assert pipeline.counters.value("records_rejected_total", reason=reason) == 1
    pipeline.store.close()


class RefusingBatch(JoinBatch):
    def output(self, rid: str, *args: Any, **kwargs: Any) -> Any:
        if rid == "refused":
            raise ValueError("injected: this row cannot be stored")
        return super().output(rid, *args, **kwargs)


class RefusingStore(Store):
    """A real store with one injected fault: it refuses to store one id (what no known record does)."""

    def join_batch(self, ids: Any) -> JoinBatch:
        with self.lock:
            return RefusingBatch(self.conn, ids)


def test_a_record_the_store_refuses_is_isolated_and_counted_unstorable(tmp_path: Path) -> None:
    config = config_from_mapping(BASE_CONFIG, {})
    clock = VirtualClock(1_790_000_000.0)
    pipeline = Pipeline(config, RefusingStore(tmp_path), clock)
    items = [{"id": rid, "ts": clock.now(), "proxy": {"thumbs_up": 1}} for rid in ("a", "refused", "b")]
    result = pipeline.store_items("http_push", items, offset={"cursor": 3})
    assert (result.accepted, result.rejected) == (2, {"unstorable": 1})
    assert pipeline.store.get_output("a") is not None and pipeline.store.get_output("b") is not None
    assert pipeline.store.get_offset("http_push") == {"cursor": 3}
    assert pipeline.counters.value("records_total", source="http_push") == 3
    assert pipeline.counters.value("records_rejected_total", reason="unstorable") == 1
    pipeline.store.close()


def test_a_label_and_its_output_in_one_batch_join_in_either_order(tmp_path: Path) -> None:
    pipeline, clock = make(tmp_path)
    now = clock.now()
    output = {"id": "o1", "ts": now, "proxy": {"thumbs_up": 1}}
    label = {"id": "o1", "ts": now, "audit": {"resolved": 1}}
    first = pipeline.ingest_items("t", [output, label])  # the label finds the output stored moments before
    second = pipeline.ingest_items("t", [{**label, "id": "o2"}, {**output, "id": "o2"}])  # early label, then output
    assert (first.accepted, first.joined, second.accepted, second.joined) == (2, 1, 2, 1)
    counts = pipeline.view.store_stats()
    assert counts.pair_counts[("thumbs_up", "resolved", "*")] == 2 and counts.pending_labels == 0
    again = pipeline.ingest_items("t", [output, {**output, "id": "o3"}, label])  # re-deliveries in a batch
    assert again.accepted == 1 and again.rejected == {"duplicate": 2}
    pipeline.store.close()
