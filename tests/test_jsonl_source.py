"""The JSONL follower on its own: appends, partial lines, rotation, truncation, restart, long lines."""

from __future__ import annotations

import os
from pathlib import Path

from agent.sources.jsonl import JsonlSource


def drain(source: JsonlSource) -> list[bytes]:
    """Read everything available, committing each batch as the pipeline would."""
    lines: list[bytes] = []
    while True:
        batch = source.read(1000)
        if not batch.items and batch.checkpoint is None and not batch.too_large:
            return lines
        lines.extend(i for i in batch.items if isinstance(i, bytes))
        source.commit(batch.checkpoint)
        source.last_checkpoint = batch.checkpoint  # type: ignore[attr-defined]


def test_follows_appends_and_waits_for_a_partial_last_line(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"id":"1"}\n{"id":')
    source = JsonlSource(path, 1024)
    assert drain(source) == [b'{"id":"1"}']
    with open(path, "ab") as f:
        f.write(b'"2"}\n')
    assert drain(source) == [b'{"id":"2"}']
    assert drain(source) == []


def test_rotation_reads_the_old_file_to_its_end_then_the_new_one(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"a\n")
    source = JsonlSource(path, 1024)
    assert drain(source) == [b"a"]
    with open(path, "ab") as f:
        f.write(b"b\n")
    os.rename(path, tmp_path / "out.jsonl.1")
    path.write_bytes(b"c\n")
    assert drain(source) == [b"b", b"c"]


def test_truncation_restarts_at_the_top(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"first-line-long\nsecond\n")
    source = JsonlSource(path, 1024)
    assert drain(source) == [b"first-line-long", b"second"]
    with open(path, "r+b") as f:
        f.truncate(0)
    with open(path, "ab") as f:
        f.write(b"x\n")
    assert drain(source) == [b"x"]


def test_rewritten_file_of_larger_size_is_noticed_by_its_first_bytes(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"old\n")
    source = JsonlSource(path, 1024)
    assert drain(source) == [b"old"]
    with open(path, "r+b") as f:  # same inode, rewritten in place and longer than before
        f.write(b"new\nmore\n")
    assert drain(source) == [b"new", b"more"]


def test_restart_from_checkpoint_neither_rereads_nor_skips(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"1\n2\n")
    source = JsonlSource(path, 1024)
    assert drain(source) == [b"1", b"2"]
    checkpoint = source.last_checkpoint  # type: ignore[attr-defined]
    source.close()
    with open(path, "ab") as f:
        f.write(b"3\n")
    restarted = JsonlSource(path, 1024, checkpoint=checkpoint)
    assert drain(restarted) == [b"3"]


def test_restart_after_rotation_finishes_the_rotated_file(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"1\n")
    source = JsonlSource(path, 1024)
    drain(source)
    checkpoint = source.last_checkpoint  # type: ignore[attr-defined]
    source.close()
    with open(path, "ab") as f:
        f.write(b"2\n")
    os.rename(path, tmp_path / "out.jsonl.1")
    path.write_bytes(b"3\n")
    restarted = JsonlSource(path, 1024, checkpoint=checkpoint)
    assert drain(restarted) == [b"2", b"3"]


def test_over_long_lines_are_counted_once_and_skipped(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"ok\n" + b"x" * 5000)
    source = JsonlSource(path, 1024)
    first = source.read(100)
    assert first.items == [b"ok"] and first.too_large == 1
    source.commit(first.checkpoint)
    with open(path, "ab") as f:
        f.write(b"y" * 10 + b"\nafter\n")
    second = source.read(100)
    assert second.items == [b"after"] and second.too_large == 0


def test_missing_file_is_down_until_it_appears(tmp_path: Path) -> None:
    path = tmp_path / "later.jsonl"
    source = JsonlSource(path, 1024)
    assert drain(source) == [] and not source.up
    path.write_bytes(b"1\n")
    assert drain(source) == [b"1"] and source.up


def test_a_batch_that_fills_up_mid_chunk_loses_nothing(tmp_path: Path) -> None:
    """A backlog read in batches smaller than one read chunk: every line, in order, exactly once."""
    path = tmp_path / "backlog.jsonl"
    path.write_bytes(b"".join(b'{"id":"%d"}\n' % i for i in range(30000)))
    source = JsonlSource(path, 65536)
    seen: list[bytes] = []
    while True:
        batch = source.read(5000)
        if not batch.items and batch.checkpoint is None:
            break
        assert batch.too_large == 0
        seen.extend(i for i in batch.items if isinstance(i, bytes))
        source.commit(batch.checkpoint)
    assert seen == [b'{"id":"%d"}' % i for i in range(30000)]
