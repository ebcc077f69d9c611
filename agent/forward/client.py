"""One POST of a batch to the gateway, and what its answer means for the batch.

The gateway's push endpoint answers 202 once the records are committed; anything else leaves the
batch in the buffer. Each failure has a reason (the ``reason`` label of
``goodhart_forward_send_failures_total``) and a verdict: retry later (the default: a gateway that is
down, busy, misconfigured or refusing the token may be fixed, and the records wait), or split the
batch and, for a single record, drop it (``refused``: the gateway says this body can never be
accepted, so retrying it would block everything behind it).
"""

from __future__ import annotations

import contextlib
import gzip
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

from agent.config import ConfigError, ForwardConfig
from agent.http.client import ReadError, parse_retry_after, read_limited
from agent.http.secrets import bearer_token

#: every reason a send can fail for; the exporter declares them all at zero
SEND_FAILURE_REASONS = ("connection", "timeout", "tls", "unauthorized", "rate_limited", "unavailable",
                        "server_error", "refused", "http_error")
#: answers that say the body itself can never be accepted (bad body, too large, unsupported type)
_REFUSED = frozenset({400, 413, 415, 422})
NDJSON = "application/x-ndjson"
MAX_REPLY_BYTES = 64 << 10


@dataclass(frozen=True)
class Outcome:
    """A send's result: ``ok``, or the failure ``reason``; ``retry_after`` when the gateway asked for a pause."""

    ok: bool
    reason: str = ""
    status: int = 0
    retry_after: float | None = None

    @property
    def refused(self) -> bool:
        return self.reason == "refused"

    @property
    def reached(self) -> bool:
        """The gateway answered and took the token (``goodhart_up{component="gateway"}``)."""
        return self.ok or self.reason in ("rate_limited", "refused")


def classify(status: int, retry_after: str | None) -> Outcome:
    """What an HTTP status means for the batch.

    >>> classify(202, None).ok, classify(401, None).reason, classify(429, "3").retry_after
    (True, 'unauthorized', 3.0)
    >>> classify(413, None).refused, classify(404, None).reason, classify(502, None).reason
    (True, 'http_error', 'server_error')
    """
    if 200 <= status < 300:
        return Outcome(True, status=status)
    if status in (401, 403):
        return Outcome(False, "unauthorized", status)
    if status in (429, 503):
        return Outcome(False, "rate_limited" if status == 429 else "unavailable", status,
                       parse_retry_after(retry_after))
    if status in _REFUSED:
        return Outcome(False, "refused", status)
    return Outcome(False, "server_error" if status >= 500 else "http_error", status)


def setting_problems(settings: ForwardConfig, environ: Mapping[str, str] | None = None) -> list[str]:
    """One line per secret or file the forwarder will need and cannot read here (``check-config`` warns)."""
    problems = []
    try:
        bearer_token(settings.token_env, settings.token_file, prefix="forward", environ=environ)
    except ConfigError as err:
        problems += err.problems
    if settings.ca_file and not os.access(settings.ca_file, os.R_OK):
        problems.append(f"forward.ca_file: cannot read {settings.ca_file}")
    return problems


class GatewayClient:
    """POSTs NDJSON batches (gzip by default) with the bearer token, verifying TLS as configured."""

    def __init__(self, settings: ForwardConfig, token: str | None) -> None:
        self.url = settings.url
        self.timeout = settings.timeout_seconds
        self.gzip = settings.compression == "gzip"
        import requests  # only a forwarder needs it

        self.session = requests.Session()
        self.session.verify = settings.ca_file if settings.ca_file else settings.verify_tls
        self.headers = {"Content-Type": NDJSON, "Accept": "application/json"}
        if self.gzip:
            self.headers["Content-Encoding"] = "gzip"
        if token:
            self.headers["Authorization"] = f"Bearer {token}"

    @classmethod
    def from_config(cls, settings: ForwardConfig) -> GatewayClient:
        """Reads the token from its variable or file: a missing one (or an unreadable CA file) is a
        config error naming its key."""
        token = bearer_token(settings.token_env, settings.token_file, prefix="forward")
        if settings.ca_file and not os.access(settings.ca_file, os.R_OK):
            raise ConfigError([f"forward.ca_file: cannot read {settings.ca_file}"])
        return cls(settings, token)

    def body(self, records: list[bytes]) -> bytes:
        data = b"\n".join(records) + b"\n"
        return gzip.compress(data, compresslevel=6, mtime=0) if self.gzip else data

    def send(self, records: list[bytes]) -> Outcome:
        import requests

        deadline = time.monotonic() + self.timeout
        try:
            resp = self.session.post(self.url, data=self.body(records), headers=self.headers,
                                     timeout=self.timeout, stream=True)
        except requests.exceptions.SSLError:
            return Outcome(False, "tls")
        except requests.exceptions.Timeout:
            return Outcome(False, "timeout")
        except requests.exceptions.RequestException:
            return Outcome(False, "connection")
        with resp:
            # Drain the reply so the connection is reused; the status says what happened to the batch.
            with contextlib.suppress(ReadError):
                read_limited(resp, MAX_REPLY_BYTES, deadline)
            return classify(resp.status_code, resp.headers.get("Retry-After"))

    def close(self) -> None:
        self.session.close()
