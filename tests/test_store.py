"""The SQLite store: WAL, recorded migrations, the label join's corner cases, bounded retention."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agent.store import MIGRATIONS, OutputRow, Store


def test_a_directory_gets_a_wal_database_with_every_migration_recorded(tmp_path: Path) -> None:
    store = Store(tmp_path)
    assert store.schema_version == len(MIGRATIONS)
    store.close()
    conn = sqlite3.connect(tmp_path / "goodhart.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


def test_reopening_does_not_migrate_twice_and_a_newer_schema_is_refused(tmp_path: Path) -> None:
    Store(tmp_path).close()
    again = Store(tmp_path)
    assert again.schema_version == len(MIGRATIONS)
    again.conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    again.close()
    with pytest.raises(RuntimeError, match="newer than this agent understands"):
        Store(tmp_path)


def test_a_database_of_an_older_schema_is_migrated_and_keeps_its_data(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "goodhart.db", isolation_level=None)
    for version, script in enumerate(MIGRATIONS[:2], start=1):
        conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version={version};\nCOMMIT;")
    conn.execute("INSERT INTO outputs(id, ts, proxies, expires_at) VALUES ('old', 0, '{}', 1e9)")
    conn.close()
    store = Store(tmp_path)
    assert store.schema_version == len(MIGRATIONS)
    assert store.get_output("old") is not None
    assert store.insert_output("old", 0.0, None, {}, expires_at=1e9) is None


def test_an_output_dropped_by_retention_stays_a_duplicate_for_another_ttl() -> None:
    """Ids of dropped outputs are remembered until ``remember_ids_seconds`` past the output's expiry."""
    store = Store(":memory:")
    assert store.insert_output("o", 0.0, None, {"p": 1.0}, expires_at=10.0) is not None
    for i in range(3):
        assert store.insert_output(f"w{i}", 1.0, None, {"p": 1.0}, expires_at=1e9 + i) is not None
    store.set_cursor("detect.outputs", 4)

    def expire(now: float) -> dict[str, int]:
        return store.expire(now=now, pairs_min_ts=-1.0, max_pending=100 if now < 15 else 1, max_pairs=100,
                            max_events=10, remember_ids_seconds=10.0)

    assert expire(12.0)["output"] == 1 and store.get_output("o") is None
    assert store.insert_output("o", 0.0, None, {"p": 1.0}, expires_at=22.0) is None  # re-delivered: refused
    assert expire(15.0)["output"] == 2  # w0, w1: dropped for max_pending, remembered just the same
    assert store.insert_output("w0", 1.0, None, {"p": 1.0}, expires_at=25.0) is None
    expire(19.9)
    assert store.insert_output("o", 0.0, None, {"p": 1.0}, expires_at=29.9) is None
    expire(20.0)  # twice the TTL after ingest: forgotten, so the table stays bounded
    assert store.conn.execute("SELECT id FROM seen_ids ORDER BY id").fetchall() == [("w0",), ("w1",)]
    assert store.insert_output("o", 0.0, None, {"p": 1.0}, expires_at=30.0) is not None
    store.expire(now=20.0, pairs_min_ts=-1.0, max_pending=100, max_pairs=100, max_events=10, max_seen_ids=1)
    assert store.conn.execute("SELECT id FROM seen_ids").fetchall() == [("w1",)]  # bounded: the newest stays


def test_early_labels_merge_and_the_first_label_of_a_pair_wins() -> None:
    store = Store(":memory:")
    store.put_early_label("a", 1.0, {"resolved": 1.0}, 1.0, 100.0)
    store.put_early_label("a", 2.0, {"csat": 4.0}, 1.0, 100.0)
    assert store.take_early_label("a") == ({"csat": 4.0, "resolved": 1.0}, 1.0)
    assert store.take_early_label("a") is None
    output = store.insert_output("b", 1.0, None, {"thumbs_up": 1.0}, 100.0)
    assert output is not None
    assert store.insert_pairs(output, {"resolved": 0.0}, 1.0) == 1
    assert store.insert_pairs(output, {"resolved": 1.0}, 1.0) == 0
    assert [p.audit_value for p in store.pairs_since(0)] == [0.0]


def test_expiry_drops_old_state_but_never_pairs_the_detectors_have_not_seen() -> None:
    store = Store(":memory:")
    for i in range(5):
        out = store.insert_output(f"o{i}", float(i), "s", {"p": 1.0}, expires_at=10.0 + i)
        assert out is not None
        store.insert_pairs(out, {"a": 1.0}, 1.0)
    store.insert_output("waiting", 0.0, None, {"p": 1.0}, expires_at=10.0)
    store.put_early_label("orphan", 0.0, {"a": 1.0}, 1.0, expires_at=10.0)
    store.set_cursor("detect.pairs", 3)  # the detectors have seen pairs 1..3
    store.set_cursor("detect.outputs", 6)  # and every output
    dropped = store.expire(now=12.0, pairs_min_ts=100.0, max_pending=100, max_pairs=100, max_events=10)
    assert dropped == {"output": 1, "label": 1, "pair": 3}
    assert [p.seq for p in store.pairs_since(0)] == [4, 5]
    assert store.pending_counts() == (0, 0)


