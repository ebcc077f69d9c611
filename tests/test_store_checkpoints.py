"""Detector checkpoints keep the window's ring in chunks and write only what changed; a detector
restored from any checkpoint goes on exactly like one that never stopped, and a state dir written
before the chunks (the whole window as JSON, schema 7) keeps working after the upgrade."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_pipeline import feed, make

from agent.core import Ring
from agent.detect.base import PairObservation
from agent.detect.decoupling import DecouplingDetector
from agent.detect.pooled import PooledDetector
from agent.store import MIGRATIONS, Store
from agent.store.detectors import CHUNK_SLOTS, _Mark, changed_chunks

WINDOW = 2 * CHUNK_SLOTS + 500  # three chunks, the last one short
KEY = '["thumbs_up", "resolved", "*"]'


def pairs(rng: np.random.Generator, start: int, n: int) -> list[PairObservation]:
    p = rng.normal(size=n)
    a = 0.6 * p + rng.normal(scale=0.8, size=n) - (0.5 if start > 4000 else 0.0)
    return [PairObservation(float(start + i), float(p[i]), float(a[i]), 1.0 + (i % 3)) for i in range(n)]


def restored(path: Path) -> DecouplingDetector:
    """A detector rebuilt from the checkpoint in ``path`` by a fresh process's store."""
    store = Store(path)
    try:
        state = store.load_detectors()[KEY]
    finally:
        store.close()
    again = DecouplingDetector(arl0=2.0)
    again.load_state(state["detector"])
    return again


def save(store: Store, det: DecouplingDetector) -> int:
    """Checkpoint ``det``; returns how many chunks the checkpoint wrote."""
    written: list[str] = []
    store.conn.set_trace_callback(lambda sql: written.append(sql) if "INTO detector_chunks" in sql else None)
    store.save_detectors({KEY: {"detector": det.checkpoint_state(), "alarm": {}, "settings": {}}})
    store.conn.set_trace_callback(None)
    return len(written)


