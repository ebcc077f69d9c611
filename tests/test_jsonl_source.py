"""The JSONL follower on its own: appends, partial lines, rotation, truncation, restart, long lines."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from agent.config import config_from_mapping
from agent.records import Record, RecordParser, Rejection
from agent.sources.jsonl import JsonlSource


class FakeMonotonic:
    """A monotonic clock the test moves by hand, for the rotation grace period."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def drain(source: JsonlSource) -> list[bytes]:
    """Read everything available, committing each batch as the pipeline would."""
    lines: list[bytes] = []
    while True:
        batch = source.read(1000)
        if not batch.items and batch.offset is None and not batch.too_large:
            return lines
        lines.extend(i for i in batch.items if isinstance(i, bytes))
        source.commit(batch.offset)
        source.last_offset = batch.offset  # type: ignore[attr-defined]


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
    clock = FakeMonotonic()
    source = JsonlSource(path, 1024, monotonic=clock)
    assert drain(source) == [b"a"]
    with open(path, "ab") as f:
        f.write(b"b\n")
    os.rename(path, tmp_path / "out.jsonl.1")
    path.write_bytes(b"c\n")
    assert drain(source) == [b"b"]  # the new file waits out the grace period
    clock.now += 2.0
    assert drain(source) == [b"c"]


def test_without_a_grace_period_rotation_switches_at_the_first_empty_read(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"a\n")
    source = JsonlSource(path, 1024, rotation_grace_seconds=0.0)
    assert drain(source) == [b"a"]
    os.rename(path, tmp_path / "out.jsonl.1")
    path.write_bytes(b"c\n")
    assert drain(source) == [b"c"]


def test_a_writer_still_appending_to_the_rotated_file_loses_nothing(tmp_path: Path) -> None:
    """logrotate's ``create`` mode: the writer keeps its handle on the renamed file for a while."""
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"a\n")
    clock = FakeMonotonic()
    source = JsonlSource(path, 1024, rotation_grace_seconds=2.0, monotonic=clock)
    assert drain(source) == [b"a"]
    with open(path, "ab") as writer:  # opened before the rename, like the application's log handle
        os.rename(path, tmp_path / "out.jsonl.1")
        path.write_bytes(b"new-1\n")
        assert drain(source) == []
        clock.now += 1.5
        writer.write(b"b\n")
        writer.flush()
        assert drain(source) == [b"b"]
        clock.now += 1.9  # quiet for 1.9 s since "b": still inside the grace period
        writer.write(b"c")  # even a growing partial line counts as the old file being alive
        writer.flush()
        assert drain(source) == []
        clock.now += 1.9
        assert drain(source) == []
        writer.write(b"\n")
        writer.flush()
        assert drain(source) == [b"c"]
    clock.now += 2.0
    assert drain(source) == [b"new-1"]
    with open(path, "ab") as f:
        f.write(b"new-2\n")
    assert drain(source) == [b"new-2"]


def test_the_rotated_files_unterminated_tail_is_emitted_once_when_switching(tmp_path: Path) -> None:
    parser = RecordParser(config_from_mapping({"proxies": [{"name": "p", "field": "p"}],
                                               "audits": [{"name": "a", "field": "a"}]}, {}))
    for tail, verdict in ((b'{"id": "t", "p": 1}', "accepted"), (b'{"id": "t", "p"', "not_json")):
        path = tmp_path / f"{verdict}.jsonl"
        path.write_bytes(b'{"id": "first", "p": 1}\n' + tail)
        clock = FakeMonotonic()
        source = JsonlSource(path, 1024, monotonic=clock)
        assert len(drain(source)) == 1  # the tail waits for its newline
        os.rename(path, tmp_path / f"{verdict}.jsonl.1")
        path.write_bytes(b'{"id": "next", "p": 1}\n')
        assert drain(source) == []
        clock.now += 2.0
        items = drain(source)
        assert items == [tail, b'{"id": "next", "p": 1}']
        parsed = parser.parse_line(items[0])
        assert (isinstance(parsed, Record) and parsed.id == "t") if verdict == "accepted" else (
            isinstance(parsed, Rejection) and parsed.reason == verdict)
        assert drain(source) == []


def test_the_switch_happens_only_when_its_batch_is_committed(tmp_path: Path) -> None:
    """A store write that fails after the switching read must not lose the old file's tail."""
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"a\npartial")
    clock = FakeMonotonic()
    source = JsonlSource(path, 1024, monotonic=clock)
    assert drain(source) == [b"a"]
    os.rename(path, tmp_path / "out.jsonl.1")
    path.write_bytes(b"b\n")
    assert drain(source) == []
    clock.now += 2.0
    switching = source.read(100)
    assert switching.items == [b"partial"] and switching.offset is not None
    again = source.read(100)  # not committed: the pipeline failed, so the same batch comes back
    assert again.items == [b"partial"] and again.offset == switching.offset
    source.commit(again.offset)
    assert drain(source) == [b"b"]


