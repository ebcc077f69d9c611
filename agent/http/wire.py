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
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

from agent.http.head import MAX_HEADERS, block_end

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

    ``readline`` reads what is already buffered or one socket read at a time, each armed with the
    time left before ``deadline``; ``header_lines`` takes a header block that has arrived whole at once.
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

    def header_lines(self) -> list[bytes]:
        """The header lines after the request line, up to the blank line (left out): with one read when
        the block is already buffered whole within the budget (a small request is one packet), else
        line by line; at most one line over :data:`~agent.http.head.MAX_HEADERS` is read."""
        arm(self.sock, self.deadline)
        end = block_end(self.raw.peek(1))
        if 0 < end <= self.left:
            self.left -= end
            return self.raw.read(end).split(b"\n")[:-2]
        lines: list[bytes] = []
        while len(lines) <= MAX_HEADERS and (line := self.readline()) not in (b"\r\n", b"\n", b""):
            lines.append(line)
        return lines


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


_date: tuple[int, str] = (0, "")


def http_date() -> str:
    """The ``Date`` of an answer (RFC 9110 IMF-fixdate), formatted once a second, not once an answer."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, formatdate(now, usegmt=True))
    return _date[1]


def response_head(status: int, reason: str, server: str, content_type: str, length: int,
                  headers: Mapping[str, str], close: bool) -> bytes:
    """An HTTP/1.1 answer's status line and headers, as ``BaseHTTPRequestHandler`` would write them
    (``Server`` and ``Date`` first), with ``Connection: close`` when ``close``.

    >>> response_head(202, "Accepted", "s", "application/json", 2, {}, False).decode().splitlines()[0]
    'HTTP/1.1 202 Accepted'
    """
    lines = [f"HTTP/1.1 {status} {reason}", f"Server: {server}", f"Date: {http_date()}",
             f"Content-Type: {content_type}", f"Content-Length: {length}",
             *(f"{name}: {value}" for name, value in headers.items())]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "strict")