def test_a_detector_restored_from_any_checkpoint_goes_on_exactly_like_one_that_never_stopped(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    det = DecouplingDetector(arl0=50_000, window=WINDOW)
    store = Store(tmp_path)
    t, chunks = 0, []
    # uneven steps: warm-up, part of a chunk, across chunk borders, around the ring, more than the ring
    for step in (150, 300, 700, 1500, 2000, 10, 0, 2600, 3000):
        if step == 2600:
            det.rebaseline(float(t))  # a new, empty ring: every chunk is written again
        for obs in pairs(rng, t, step):
            det.observe_pair(obs)
        t += step
        chunks.append(save(store, det))
        again = restored(tmp_path)
        assert again.state_dict() == det.state_dict()
        assert again.verdict(float(t)) == det.verdict(float(t))
    # The first checkpoint of a key writes the whole ring (3 chunks); then the reference is fitted at
    # 200 pairs and slots [0, 250), [250, 950), [950, 2450), [2450, 2548) + [0, 1902) (around the
    # ring), [1902, 1912), none; after the rebaseline, and after more than a ring, all of it.
    assert chunks == [3, 1, 1, 3, 3, 1, 0, 3, 3]
    store.close()
    again = restored(tmp_path)
    for obs in pairs(rng, t, 1200):  # both go on from here with the same pairs
        det.observe_pair(obs)
        again.observe_pair(obs)
        assert again.verdict(obs.ts) == det.verdict(obs.ts)
    assert again.state_dict() == det.state_dict()


def test_a_rolled_back_checkpoint_is_redone_in_full(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    det = DecouplingDetector(arl0=50_000, window=WINDOW)
    for obs in pairs(rng, 0, 3000):
        det.observe_pair(obs)
    store = Store(tmp_path)
    save(store, det)
    for obs in pairs(rng, 3000, 1500):
        det.observe_pair(obs)
    with pytest.raises(RuntimeError), store.transaction():
        save(store, det)
        raise RuntimeError("the checkpoint's transaction fails after the chunks were written")
    for obs in pairs(rng, 4500, 10):
        det.observe_pair(obs)
    save(store, det)  # must rewrite what the rolled-back one wrote, not only the last 10 slots
    store.close()
    assert restored(tmp_path).state_dict() == det.state_dict()


def test_changed_chunks_follow_the_slots_written_since_the_mark() -> None:
    size = 3 * CHUNK_SLOTS
    ring = Ring(np.zeros((4, size)), pos=CHUNK_SLOTS + 10, count=size, written=5000)
    mark = _Mark(4, size, pos=CHUNK_SLOTS - 5, count=size, written=5000 - 15)
    assert changed_chunks(mark, ring) == [0, 1]
    wrapped = Ring(ring.buf, pos=10, count=size, written=5000)
    assert changed_chunks(_Mark(4, size, size - 5, size, 5000 - 15), wrapped) == [0, 2]
    assert changed_chunks(_Mark(4, size, 10, size, 5000), wrapped) == []
    assert changed_chunks(None, wrapped) is None
    assert changed_chunks(_Mark(4, size, 0, 0, 0), Ring(ring.buf, pos=7, count=7, written=9)) is None  # reset
    assert changed_chunks(_Mark(4, size, 10, size, 5000 - size), wrapped) is None  # the whole ring


def downgrade_to_schema_7(path: Path) -> None:
    """Rewrite a store as the agent before chunked checkpoints left it: each detector's whole state
    as JSON (``state_dict``, the window as lists), and schema 7."""
    store = Store(path)
    rows = {}
    for key, state in store.load_detectors().items():
        detector = PooledDetector(arl0=2.0)  # the class the factory builds (its pool in the state)
        detector.load_state(state["detector"])
        rows[key] = json.dumps({**state, "detector": detector.state_dict()}, sort_keys=True)
    store.close()
    conn = sqlite3.connect(path / "goodhart.db", isolation_level=None)
    conn.executescript("""BEGIN;
        DROP TRIGGER seen_ids_added; DROP TRIGGER seen_ids_removed; DROP TABLE seen_ids_total;
        DROP TABLE detector_chunks; DROP INDEX outputs_pending; DROP INDEX early_labels_ts; DROP INDEX verdicts_ts;
        PRAGMA user_version = 7; COMMIT;""")
    conn.executemany("UPDATE detectors SET state = ? WHERE key = ?", [(v, k) for k, v in rows.items()])
    assert "window" in json.loads(conn.execute("SELECT state FROM detectors").fetchone()[0])["detector"]
    conn.close()


def states(pipeline: Any) -> dict[Any, dict[str, Any]]:
    return {key: det.state_dict() for key, det in pipeline.bank.detectors.items()}


def test_a_state_dir_with_whole_json_checkpoints_keeps_working_after_the_upgrade(tmp_path: Path) -> None:
    assert len(MIGRATIONS) == 8  # schema 7 + this change; a later migration extends the downgrade above
    for name in ("steady", "old"):
        (tmp_path / name).mkdir()
    steady, steady_clock = make(tmp_path / "steady", window=300)
    feed(steady, steady_clock, 400)
    upgraded, clock = make(tmp_path / "old", window=300)
    feed(upgraded, clock, 400)
    upgraded.checkpoint()
    upgraded.store.close()
    downgrade_to_schema_7(tmp_path / "old")
    upgraded, clock = make(tmp_path / "old", window=300)  # migrates to 8 and loads the JSON windows
    assert upgraded.store.schema_version == len(MIGRATIONS)
    assert states(upgraded) == states(steady)
    for pipeline, c in ((steady, steady_clock), (upgraded, clock)):
        feed(pipeline, c, 150, start=400)
    assert states(upgraded) == states(steady)
    upgraded.checkpoint()  # now in chunks
    upgraded.store.close()
    again, clock = make(tmp_path / "old", window=300)
    assert states(again) == states(steady)
    assert again.store.conn.execute("SELECT count(*) FROM detector_chunks").fetchone()[0] > 0
    assert [e for e in again.store.recent_events() if e.get("event") == "settings_changed"] == []
    again.store.close()
    steady.store.close()
