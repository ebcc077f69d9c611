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
from agent.store import Store


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
    before = pipeline.detectors[("thumbs_up", "resolved", "*")].state_dict()
    pipeline.store.close()
    again, _ = make(tmp_path)
    assert again.detectors[("thumbs_up", "resolved", "*")].state_dict() == before


def test_changed_detection_settings_start_a_fresh_reference_instead_of_being_ignored(tmp_path: Path) -> None:
    pipeline, clock = make(tmp_path)
    feed(pipeline, clock, 250)
    pipeline.checkpoint()
    old = pipeline.detectors[("thumbs_up", "resolved", "*")]
    assert isinstance(old, DecouplingDetector) and old.arl0 == 2 * 2 * 100_000
    pipeline.store.close()
    changed, _ = make(tmp_path, audits_between_false_alarms=1000, reference_pairs=50)
    new = changed.detectors[("thumbs_up", "resolved", "*")]
    assert isinstance(new, DecouplingDetector)
    assert (new.arl0, new.reference_pairs) == (2 * 2 * 1000, 50)
    assert any(e.get("event") == "settings_changed" for e in changed.store.recent_events())
    changed.store.close()
    placeholder, _ = make(tmp_path, detector="placeholder")  # switching the kind must not crash
    assert isinstance(placeholder.detectors[("thumbs_up", "resolved", "*")], PlaceholderDetector)


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