def test_restart_during_the_grace_period_neither_skips_nor_rereads(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"1\n")
    clock = FakeMonotonic()
    source = JsonlSource(path, 1024, monotonic=clock)
    assert drain(source) == [b"1"]
    with open(path, "ab") as writer:
        writer.write(b"2\n")
        writer.flush()
        os.rename(path, tmp_path / "out.jsonl.1")
        path.write_bytes(b"new\n")
        assert drain(source) == [b"2"]  # rotation noticed, the grace period running
        saved = source.last_offset  # type: ignore[attr-defined]
        source.close()
        writer.write(b"3\n")  # written while the agent was down
    restarted = JsonlSource(path, 1024, offset=saved, monotonic=clock)
    assert drain(restarted) == [b"3"]  # found again by inode, read on from the stored offset
    clock.now += 2.0
    assert drain(restarted) == [b"new"]


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


def test_restart_from_the_saved_offset_neither_rereads_nor_skips(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"1\n2\n")
    source = JsonlSource(path, 1024)
    assert drain(source) == [b"1", b"2"]
    saved = source.last_offset  # type: ignore[attr-defined]
    source.close()
    with open(path, "ab") as f:
        f.write(b"3\n")
    restarted = JsonlSource(path, 1024, offset=saved)
    assert drain(restarted) == [b"3"]


def test_restart_after_rotation_finishes_the_rotated_file(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"1\n")
    source = JsonlSource(path, 1024)
    drain(source)
    saved = source.last_offset  # type: ignore[attr-defined]
    source.close()
    with open(path, "ab") as f:
        f.write(b"2\n")
    os.rename(path, tmp_path / "out.jsonl.1")
    path.write_bytes(b"3\n")
    restarted = JsonlSource(path, 1024, offset=saved, rotation_grace_seconds=0.0)
    assert drain(restarted) == [b"2", b"3"]


def test_over_long_lines_are_counted_once_and_skipped(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"ok\n" + b"x" * 5000)
    source = JsonlSource(path, 1024)
    first = source.read(100)
    assert first.items == [b"ok"] and first.too_large == 1
    source.commit(first.offset)
    with open(path, "ab") as f:
        f.write(b"y" * 10 + b"\nafter\n")
    second = source.read(100)
    assert second.items == [b"after"] and second.too_large == 0


def test_missing_file_is_down_counted_and_said_once_until_it_appears(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "later.jsonl"
    source = JsonlSource(path, 1024)
    assert source.errors["missing"] == 0  # exported from the start
    with caplog.at_level(logging.INFO, logger="agent.sources.jsonl"):
        for _ in range(3):
            assert drain(source) == [] and not source.up
        assert source.errors["missing"] == 1  # a misspelled path is counted, once, not per tick
        assert [r.getMessage() for r in caplog.records] == ["source file does not exist (yet): waiting for it"]
        assert caplog.records[0].fields == {"path": str(path)}  # type: ignore[attr-defined]
        path.write_bytes(b"1\n")
        assert drain(source) == [b"1"] and source.up
        assert caplog.records[-1].getMessage() == "source file is readable"


def test_a_batch_that_fills_up_mid_chunk_loses_nothing(tmp_path: Path) -> None:
    """A backlog read in batches smaller than one read chunk: every line, in order, exactly once."""
    path = tmp_path / "backlog.jsonl"
    path.write_bytes(b"".join(b'{"id":"%d"}\n' % i for i in range(30000)))
    source = JsonlSource(path, 65536)
    seen: list[bytes] = []
    while True:
        batch = source.read(5000)
        if not batch.items and batch.offset is None:
            break
        assert batch.too_large == 0
        seen.extend(i for i in batch.items if isinstance(i, bytes))
        source.commit(batch.offset)
    assert seen == [b'{"id":"%d"}' % i for i in range(30000)]


def test_blank_lines_do_not_count_towards_a_batch_and_its_offset_ends_after_its_last_line(tmp_path: Path) -> None:
    """A chunk is split in one go: blank and whitespace-only lines are skipped without taking a
    batch's room, a batch ends right after its last line, and an over-long line in a chunk falls
    back to reading line by line, counted once."""
    path = tmp_path / "mixed.jsonl"
    lines = [b"a", b"", b"  \t", b"b", b"c", b"", b"d", b"x" * 300, b"e", b"\r", b"f"]
    path.write_bytes(b"\n".join(lines) + b"\ng-partial")
    source = JsonlSource(path, 100)
    batches = []
    while (batch := source.read(2)).items or batch.too_large or batch.offset is not None:
        batches.append((batch.items, batch.too_large))
        source.commit(batch.offset)
    assert batches == [([b"a", b"b"], 0), ([b"c", b"d"], 0), ([b"e", b"f"], 1)]
    assert source.position == len(b"\n".join(lines) + b"\n")  # the partial last line waits
    source.close()
