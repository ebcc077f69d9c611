"""Follow a JSONL file on a shared volume the way a log shipper does.

- appends are read as they land; a partial last line waits until its newline arrives;
- rotation (rename, then a new file at the path) is noticed by the inode changing. A writer that
  rotates in logrotate's ``create`` mode keeps appending to the old (renamed) file until it reopens
  its log, so the old file is not left at once: it is drained through the open handle (or found
  again by inode after a restart) until it has produced nothing new for ``rotation_grace_seconds``
  (measured on a monotonic clock). Until then the new file's lines wait, unread but not lost: the
  offset still points into the old file by inode, so a restart during the grace period neither
  skips nor re-reads. When the source finally switches, an unterminated last line of the old file
  (a writer that died mid-line, or one that never ends its last record with a newline) is emitted
  as one final item: the parser rejects it as ``not_json`` when it is incomplete and accepts it
  when it is a whole JSON object without its newline. The switch itself takes effect only when the
  pipeline commits that batch, so a failed store write never loses the tail;
- truncation (``copytruncate``, or the file rewritten in place) is noticed by the size dropping
  below the offset, the first bytes changing or the bytes before the offset changing, and reading
  restarts at 0;
- the position (inode, offset, fingerprints of the first bytes and of those before the offset) is
  the offset the pipeline stores with each batch, so a restart neither re-reads nor skips.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from agent.sources.base import Batch, Source

log = logging.getLogger(__name__)

READ_CHUNK = 1 << 20
FINGERPRINT_BYTES = 128
DEFAULT_ROTATION_GRACE_SECONDS = 2.0


def _tail_fingerprint(handle: IO[bytes], offset: int) -> str:
    """Hash of the bytes just before ``offset``: a file rewritten in place with the same first bytes
    still differs there (empty at offset 0, where there is nothing to compare)."""
    if offset <= 0:
        return ""
    size = min(offset, FINGERPRINT_BYTES)
    handle.seek(offset - size)
    return hashlib.sha1(handle.read(size)).hexdigest()


def _fingerprint(handle: IO[bytes], upto: int) -> str:
    """Hash of the file's first bytes (at most ``upto``): tells a rewritten file from its old self."""
    handle.seek(0)
    return hashlib.sha1(handle.read(min(upto, FINGERPRINT_BYTES))).hexdigest()


