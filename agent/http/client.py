"""Being a careful HTTP client: honour ``Retry-After``, back off with jitter, never hold an unbounded reply.

Used by the pull source and by judges and graders. Each piece is a pure function or takes what it
needs (an rng, a clock, a deadline) so tests can pin it down without a network.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # requests and urllib3 load only when a client is used (they cost a replay's start ~75 ms)
    import requests

#: The longest wait a ``Retry-After`` may impose. Asking again after an hour costs one request that
#: may be throttled again; obeying a longer (or mistaken, or hostile) value would silence a source or
#: a judge for hours with nothing to show for it, so an hour bounds what the server can ask for.
MAX_RETRY_AFTER_SECONDS = 3600.0
READ_CHUNK = 64 * 1024

_DELTA_SECONDS = re.compile(r"\d+(?:\.\d+)?")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds to wait, at most :data:`MAX_RETRY_AFTER_SECONDS`; None when unusable.

    Delta-seconds (decimals too: some servers send ``1.5``) or an HTTP date (a past date means now).
    Absent, negative, non-finite or unparseable values give None, and the caller backs off instead.

    >>> parse_retry_after("7"), parse_retry_after("1.5"), parse_retry_after("7200")
    (7.0, 1.5, 3600.0)
    >>> parse_retry_after("Thu, 01 Jan 1970 00:01:40 GMT", now=40.0)
    60.0
    >>> [parse_retry_after(v) for v in (None, "", "soon", "inf", "-5", "nan")]
    [None, None, None, None, None, None]
    """
    if not value:
        return None
    text = value.strip()
    if _DELTA_SECONDS.fullmatch(text):
        seconds = float(text)
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # "-0000": no usable zone, so no usable instant
            return None
        seconds = max(0.0, when.timestamp() - (time.time() if now is None else now))
    if not math.isfinite(seconds):
        return None
    return min(seconds, MAX_RETRY_AFTER_SECONDS)


def backoff_delay(attempt: int, initial: float, maximum: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with "equal jitter": between half and all of ``initial * 2**(attempt-1)``.

    Half fixed so a retry never comes too early, half random so a crowd of clients spreads out;
    the step is capped at ``maximum``. ``rng`` makes it reproducible (the module's rng otherwise).

    >>> rng = random.Random(1)
    >>> [round(backoff_delay(n, 1.0, 10.0, rng), 2) for n in (1, 2, 3, 4, 5, 6)]
    [0.57, 1.85, 3.53, 5.02, 7.48, 7.25]
    """
    step = min(maximum, initial * 2.0 ** min(max(attempt - 1, 0), 60))
    return step / 2 + (rng or random).uniform(0.0, step / 2)


class ReadError(Exception):
    """A reply body that could not be read whole; ``reason`` is ``too_large``, ``timeout``, ``bad_body``
    (its Content-Encoding does not decode) or ``connection``."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def read_limited(resp: requests.Response, limit: int, deadline: float,
                 clock: Callable[[], float] = time.monotonic) -> bytes:
    """The body of a streamed reply (``stream=True``), decompressed, up to ``limit`` bytes, by ``deadline``.

    A declared Content-Length above the limit is refused before reading; a body that grows past it
    is dropped as soon as it does. The deadline covers the whole body, so a server dripping bytes
    slowly times out too, not only one that goes silent.
    """
    import urllib3

    declared = resp.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ReadError("too_large", f"{declared} bytes")
    raw = resp.raw
    read = getattr(raw, "read1", None) or raw.read  # read1 (urllib3 2) returns what one recv gives
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            remaining = deadline - clock()
            if remaining <= 0:
                raise ReadError("timeout", "reply slower than the timeout")
            sock = getattr(getattr(raw, "connection", None), "sock", None)
            if sock is not None:
                sock.settimeout(remaining)
            chunk = read(READ_CHUNK, decode_content=True)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > limit:
                raise ReadError("too_large", f"more than {limit} bytes")
            chunks.append(chunk)
    except (urllib3.exceptions.ReadTimeoutError, TimeoutError):
        raise ReadError("timeout", "reply slower than the timeout") from None
    except urllib3.exceptions.DecodeError:
        raise ReadError("bad_body", "Content-Encoding does not decode") from None
    except (urllib3.exceptions.HTTPError, OSError) as err:
        raise ReadError("connection", type(err).__name__) from None
