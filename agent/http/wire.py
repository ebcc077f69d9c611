"""What the listener reads off the socket before a handler runs, under deadlines and a size budget.

The standard library reads a request line and up to 100 header lines of 64 KiB each with no time
limit: a client that never finishes its headers holds a thread and megabytes for as long as it likes.
Here the request line and headers share one byte budget and one deadline, the body another deadline,
and every socket read is armed with the time left, so a client trickling one byte at a time gains
nothing.
"""

from __future__ import annotations

import http.client
import re
import socket
import time
from dataclasses import dataclass
from typing import Any

#: a Content-Length value as RFC 9110 allows it: ASCII digits only (``str.isdigit`` accepts "²")
CONTENT_LENGTH = re.compile(r"[0-9]{1,18}")


@dataclass(frozen=True)
class ServerLimits:
    """What one connection may cost the listener (``limits:`` in the config)."""

    header_timeout: float = 10.0   # seconds for the request line and all headers to arrive
    body_timeout: float = 30.0     # seconds for the whole body to arrive
    max_header_bytes: int = 16384  # request line plus headers; beyond: 431 and close
    max_connections: int = 64      # open connections; beyond: 503 and close at once
    idle_timeout: float = 30.0     # seconds a keep-alive connection may wait for its next request


class HeaderTooLarge(http.client.LineTooLong):
    """The request line and headers went over the budget (answered 431 by ``parse_request``)."""


class HeaderReader:
    """A stand-in for the handler's ``rfile`` while the request line and headers are read.

    ``readline`` is the one method the standard library's parser calls; it reads what is already
    buffered or one socket read at a time, each armed with the time left before ``deadline``.
    """

    def __init__(self, raw: Any, sock: socket.socket, budget: int, deadline: float) -> None:
        self.raw = raw
        self.sock = sock
        self.left = budget
        self.deadline = deadline

    def readline(self, limit: int = -1) -> bytes:
        cap = self.left + 1 if limit < 0 else min(limit, self.left + 1)
        out = bytearray()
        while len(out) < cap:
            arm(self.sock, self.deadline)
            chunk = self.raw.peek(1)[: cap - len(out)]
            if not chunk:
                break
            newline = chunk.find(b"\n")
            out += self.raw.read(len(chunk) if newline < 0 else newline + 1)
            if newline >= 0:
                break
        self.left -= len(out)
        if self.left < 0:
            raise HeaderTooLarge("request headers")
        return bytes(out)


def arm(sock: socket.socket, deadline: float) -> None:
    """Give the next socket read the time left before ``deadline``; TimeoutError when none is left."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("deadline passed")
    sock.settimeout(left)


def read_body(raw: Any, sock: socket.socket, size: int, timeout: float) -> bytes:
    """``size`` bytes of body, all within ``timeout`` seconds (TimeoutError otherwise); fewer when the
    client closes early."""
    deadline = time.monotonic() + timeout
    parts: list[bytes] = []
    while size > 0:
        arm(sock, deadline)
        chunk = raw.read1(min(size, 1 << 16))
        if not chunk:
            break
        parts.append(chunk)
        size -= len(chunk)
    return b"".join(parts)
