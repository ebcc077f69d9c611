"""One agent per state directory: an advisory lock held for the daemon's whole life.

Two daemons on one SQLite store would each trust their in-memory detectors and overwrite each
other's checkpoints; an offline ``rebaseline`` next to a running daemon would be silently undone.
The kernel drops the lock when the process dies, kill -9 included.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_FILENAME = "agent.lock"


class StateDirBusy(Exception):
    """Another process holds the state directory."""


class StateLock:
    def __init__(self, state_dir: str | Path) -> None:
        self.path = Path(state_dir) / LOCK_FILENAME
        self._fd: int | None = None

    def acquire(self) -> StateLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateDirBusy(f"another goodhart-agent holds {self.path.parent}") from None
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
