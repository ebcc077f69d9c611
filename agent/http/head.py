"""The request head parsed lean and strict: the request line and the header fields.

The standard library parses a request's headers with the email package, a feed parser built for
mail: about a fifth of a small push's handler time. It is also lenient where HTTP must not be: a
line that is not a header ends the block without a word (the fields after it vanish, a body-framing
field among them), a folded line is glued to the one before, and a bare CR splits a line. Here every
line must be ``name: value`` with a token for a name and no CR or NUL in the value, or the request
is a 400: no two parsers can disagree about which fields a request has. The request line is read as
the standard library reads it (the same answers: 400 for bad syntax or version, 505 from HTTP/2.0),
and the same cap of 100 header lines holds (431 above), inside the byte budget and deadline of
:class:`~agent.http.wire.HeaderReader`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: header lines per request counting the blank line that ends them, as ``http.client`` counts (99 fields)
MAX_HEADERS = 100
#: a field name (RFC 9110 token): no space before the colon, no space or control character in it
TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: what a field value may not hold (RFC 9110 5.5: CR, LF and NUL are never valid)
FORBIDDEN = re.compile(r"[\r\n\0]")


class BadRequest(ValueError):
    """A request the listener answers with ``status`` and closes; ``version`` is the request's
    HTTP version as far as it was read (an HTTP/0.9 client gets no status line)."""

    def __init__(self, status: int, message: str, version: str = "HTTP/0.9") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.version = version


@dataclass(frozen=True)
class RequestLine:
    command: str
    path: str
    version: str  # "HTTP/0.9" when the line names none
    close: bool  # the connection closes after the answer unless a Connection header says otherwise


def parse_request_line(line: str) -> RequestLine | None:
    """The method, path and version of a request line (without its line end), as
    ``BaseHTTPRequestHandler.parse_request`` reads them; None for an empty line (closed unanswered).

    >>> parse_request_line("POST /v1/records HTTP/1.1")
    RequestLine(command='POST', path='/v1/records', version='HTTP/1.1', close=False)
    >>> parse_request_line("GET //evil.example/x HTTP/1.0").path
    '/evil.example/x'
    """
    words = line.split()
    if not words:
        return None
    version, close = "HTTP/0.9", True
    if len(words) >= 3:
        version = words[-1]
        number = _version_number(version)
        close = number < (1, 1)
        if number >= (2, 0):
            raise BadRequest(505, f"Invalid HTTP version ({version.split('/', 1)[1]})")  # sent as HTTP/0.9 is
    if not 2 <= len(words) <= 3:
        raise BadRequest(400, f"Bad request syntax ({line!r})", version)
    command, path = words[:2]
    if len(words) == 2 and command != "GET":
        raise BadRequest(400, f"Bad HTTP/0.9 request type ({command!r})")
    if path.startswith("//"):  # gh-87389: "//host/path" reads as an absolute URI to clients (open redirects)
        path = "/" + path.lstrip("/")
    return RequestLine(command, path, version, close)


def _version_number(version: str) -> tuple[int, int]:
    """``HTTP/major.minor`` as two integers (RFC 2145), BadRequest for anything else."""
    parts = version[5:].split(".") if version.startswith("HTTP/") else []
    if len(parts) != 2 or not all(p.isdigit() and p.isascii() and len(p) <= 10 for p in parts):
        raise BadRequest(400, f"Bad request version ({version!r})")
    return int(parts[0]), int(parts[1])


class Headers:
    """A request's header fields in arrival order, names in lower case: the part of
    ``email.message.Message`` the listener uses (lookups ignore case, as there)."""

    __slots__ = ("fields",)

    def __init__(self, fields: list[tuple[str, str]]) -> None:
        self.fields = fields

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first field called ``name``."""
        name = name.lower()
        return next((value for key, value in self.fields if key == name), default)

    def get_all(self, name: str) -> list[str] | None:
        """Every field called ``name``, None when there is none."""
        name = name.lower()
        return [value for key, value in self.fields if key == name] or None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(key == name.lower() for key, _ in self.fields)

    def items(self) -> list[tuple[str, str]]:
        return list(self.fields)


def parse_fields(lines: list[bytes]) -> Headers:
    """Header lines (each with or without its line end) as fields; BadRequest for a line that is not
    one (400) or too many of them (431: :data:`MAX_HEADERS` with the blank line).

    >>> parse_fields([b"Content-Length: 2 \\r\\n", b"X-A:b"]).items()
    [('content-length', '2'), ('x-a', 'b')]
    >>> parse_fields([b"Content-Length : 2\\r\\n"])
    Traceback (most recent call last):
    ...
    agent.http.head.BadRequest: Bad header line ('Content-Length : 2')
    """
    if len(lines) >= MAX_HEADERS:
        raise BadRequest(431, "Too many headers")
    fields = []
    for raw in lines:
        line = raw.decode("iso-8859-1").rstrip("\r\n")
        name, colon, value = line.partition(":")
        value = value.strip(" \t")
        if not colon or not TOKEN.fullmatch(name) or FORBIDDEN.search(value):
            raise BadRequest(400, f"Bad header line ({line[:100]!r})")
        fields.append((name.lower(), value))
    return Headers(fields)


def block_end(buffered: bytes) -> int:
    """Where a header block at the start of ``buffered`` ends (just past its blank line, a line that is
    ``\\r\\n`` or ``\\n`` as ``http.client`` reads it), or -1 when its end is not there yet.

    >>> block_end(b"A: b\\r\\n\\r\\nbody"), block_end(b"\\r\\n"), block_end(b"A: b\\n\\n"), block_end(b"A: b\\r\\n")
    (8, 2, 6, -1)
    """
    if buffered.startswith(b"\n"):
        return 1
    if buffered.startswith(b"\r\n"):
        return 2
    ends = [at + size for at, size in ((buffered.find(b"\n\r\n"), 3), (buffered.find(b"\n\n"), 2)) if at >= 0]
    return min(ends) if ends else -1
