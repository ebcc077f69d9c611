"""Follow a JSONL file on a shared volume the way a log shipper does.

- appends are read as they land; a partial last line waits until its newline arrives;
- rotation (rename, then a new file at the path) is noticed by the inode changing: the old file is
  read to its end first (through the open handle, or found again by inode after a restart);
- truncation (``copytruncate``, or the file rewritten in place) is noticed by the size dropping
  below the offset or the first bytes changing, and reading restarts at 0;
- the position (inode, offset, a fingerprint of the first bytes) is the checkpoint the pipeline
  stores with each batch, so a restart neither re-reads nor skips.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import IO, Any

from agent.sources.base import Batch, Source

READ_CHUNK = 1 << 20
FINGERPRINT_BYTES = 128


def _fingerprint(handle: IO[bytes], upto: int) -> str:
    """Hash of the file's first bytes (at most ``upto``): tells a rewritten file from its old self."""
    handle.seek(0)
    return hashlib.sha1(handle.read(min(upto, FINGERPRINT_BYTES))).hexdigest()


class JsonlSource(Source):
    name = "jsonl"

    def __init__(self, path: str | Path, max_line_bytes: int, checkpoint: dict[str, Any] | None = None,
                 start_at: str = "beginning") -> None:
        super().__init__()
        self.errors = {"unreadable": 0}  # every reason exported from the start, at zero
        self.path = Path(path)
        self.max_line_bytes = max_line_bytes
        self._handle: IO[bytes] | None = None
        self._inode: int | None = None
        self._offset = 0
        self._fp = ""
        self._fp_len = 0
        self._skipping = False  # inside an over-long line, dropping bytes up to its newline
        self._up = False
        self._restore(checkpoint, start_at)

    # -- position ---------------------------------------------------------------------------------
    def _restore(self, checkpoint: dict[str, Any] | None, start_at: str) -> None:
        if checkpoint:
            self._inode = checkpoint.get("inode")
            self._offset = int(checkpoint.get("offset", 0))
            self._fp = checkpoint.get("fingerprint", "")
            self._fp_len = int(checkpoint.get("fingerprint_len", 0))
            self._skipping = bool(checkpoint.get("skipping", False))
            self._reopen_by_inode()
        elif start_at == "end" and self.path.exists():
            self._open_current()
            if self._handle is not None:
                self._offset = os.fstat(self._handle.fileno()).st_size

    def _checkpoint(self, offset: int, skipping: bool) -> dict[str, Any]:
        return {"path": str(self.path), "inode": self._inode, "offset": offset, "fingerprint": self._fp,
                "fingerprint_len": self._fp_len, "skipping": skipping}

    def _open_current(self) -> bool:
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 - kept open across reads, closed in close()
        except FileNotFoundError:
            self._up = False
            return False
        except OSError:
            self.count_error("unreadable")
            self._up = False
            return False
        self._close_handle()
        self._handle = handle
        self._inode = os.fstat(handle.fileno()).st_ino
        self._offset = 0
        self._fp, self._fp_len = "", 0
        self._skipping = False
        self._up = True
        return True

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
                if self._fp and _fingerprint(handle, self._fp_len) != self._fp:
                    self._offset, self._fp, self._fp_len, self._skipping = 0, "", 0, False
                return
        self._open_current()  # the old file is gone: start the current one from the top

    def _close_handle(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def _path_inode(self) -> int | None:
        try:
            return self.path.stat().st_ino
        except OSError:
            return None

    # -- reading ---------------------------------------------------------------------------------------
    def read(self, max_items: int) -> Batch:
        if self._handle is None and not self._open_current():
            return Batch()
        assert self._handle is not None
        size = os.fstat(self._handle.fileno()).st_size
        if size < self._offset or (self._fp and self._fp_len <= size
                                   and _fingerprint(self._handle, self._fp_len) != self._fp):
            self._offset, self._fp, self._fp_len, self._skipping = 0, "", 0, False  # truncated or rewritten
        batch = self._read_lines(max_items)
        if batch.items or batch.too_large or batch.checkpoint:
            return batch
        # At the end of this file: if the path now names a different file, it was rotated.
        current = self._path_inode()
        if current is not None and current != self._inode:
            self._open_current()
            return Batch(checkpoint=self._checkpoint(0, False))
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
            batch.checkpoint = self._checkpoint(base, skipping)
        return batch

    def commit(self, checkpoint: dict[str, Any] | None) -> None:
        if checkpoint is None:
            return
        self._offset = int(checkpoint["offset"])
        self._skipping = bool(checkpoint["skipping"])

    def close(self) -> None:
        self._close_handle()

    @property
    def up(self) -> bool:
        return self._up and self.path.exists()