def test_max_pending_counts_only_outputs_still_waiting_and_spares_unseen_ones() -> None:
    store = Store(":memory:")
    for i in range(10):  # ten labelled outputs do not count against max_pending
        out = store.insert_output(f"l{i}", float(i), None, {"p": 1.0}, expires_at=1e9)
        assert out is not None
        store.insert_pairs(out, {"a": 1.0}, 1.0)
    for i in range(5):
        store.insert_output(f"w{i}", float(i), None, {"p": 1.0}, expires_at=1e9)
    store.set_cursor("detect.outputs", 13)  # w3 and w4 have not reached the detectors yet
    dropped = store.expire(now=0.0, pairs_min_ts=-1.0, max_pending=1, max_pairs=100, max_events=10)
    assert dropped["output"] == 3  # w0, w1, w2: beyond the newest waiting one, and already fed
    assert store.pending_counts() == (2, 0)
    assert store.get_output("l0") is not None


def test_rows_just_stored_are_read_from_memory_exactly_as_sqlite_holds_them() -> None:
    """The detect step reads a batch's rows from the feed logs; clearing them makes SQLite answer."""
    store = Store(":memory:")
    with store.transaction():
        batch = store.join_batch(["c", "a", "c", "a", "a"])
        assert batch.label("c", 1.0, {"resolved": 1.0}, 0.5, 100.0).waiting  # before its output
        assert batch.output("a", 1.0, "s", {"q": 2.5, "p": 1}, {}, 100.0).output is not None
        assert batch.output("c", 2.0, None, {"p": 3.0}, {"csat": 4.0}, 100.0).early_label
        assert batch.label("a", 3.0, {"resolved": 0.0}, 1.0, 100.0).joined
        assert batch.output("a", 1.0, "s", {"p": 1.0}, {}, 100.0).duplicate
        store.flush_batch(batch)
    held = store.outputs_since(0), store.pairs_since(0)
    assert [(o.seq, o.id) for o in held[0]] == [(1, "a"), (2, "c")]
    assert [(p.seq, p.proxy, p.audit, p.weight) for p in held[1]] == [
        (1, "p", "csat", 0.5), (2, "p", "resolved", 0.5), (3, "p", "resolved", 1.0), (4, "q", "resolved", 1.0)]
    for feed in store.feed_logs:
        feed.clear()
    assert (store.outputs_since(0), store.pairs_since(0)) == held
    assert store.pending_counts() == (0, 0)


def test_a_rolled_back_batch_leaves_no_rows_in_memory_and_numbering_goes_on_as_sqlite_would() -> None:
    store = Store(":memory:")
    assert store.insert_output("a", 1.0, None, {"p": 1.0}, 100.0) is not None
    with pytest.raises(RuntimeError), store.transaction():
        batch = store.join_batch(["b"])
        batch.output("b", 2.0, None, {"p": 1.0}, {}, 100.0)
        store.flush_batch(batch)
        raise RuntimeError("the batch fails after its rows were written")
    assert [o.id for o in store.outputs_since(0)] == ["a"]
    store.conn.execute("DELETE FROM outputs")  # AUTOINCREMENT never reuses a number, nor does a batch
    assert store.insert_output("c", 3.0, None, {"p": 1.0}, 100.0) == OutputRow(2, "c", 3.0, None, {"p": 1.0})
    assert store.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outputs'").fetchone()[0] == 2


def test_a_large_batch_stores_the_same_rows_as_records_stored_one_at_a_time() -> None:
    """Outputs and audited outputs are written many rows to a statement: a batch of 250 outputs
    (two whole statements and a remainder) and their labels leaves exactly the rows, numbers and
    stored metrics that storing each record on its own leaves."""
    def store_records(store: Store, numbers: list[int]) -> None:
        batch = store.join_batch([f"o{n - n % 3}" for n in numbers])
        for n in numbers:
            rid = f"o{n - n % 3}"  # n % 3 == 2: a label for the output two records before
            if n % 3 == 2:
                batch.label(rid, 10.0 + n, {"resolved": float(n % 2)}, 1.0, 900.0)
            elif n % 3 == 0:
                batch.output(rid, 1.0 + n, ["s", None][n % 2], {"q": n / 7, "p": 1.0},
                             {"csat": 0.1} if n % 5 == 0 else {}, 900.0)
            else:  # an early label for the next output
                batch.label(f"o{n + 2}", 5.0 + n, {"csat": n / 3}, 0.5, 900.0)
        store.flush_batch(batch)

    numbers = list(range(750))
    together, alone = Store(":memory:"), Store(":memory:")
    with together.transaction():
        store_records(together, numbers)
    for n in numbers:
        with alone.transaction():
            store_records(alone, [n])
    for table in ("outputs", "pairs", "early_labels"):
        rows = [store.conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall() for store in (together, alone)]
        assert rows[0] == rows[1]
    assert len(together.conn.execute("SELECT * FROM outputs").fetchall()) == 250
    assert len(together.conn.execute("SELECT * FROM pairs").fetchall()) > 500