class JsonlSource(Source):
    name = "jsonl"

    def __init__(self, path: str | Path, max_line_bytes: int, offset: dict[str, Any] | None = None,
                 start_at: str = "beginning", rotation_grace_seconds: float = DEFAULT_ROTATION_GRACE_SECONDS,
                 monotonic: Callable[[], float] = time.monotonic, name: str = "jsonl") -> None:
        super().__init__()
        self.name = name
        self.errors = {"unreadable": 0, "missing": 0, "not_regular_file": 0}  # every reason exported, at zero
        self._missing = False  # the path does not exist (said once, counted once per disappearance)
        self._unreadable = False  # the path cannot be opened (counted per attempt, said once)
        self.path = Path(path)
        self.max_line_bytes = max_line_bytes
        self.rotation_grace_seconds = rotation_grace_seconds
        self._monotonic = monotonic
        self._handle: IO[bytes] | None = None
        # After a rotation: (the old file's size, when that size was first seen); None otherwise.
        self._rotated: tuple[int, float] | None = None
        # The new file, opened by the read that decided to switch; adopted when that batch commits.
        self._next: tuple[IO[bytes], int] | None = None
        self._inode: int | None = None
        self._offset = 0
        self._fp = ""
        self._fp_len = 0
        self._tail_fp = ""  # of the bytes before the committed offset
        self._skipping = False  # inside an over-long line, dropping bytes up to its newline
        self._up = False
        self._restore(offset, start_at)

    # -- position ---------------------------------------------------------------------------------
    def _restore(self, saved: dict[str, Any] | None, start_at: str) -> None:
        if saved:
            self._inode = saved.get("inode")
            self._offset = int(saved.get("offset", 0))
            self._fp = saved.get("fingerprint", "")
            self._fp_len = int(saved.get("fingerprint_len", 0))
            self._tail_fp = saved.get("tail_fingerprint", "")  # absent in offsets saved before it existed
            self._skipping = bool(saved.get("skipping", False))
            self._reopen_by_inode()
        elif start_at == "end" and self.path.exists():
            self._open_current()
            if self._handle is not None:
                self._offset = os.fstat(self._handle.fileno()).st_size

    def _position(self, offset: int, skipping: bool, tail: str = "") -> dict[str, Any]:
        return {"path": str(self.path), "inode": self._inode, "offset": offset, "fingerprint": self._fp,
                "fingerprint_len": self._fp_len, "tail_fingerprint": tail, "skipping": skipping}

    def _rewritten(self, handle: IO[bytes], size: int) -> bool:
        """Whether the file is no longer the one the offset was taken in: shorter than the offset,
        other first bytes, or other bytes just before the offset."""
        if size < self._offset:
            return True
        if self._fp and self._fp_len <= size and _fingerprint(handle, self._fp_len) != self._fp:
            return True
        return bool(self._tail_fp) and _tail_fingerprint(handle, self._offset) != self._tail_fp

    def _restart(self) -> None:
        self._offset, self._fp, self._fp_len, self._tail_fp, self._skipping = 0, "", 0, "", False

    def _open_current(self) -> bool:
        try:
            handle = open_regular(self.path)
        except NotRegularFile as err:
            self._up = False
            self.count_error("not_regular_file")
            if not self._unreadable:
                self._unreadable = True
                log.error("source path is not a regular file (a FIFO, socket or device): not read",
                          extra={"fields": {"path": str(self.path), "kind": str(err)}})
            return False
        except FileNotFoundError:
            self._up = False
            if not self._missing:  # a misspelled path must not look like a quiet stream
                self._missing = True
                self.count_error("missing")
                log.warning("source file does not exist (yet): waiting for it",
                            extra={"fields": {"path": str(self.path)}})
            return False
        except OSError as err:
            self.count_error("unreadable")
            if not self._unreadable:
                self._unreadable = True
                log.warning("source file cannot be read", extra={"fields": {"path": str(self.path),
                                                                            "error": err.strerror}})
            self._up = False
            return False
        if self._missing or self._unreadable:
            self._missing = self._unreadable = False
            log.info("source file is readable", extra={"fields": {"path": str(self.path)}})
        self._adopt(handle, os.fstat(handle.fileno()).st_ino)
        return True

    def _adopt(self, handle: IO[bytes], inode: int) -> None:
        """Make ``handle`` the file being read, from its first byte."""
        self._close_handle()
        self._handle = handle
        self._inode = inode
        self._offset = 0
        self._fp, self._fp_len, self._tail_fp = "", 0, ""
        self._skipping = False
        self._rotated = None
        self._up = True

    def _reopen_by_inode(self) -> None:
        """After a restart, find the file we were reading: at its path, or rotated beside it."""
        rotated = sorted(p for p in self.path.parent.glob(self.path.name + "*") if p != self.path)
        candidates = [self.path, *rotated]
        for candidate in candidates:
            try:
                if candidate.stat().st_ino == self._inode:
                    handle = open(candidate, "rb")  # noqa: SIM115
            except OSError:
                continue
            else:
                if candidate.stat().st_ino != self._inode:
                    continue
                self._handle = handle
                self._up = True
                if self._rewritten(handle, os.fstat(handle.fileno()).st_size):
                    self._restart()
                return
        self._open_current()  # the old file is gone: start the current one from the top

    def _close_handle(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def _drop_next(self) -> None:
        if self._next is not None:
            self._next[0].close()
            self._next = None

    def _path_inode(self) -> int | None:
        try:
            return self.path.stat().st_ino
        except OSError:
            return None

    # -- reading ---------------------------------------------------------------------------------------
    def read(self, max_items: int) -> Batch:
        self._drop_next()  # a switch that was read but never committed is decided afresh
        if self._handle is None and not self._open_current():
            return Batch()
        assert self._handle is not None
        size = os.fstat(self._handle.fileno()).st_size
        if self._rewritten(self._handle, size):
            self._restart()  # truncated or rewritten: read it from the top
        batch = self._read_lines(max_items)
        if batch.items or batch.too_large or batch.offset:
            return batch
        # At the end of this file: if the path now names a different file, it was rotated.
        current = self._path_inode()
        if current == self._inode:
            self._rotated = None
        elif current is not None:
            return self._after_rotation()
        return batch

    def _after_rotation(self) -> Batch:
        """Drained the old file for now: switch once it has been quiet for the grace period."""
        assert self._handle is not None
        size = os.fstat(self._handle.fileno()).st_size
        now = self._monotonic()
        if self._rotated is None or self._rotated[0] != size:
            self._rotated = (size, now)  # just rotated, or the old file grew: wait a whole grace period
        if now - self._rotated[1] < self.rotation_grace_seconds:
            return Batch()
        return self._switch(size)

    def _switch(self, size: int) -> Batch:
        """The batch that ends the old file: its unterminated tail, if any, and the new file's start."""
        assert self._handle is not None
        try:
            handle = open_regular(self.path)
        except FileNotFoundError:
            return Batch()  # renamed away again: the next read looks anew
        except OSError:
            self.count_error("unreadable")
            return Batch()
        inode = os.fstat(handle.fileno()).st_ino
        self._next = (handle, inode)
        batch = Batch(offset={**self._position(0, False), "inode": inode, "fingerprint": "",
                                  "fingerprint_len": 0})
        if size > self._offset and not self._skipping:  # inside an over-long line: already counted
            self._handle.seek(self._offset)
            tail = self._handle.read(min(size - self._offset, self.max_line_bytes + 1))
            if len(tail) > self.max_line_bytes:
                batch.too_large += 1
            elif tail.strip():
                batch.items.append(tail)
        return batch

    def _read_lines(self, max_items: int) -> Batch:
        assert self._handle is not None
        handle = self._handle
        handle.seek(self._offset)
        base = self._offset  # file offset of data[0]
        skipping = self._skipping
        batch = Batch()
        data = b""
        while len(batch.items) < max_items:
            chunk = handle.read(READ_CHUNK)
            if not chunk:
                break
            data += chunk
            start = -1 if skipping else self._whole_lines(data, batch, max_items)
            if start < 0:  # inside an over-long line, or one in this chunk: line by line
                start, skipping = self._each_line(data, batch, max_items, skipping)
            base += start
            if len(batch.items) >= max_items:
                break  # the batch is full: the rest of the chunk is read again next time
            data = data[start:]
            if len(data) > self.max_line_bytes or (skipping and data):
                # An over-long line still growing: count it once, then drop bytes up to its newline.
                if not skipping:
                    batch.too_large += 1
                    skipping = True
                base += len(data)
                data = b""
        if base != self._offset or skipping != self._skipping:
            if self._fp_len < FINGERPRINT_BYTES:
                self._fp_len = min(base, FINGERPRINT_BYTES)
                self._fp = _fingerprint(handle, self._fp_len)
            batch.offset = self._position(base, skipping, _tail_fingerprint(handle, base))
        return batch

    def _whole_lines(self, data: bytes, batch: Batch, max_items: int) -> int:
        """The usual chunk, split once: its complete lines into the batch (blank ones skipped) up
        to ``max_items`` items; the bytes consumed, or -1 when a line is too long (see :meth:`_each_line`)."""
        lines = data.split(b"\n")
        del lines[-1]  # what follows the last newline: an incomplete line, or nothing
        if not lines or max(map(len, lines)) > self.max_line_bytes:
            return -1 if lines else 0
        items = batch.items
        consumed = taken = 0
        while taken < len(lines) and len(items) < max_items:
            part = lines[taken:taken + max_items - len(items)]
            items.extend([line for line in part if line.strip()])
            consumed += sum(map(len, part)) + len(part)
            taken += len(part)
        return consumed

    def _each_line(self, data: bytes, batch: Batch, max_items: int, skipping: bool) -> tuple[int, bool]:
        """Line by line: the end of an over-long line is dropped, an over-long line counted."""
        start = 0
        while len(batch.items) < max_items:
            newline = data.find(b"\n", start)
            if newline < 0:
                break
            line = data[start:newline]
            start = newline + 1
            if skipping:
                skipping = False  # the end of an over-long line, already counted
            elif len(line) > self.max_line_bytes:
                batch.too_large += 1
            elif line.strip():
                batch.items.append(line)
        return start, skipping

    def read_tail(self) -> Batch:
        """The unterminated last line, as one item, once the writer is known to be done.

        A follower waits for the newline; ``replay`` reads a finished file, whose last record may
        lack one.
        """
        if self._handle is None or self._skipping:
            return Batch()
        size = os.fstat(self._handle.fileno()).st_size
        if size <= self._offset:
            return Batch()
        self._handle.seek(self._offset)
        tail = self._handle.read(min(size - self._offset, self.max_line_bytes + 1))
        batch = Batch(offset=self._position(size, False, _tail_fingerprint(self._handle, size)))
        if len(tail) > self.max_line_bytes:
            batch.too_large += 1
        elif tail.strip():
            batch.items.append(tail)
        return batch

    @property
    def position(self) -> int:
        """Bytes of the current file read and committed (a progress bar's numerator)."""
        return self._offset

    def commit(self, offset: dict[str, Any] | None) -> None:
        if offset is None:
            return
        if self._next is not None and offset.get("inode") == self._next[1]:
            self._adopt(*self._next)  # the old file's last batch is stored: move on to the new one
            self._next = None
        self._offset = int(offset["offset"])
        self._tail_fp = offset.get("tail_fingerprint", "")
        self._skipping = bool(offset["skipping"])

    def close(self) -> None:
        self._drop_next()
        self._close_handle()

    @property
    def up(self) -> bool:
        return self._up and self.path.exists()


class NotRegularFile(OSError):
    """The source path is a FIFO, socket or device: reading it would block ingest and shutdown."""


def open_regular(path: Path) -> IO[bytes]:
    """``path`` opened for reading without blocking on a FIFO (O_NONBLOCK), refused unless regular."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile("fifo" if stat.S_ISFIFO(mode) else "socket or device")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
