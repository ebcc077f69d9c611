"""Records pulled from an HTTP endpoint (the app, or an observability store) page by page.

Each :meth:`HttpPullSource.read` fetches one page: ``GET url?<cursor_param>=<cursor>``. The reply
is a JSON object holding the records at ``records_field`` and the next cursor at ``cursor_field``
(a JSON pointer such as ``/page/next`` or a dotted path such as ``next_cursor``), a JSON array, or
NDJSON; for the last two (or with ``cursor_field: null``) the cursor is the last record's
``cursor_record_field`` (``ts`` by default, or ``id``). The page's offset is that cursor: the
pipeline stores the records and the cursor in one transaction and only then calls
:meth:`commit`, so a crash re-fetches at most one page, which the join by id makes harmless.

Pages follow each other immediately until one is empty, carries no new cursor, or repeats the cursor
it was asked with; then the source waits ``poll_seconds`` before asking again. Errors (timeouts,
refused connections, TLS, 429, 5xx, 4xx, bodies that are not JSON or too large) are counted by
reason and answered with exponential backoff with jitter, or exactly the server's ``Retry-After``;
while backing off, :meth:`read` returns an empty batch without touching the network.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests

from agent import __version__
from agent.config import Config, ConfigError, SourceConfig
from agent.core import lookup
from agent.http.client import ReadError, backoff_delay, parse_retry_after, read_limited
from agent.http.media import NDJSON_TYPES, media_type
from agent.http.secrets import bearer_token, from_env, from_file
from agent.sources.base import Batch, Source
from agent.sources.http_push import as_items

log = logging.getLogger(__name__)

#: reasons counted in ``goodhart_source_errors_total`` for this source, declared at zero
ERROR_REASONS = ("timeout", "connection", "tls", "http_429", "http_5xx", "http_4xx", "bad_body", "too_large")


class PullError(Exception):
    """One failed fetch: ``reason`` for the error counter, ``retry_after`` when the server said."""

    def __init__(self, reason: str, detail: str = "", retry_after: float | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.retry_after = retry_after


@dataclass
class Page:
    items: list[bytes | dict[str, Any]] = field(default_factory=list)
    too_large: int = 0
    cursor: Any = None  # the next cursor, None when the reply gave none


class HttpPullSource(Source):
    name = "http_pull"

    def __init__(self, settings: SourceConfig, max_record_bytes: int, offset: dict[str, Any] | None = None,
                 headers: Mapping[str, str] | None = None, clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        """``headers`` are sent with every request (resolved secrets included); ``clock`` paces backoff."""
        super().__init__()
        self.errors.update(dict.fromkeys(ERROR_REASONS, 0))
        if not settings.url:
            raise ConfigError(["source.url: required when type is http_pull"])
        self.settings = settings
        self.url = settings.url
        self.max_record_bytes = max_record_bytes
        self.clock = clock
        self.rng = rng or random.Random()
        self.cursor: Any = offset.get("cursor") if offset else settings.cursor_start
        self.session = requests.Session()
        self.session.headers["User-Agent"] = f"goodhart-agent/{__version__}"
        self.session.headers.update(headers or {})
        self.failures = 0
        self.not_before = 0.0  # no request before this clock time (backoff, or the poll interval)
        self._up = False
        self._where = _loggable(self.url)
        if not settings.verify_tls:
            log.warning("TLS certificates of the pull URL are not verified", extra={"fields": {"url": self._where}})

    @classmethod
    def from_config(cls, config: Config, offset: dict[str, Any] | None, settings: SourceConfig | None = None,
                    key: str = "source") -> HttpPullSource:
        """Built from ``settings`` (default ``config.source``); ``key`` is its path in the config, for errors."""
        s = settings or config.source
        if s is None:
            raise ConfigError(["source: required"])
        headers = dict(s.headers)
        for name, var in s.headers_env.items():
            headers[name] = from_env(var, f"{key}.headers_env.{name}")
        for name, path in s.headers_file.items():
            headers[name] = from_file(path, f"{key}.headers_file.{name}")
        token = bearer_token(s.token_env, s.token_file)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return cls(s, config.limits.max_record_bytes, offset, headers)

    # -- one page ------------------------------------------------------------------------------------
    def read(self, max_items: int) -> Batch:
        """The next page (its size is the server's: a cursor cannot split it), or nothing while waiting."""
        now = self.clock()
        if now < self.not_before:
            return Batch()
        sent = self.cursor
        try:
            page = self._fetch(sent)
        except PullError as err:
            self._failed(err, now)
            return Batch()
        if self.failures or not self._up:
            log.info("pull source reachable", extra={"fields": {"url": self._where}})
        self.failures = 0
        self._up = True
        offset, more = self._advance(sent, page)
        if not more:
            self.not_before = now + self.settings.poll_seconds
        return Batch(items=page.items, offset=offset, too_large=page.too_large)

    def _advance(self, sent: Any, page: Page) -> tuple[dict[str, Any] | None, bool]:
        """The offset after ``page`` (None: unchanged) and whether the next page follows at once."""
        moved = page.cursor is not None and page.cursor != sent
        return ({"cursor": page.cursor} if moved else None), bool(page.items) and moved

    def commit(self, offset: dict[str, Any] | None) -> None:
        if offset is not None:
            self.cursor = offset["cursor"]

    def _failed(self, err: PullError, now: float) -> None:
        self.count_error(err.reason)
        self.failures += 1
        if err.retry_after is not None:
            delay = err.retry_after
        else:
            delay = backoff_delay(self.failures, self.settings.backoff_initial_seconds,
                                  self.settings.backoff_max_seconds, self.rng)
        self.not_before = now + delay
        self._up = err.reason == "http_429"  # throttled, but reachable
        log.warning("pull failed", extra={"fields": {"url": self._where, "reason": err.reason, "error": str(err),
                                                     "failures": self.failures, "retry_in_seconds": round(delay, 3)}})

    def _query(self, cursor: Any) -> dict[str, str]:
        """The query parameters of the request for the page at ``cursor``."""
        params = dict(self.settings.params)
        if cursor is not None:
            params[self.settings.cursor_param] = _cursor_text(cursor)
        return params

    def _fetch(self, cursor: Any) -> Page:
        s = self.settings
        params = self._query(cursor)
        verify: bool | str = s.ca_bundle if (s.verify_tls and s.ca_bundle) else s.verify_tls
        deadline = time.monotonic() + s.timeout_seconds
        try:
            with self.session.get(self.url, params=params, timeout=s.timeout_seconds, verify=verify,
                                  stream=True) as resp:
                status = resp.status_code
                if status == 429 or status >= 500:
                    raise PullError("http_429" if status == 429 else "http_5xx", f"status {status}",
                                    parse_retry_after(resp.headers.get("Retry-After")))
                if status >= 400:
                    raise PullError("http_4xx", f"status {status}")
                if status == 204:
                    return Page()
                try:
                    body = read_limited(resp, s.max_reply_bytes, deadline)
                except ReadError as err:
                    raise PullError(err.reason, err.detail) from None
                content_type = resp.headers.get("Content-Type", "")
        except requests.exceptions.SSLError as err:
            raise PullError("tls", type(err).__name__) from None
        except requests.exceptions.Timeout as err:
            raise PullError("timeout", type(err).__name__) from None
        except requests.exceptions.RequestException as err:
            raise PullError("connection", type(err).__name__) from None
        return self._decode(body, content_type)

    # -- decoding ---------------------------------------------------------------------------------------
    def _decode(self, body: bytes, content_type: str) -> Page:
        kind = media_type(content_type)
        if kind in NDJSON_TYPES:
            return self._decode_lines(body)
        if not body.strip():
            return Page()
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):  # not UTF-8, not JSON, or an integer over 4,300 digits
            raise PullError("bad_body", "reply is neither JSON nor NDJSON") from None
        if isinstance(doc, list):
            return Page(items=as_items(doc), cursor=self._record_cursor(doc))
        if not isinstance(doc, dict):
            raise PullError("bad_body", "reply is not a JSON object or array")
        records = lookup(doc, self.settings.records_field)
        if not isinstance(records, list):
            raise PullError("bad_body", f"no list of records at {self.settings.records_field}")
        if self.settings.cursor_field is None:
            return Page(items=as_items(records), cursor=self._record_cursor(records))
        return Page(items=as_items(records), cursor=_scalar(lookup(doc, self.settings.cursor_field)))

    def _decode_lines(self, body: bytes) -> Page:
        page = Page()
        decoded: list[Any] = []
        for raw in body.split(b"\n"):
            line = raw.strip()
            if not line:
                continue
            if len(line) > self.max_record_bytes:
                page.too_large += 1
                continue
            try:
                obj = json.loads(line)
            except (ValueError, RecursionError):  # not UTF-8, not JSON, or an integer over 4,300 digits
                page.items.append(line)  # the parser rejects it as not_json
                continue
            page.items.append(obj)
            decoded.append(obj)
        page.cursor = self._record_cursor(decoded)
        return page

    def _record_cursor(self, records: list[Any]) -> Any:
        """The last record's ``cursor_record_field``: the position after the newest record of the page."""
        for record in reversed(records):
            value = _scalar(lookup(record, self.settings.cursor_record_field) if isinstance(record, dict) else None)
            if value is not None:
                return value
        return None

    # -- state ------------------------------------------------------------------------------------------------
    def close(self) -> None:
        self.session.close()

    @property
    def up(self) -> bool:
        return self._up


def _scalar(value: Any) -> str | int | float | None:
    """A usable cursor value: a non-empty string or a number; anything else means "no cursor"."""
    if isinstance(value, str | int | float) and not isinstance(value, bool) and value != "":
        return value
    return None


def _loggable(url: str) -> str:
    """The URL without credentials, query or fragment: logs never carry a secret that rode in the URL.

    >>> _loggable("https://user:pw@logs.example:8443/v1/records?api_key=k#x")
    'https://logs.example:8443/v1/records'
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _cursor_text(cursor: Any) -> str:
    """A cursor as a query value: integral floats without ``.0`` (``1790000123``), others as they are."""
    if isinstance(cursor, float) and math.isfinite(cursor) and cursor.is_integer():
        return str(int(cursor))
    return str(cursor)
