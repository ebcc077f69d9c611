"""A forwarder's buffer (agent/store/forward.py): order, batches bounded by records and bytes, the ack,
the bounds that drop (counted by the caller) and never the batch in flight, totals that survive a reopen."""

from __future__ import annotations

from pathlib import Path

from agent.store import Store


def body(i: int, size: int = 100) -> bytes:
    return f'{{"id":"r{i}"}}'.encode().ljust(size, b" ")


def filled(path: Path, n: int, now: float = 1000.0, size: int = 100) -> Store:
    store = Store(path)
    store.buffer_records([body(i, size) for i in range(n)], now)
    return store


def test_batches_are_the_oldest_records_bounded_by_count_and_bytes(tmp_path: Path) -> None:
    store = filled(tmp_path, 10)
    by_count = store.buffered_batch(4, 10_000)
    assert by_count is not None and by_count.bodies == [body(i) for i in range(4)]
    by_bytes = store.buffered_batch(100, 350)
    assert by_bytes is not None and len(by_bytes.bodies) == 3 and by_bytes.size == 300
    one_too_big = store.buffered_batch(100, 10)
    assert one_too_big is not None and len(one_too_big.bodies) == 1  # always at least one record


def test_an_acked_batch_leaves_and_the_totals_follow(tmp_path: Path) -> None:
    store = filled(tmp_path, 10)
    batch = store.buffered_batch(4, 10_000)
    assert batch is not None
    assert store.ack_buffered(batch.first, batch.last) == 4
    stats = store.buffer_stats()
    assert (stats.records, stats.bytes) == (6, 600)
    following = store.buffered_batch(100, 10_000)
    assert following is not None and following.bodies[0] == body(4)
    assert store.ack_buffered(batch.first, batch.last) == 0  # acking twice removes nothing more


def test_beyond_max_bytes_the_oldest_go_first(tmp_path: Path) -> None:
    store = filled(tmp_path, 10)
    dropped = store.evict_buffered(max_bytes=450, min_buffered_at=0.0)
    assert dropped == {"too_old": 0, "buffer_full": 6}
    batch = store.buffered_batch(100, 10_000)
    assert batch is not None and batch.bodies == [body(i) for i in range(6, 10)]
    assert store.buffer_stats().bytes == 400


def test_the_batch_in_flight_is_never_evicted(tmp_path: Path) -> None:
    store = filled(tmp_path, 10)
    in_flight = store.buffered_batch(3, 10_000)
    assert in_flight is not None
    dropped = store.evict_buffered(max_bytes=450, min_buffered_at=2000.0, keep_through=in_flight.last)
    assert dropped["too_old"] == 7 and dropped["buffer_full"] == 0
    assert store.ack_buffered(in_flight.first, in_flight.last) == 3  # delivered, not dropped
    assert store.buffer_stats().records == 0


def test_records_older_than_the_age_bound_are_dropped(tmp_path: Path) -> None:
    store = filled(tmp_path, 5, now=1000.0)
    store.buffer_records([body(99)], 5000.0)
    assert store.evict_buffered(max_bytes=1 << 20, min_buffered_at=2000.0) == {"too_old": 5, "buffer_full": 0}
    stats = store.buffer_stats()
    assert (stats.records, stats.oldest_buffered_at) == (1, 5000.0)


def test_buffer_and_totals_survive_a_reopen_and_a_rolled_back_write_leaves_no_trace(tmp_path: Path) -> None:
    filled(tmp_path, 7).close()
    store = Store(tmp_path)
    try:
        with store.transaction():
            store.buffer_records([body(100)], 1.0)
            raise RuntimeError("crash inside the transaction")
    except RuntimeError:
        pass
    stats = store.buffer_stats()
    assert (stats.records, stats.bytes, stats.oldest_buffered_at) == (7, 700, 1000.0)


def test_an_empty_buffer_has_no_batch_and_no_age(tmp_path: Path) -> None:
    store = Store(tmp_path)
    assert store.buffered_batch(10, 1000) is None
    assert store.buffer_stats().oldest_buffered_at is None
