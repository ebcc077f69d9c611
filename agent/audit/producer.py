"""What judges and graders share: one HTTP request per audit, its outcome classified.

A :class:`Producer` turns a record into an :class:`Outcome`: a score, or a failure reason that is
either *transient* (retried later through the queue) or *terminal* (the audit fails for good).
Terminal failures are the ones where asking again would pay again for the same answer (a reply
that does not parse, a score off the scale) or can never succeed (the server rejects the request
as malformed). Authentication and routing errors are transient: they are the operator's to fix,
and the queue waits for the fix instead of failing every audit.

The bearer key is read once from the environment and only ever put in the ``Authorization``
header; it is not logged, not exported and not part of any repr.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent.config import AuditCallConfig
from agent.http.client import ReadError, parse_retry_after, read_limited

if TYPE_CHECKING:  # loaded by the first call: a replay without judges never needs it
    import requests

MAX_REPLY_BYTES = 1 << 20

#: failures retried later; ``rate_limited`` pauses the producer instead of counting toward the breaker
TRANSIENT_REASONS: tuple[str, ...] = ("timeout", "connection", "rate_limited", "server_error", "unauthorized",
                                      "http_error", "bad_response")
#: failures that end an audit
TERMINAL_REASONS: tuple[str, ...] = ("bad_request", "unparseable", "out_of_scale", "expired", "attempts_exhausted")
#: transient reasons that say the server is not healthy (``goodhart_up`` 0, breaker counts them)
UNHEALTHY_REASONS = frozenset({"timeout", "connection", "server_error", "unauthorized", "http_error",
                               "bad_response"})


@dataclass(frozen=True)
class Outcome:
    score: float | None = None
    reason: str = ""            # empty on success
    transient: bool = False
    retry_after: float | None = None
    status: int | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    latency: float = 0.0
    detail: str = ""            # for the logs: an excerpt of the error reply, or of a reply that did not parse


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    latency: float


def idempotency_key(audit: str, rid: str) -> str:
    """Stable per (audit, output): a server that honours ``Idempotency-Key`` charges a retry once."""
    return hashlib.sha256(f"{audit}\0{rid}".encode("utf-8", "surrogatepass")).hexdigest()[:32]


def excerpt(body: bytes | str, secret: str | None = None, limit: int = 200) -> str:
    """A short, single-line excerpt for the logs; the error message of an OpenAI-style error body.

    >>> excerpt(b'{"error": {"message": "context length exceeded", "type": "invalid_request_error"}}')
    'context length exceeded'
    """
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        doc = None
    if isinstance(doc, dict):
        error = doc.get("error")
        message = error.get("message") if isinstance(error, dict) else error
        if isinstance(message, str):
            text = message
    if secret:
        text = text.replace(secret, "[redacted]")
    return " ".join(text.split())[:limit]


def as_number(value: Any) -> float | None:
    """A finite number from JSON (booleans count as 0/1, like record metrics); None otherwise."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float) and math.isfinite(float(value)):
        return float(value)
    return None


class Producer(ABC):
    """One judge or grader behind one audit name."""

    kind = "producer"

    def __init__(self, audit: str, config: AuditCallConfig, api_key: str | None) -> None:
        self.audit = audit
        self.timeout = config.timeout_seconds
        self._api_key = api_key
        self._local = threading.local()

    def __repr__(self) -> str:  # never the key
        return f"{type(self).__name__}(audit={self.audit!r})"

    @property
    def component(self) -> str:
        """Value of ``goodhart_up{component}``."""
        return "judge" if self.kind == "judge" else f"grader:{self.audit}"

    @abstractmethod
    def request(self, body: dict[str, Any], key: str) -> Outcome:
        """Ask for the audit of one record; ``key`` is its idempotency key."""

    # -- HTTP ---------------------------------------------------------------------------------------
    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            import requests

            session = self._local.session = requests.Session()
        return session

    def _headers(self, key: str) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "User-Agent": f"goodhart-agent/{__version__}", "Idempotency-Key": key}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def post(self, url: str, payload: Any, key: str) -> Reply | Outcome:
        """POST JSON; a :class:`Reply` for a 2xx answer, else the failure as an :class:`Outcome`."""
        import requests
        from urllib3.exceptions import ReadTimeoutError

        started = time.monotonic()
        deadline = started + self.timeout

        def failed(reason: str, transient: bool = True, status: int | None = None,
                   retry_after: float | None = None, body: bytes = b"") -> Outcome:
            return Outcome(reason=reason, transient=transient, status=status, retry_after=retry_after,
                           latency=time.monotonic() - started, detail=excerpt(body, self._api_key))

        try:
            with self._session().post(url, data=json.dumps(payload), headers=self._headers(key), stream=True,
                                      timeout=(min(self.timeout, 10.0), self.timeout)) as resp:
                status = resp.status_code
                try:
                    body = read_limited(resp, MAX_REPLY_BYTES, deadline)
                except ReadError as err:
                    if err.reason == "too_large" or err.reason == "bad_body":
                        return failed("bad_response", status=status)
                    return failed(err.reason)  # timeout, connection
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        except requests.Timeout:
            return failed("timeout")
        except requests.ConnectionError as err:
            timed_out = bool(err.args) and isinstance(err.args[0], ReadTimeoutError)
            return failed("timeout" if timed_out else "connection")
        except requests.RequestException:
            return failed("connection")
        if 200 <= status < 300:
            return Reply(status, body, time.monotonic() - started)
        if status == 429:
            return failed("rate_limited", status=status, retry_after=retry_after, body=body)
        if status >= 500 or status == 408:
            return failed("server_error", status=status, retry_after=retry_after, body=body)
        if status in (401, 403):  # no excerpt: some APIs quote part of the key they rejected
            return failed("unauthorized", status=status)
        if status in (400, 413, 422):
            return failed("bad_request", transient=False, status=status, body=body)
        return failed("http_error", status=status, body=body)
