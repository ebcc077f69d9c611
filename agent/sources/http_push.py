"""Records pushed by the app over HTTP: ``POST /v1/records``.

The app lives in the same pod, so the endpoint has its own listener bound to localhost by default
(``source.listen``, default ``127.0.0.1:10101``), apart from the ``/metrics`` port Prometheus
scrapes; ``source.listen: shared`` serves it on the agent's main listener instead.

*Accepted means persisted*: the handler stores the request's records in one store transaction
through the ``ingest`` callable it is given (``Pipeline.ingest_items`` in the daemon) before it
answers 202, so a record the app saw accepted survives a crash right after the reply. Everything
that can be refused from the headers is refused before the body is held in memory (401 token, 415
type or encoding, 413 size: the body is skipped in small chunks, or not read at all above the size
limit). At most ``source.max_in_flight`` bodies are decoded and ingested at a time, and a slot is
taken only once a body has arrived whole (within ``limits.body_timeout_seconds``), so slow senders
never close the endpoint; a flood costs sockets (``limits.max_connections``) and 429s. A gzip body
(``Content-Encoding: gzip``, what forwarders send) is inflated up to ``source.max_body_bytes`` and
refused (413) beyond, so it cannot cost more memory
than an uncompressed one. :meth:`read` returns nothing: pushes never wait for the ingest
schedule.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Self

from agent.config import PUSH_SHARED_LISTENER, ConfigError, SourceConfig, parse_listen
from agent.http.media import JSON_TYPES, NDJSON_TYPES, media_type
from agent.http.secrets import bearer_token
from agent.http.server import Handler, HttpServer, Request, Response
from agent.http.wire import ServerLimits
from agent.sources.base import Batch, Ingest, Source

log = logging.getLogger(__name__)

PUSH_PATH = "/v1/records"
#: reasons counted in ``goodhart_source_errors_total`` for this source, declared at zero
ERROR_REASONS = ("unauthorized", "unsupported_media_type", "unsupported_encoding", "too_large", "busy", "bad_body",
                 "bad_encoding", "ingest_failed")
#: Content-Encoding values accepted (a forwarder sends gzip); anything else is refused with 415
ENCODINGS = frozenset({"", "identity", "gzip", "x-gzip"})
CLOSE_WAIT_SECONDS = 10.0


class BodyError(ValueError):
    """A request body that cannot be decoded into records (answered 400)."""


class BodyTooLarge(ValueError):
    """A compressed body that inflates beyond the size limit (answered 413)."""


def gunzip_limited(body: bytes, limit: int) -> bytes:
    """A gzip body inflated, refusing more than ``limit`` bytes of output as soon as it gets there.

    A small body can inflate a thousandfold, so the limit is on what comes out, checked while
    inflating; concatenated gzip members (RFC 1952) are read one after the other.

    >>> import gzip
    >>> gunzip_limited(gzip.compress(b"ab") + gzip.compress(b"c"), 10)
    b'abc'
    >>> gunzip_limited(gzip.compress(bytes(100)), 10)
    Traceback (most recent call last):
    ...
    agent.sources.http_push.BodyTooLarge: inflates beyond 10 bytes
    """
    out: list[bytes] = []
    size = 0
    data = body
    while data:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            chunk = inflater.decompress(data, limit - size + 1)
        except zlib.error:
            raise BodyError("body is not valid gzip") from None
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"inflates beyond {limit} bytes")
        if not inflater.eof:
            raise BodyError("body is not valid gzip (truncated)")
        out.append(chunk)
        data = inflater.unused_data.lstrip(b"\0")  # some writers pad members with zeros
    return b"".join(out)


def decode_body(kind: str, body: bytes) -> list[bytes | dict[str, Any]]:
    """The records in a body: decoded objects for JSON, raw lines for NDJSON (the parser decodes them).

    >>> decode_body("application/json", b'[{"id": "a"}, {"id": "b"}]')
    [{'id': 'a'}, {'id': 'b'}]
    >>> decode_body("application/x-ndjson", b'{"id": "a"}\\r\\n\\n{"id": "b"}\\n')
    [b'{"id": "a"}', b'{"id": "b"}']
    """
    if not body.strip():
        raise BodyError("empty body")
    if kind in NDJSON_TYPES:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            raise BodyError("body is not UTF-8") from None
        return [line.strip() for line in body.split(b"\n") if line.strip()]
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):  # not UTF-8, not JSON, or an integer over 4,300 digits
        raise BodyError("body is not valid JSON") from None
    if isinstance(doc, dict):
        return [doc]
    if isinstance(doc, list):
        return as_items(doc)
    raise BodyError("body must be a JSON object or an array of objects")


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_exposure(server: HttpServer, key: str, allowed: bool) -> None:
    """Pushes without a token on a listener reachable beyond localhost change state for anyone who can
    reach it: refused at start unless ``allow_unauthenticated`` says so, and then warned about."""
    host = str(server.httpd.server_address[0])
    if _is_loopback(host):
        return
    if not allowed:
        raise ConfigError([f"{key}.listen: 'shared' serves pushes on {host}, beyond localhost, without a token: "
                           f"set {key}.token_env or {key}.token_file, or {key}.allow_unauthenticated: true"])
    log.warning("push endpoint accepts unauthenticated records beyond localhost (allow_unauthenticated)",
                extra={"fields": {"listen": host, "key": key}})


def as_items(values: list[Any]) -> list[bytes | dict[str, Any]]:
    """Decoded array items for the pipeline: objects as they are, anything else re-encoded so the
    parser rejects it as ``not_object`` (the pipeline parses non-dicts as raw lines)."""
    return [v if isinstance(v, dict) else json.dumps(v).encode() for v in values]


class HttpPushSource(Source):
    name = "http_push"

    def __init__(self, ingest: Ingest, *, listen: str = "127.0.0.1:10101", server: HttpServer | None = None,
                 max_body_bytes: int = 1 << 20, max_in_flight: int = 4, retry_after_seconds: int = 1,
                 token: str | None = None, limits: ServerLimits | None = None) -> None:
        """Serve on ``server`` when given (the agent's listener), else on a new listener at ``listen``
        held to ``limits``."""
        super().__init__()
        self.errors.update(dict.fromkeys(ERROR_REASONS, 0))
        self.ingest = ingest
        self.max_body_bytes = max_body_bytes
        self.max_in_flight = max_in_flight
        self.retry_after_seconds = retry_after_seconds
        self._token = token.encode() if token else None
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._in_flight = 0
        self._count_lock = threading.Lock()
        self._serving = False
        self._own = server is None
        if server is None:
            host, port = parse_listen(listen)
            try:
                server = HttpServer(host, port, max_body=max_body_bytes, limits=limits)
            except OSError as err:
                raise ConfigError([f"source.listen: cannot listen on {listen}: {err.strerror}"]) from None
            if token is None and not _is_loopback(host):
                log.warning("push endpoint listens beyond localhost without a token",
                            extra={"fields": {"listen": listen}})
        self.server = server
        for path, handler in self.routes().items():
            server.route("POST", path, self.slotted(handler), max_body=max_body_bytes, admit=self.admit)

    def routes(self) -> dict[str, Handler]:
        """The POST paths this source serves and their handlers."""
        return {PUSH_PATH: self.handle}

    @classmethod
    def from_config(cls, s: SourceConfig, ingest: Ingest, agent_server: HttpServer | None,
                    key: str = "source", limits: ServerLimits | None = None) -> Self:
        """Built from its config section (``key`` is its path in the config, for errors)."""
        listen = s.listen_address
        shared = listen == PUSH_SHARED_LISTENER
        if shared and agent_server is None:
            raise ConfigError([f"{key}.listen: 'shared' needs the agent's listener"])
        token = bearer_token(s.token_env, s.token_file)
        if shared and token is None:
            assert agent_server is not None
            _check_exposure(agent_server, key, s.allow_unauthenticated)
        made = cls(ingest, listen=listen, server=agent_server if shared else None,
                   max_body_bytes=s.max_body_bytes, max_in_flight=s.max_in_flight,
                   retry_after_seconds=s.retry_after_seconds, token=token,
                   limits=limits)
        made.name = s.source_name
        return made

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def in_flight(self) -> int:
        """Pushes holding a slot right now (being read, waiting for the pipeline, or being stored)."""
        return self._in_flight

    # -- the endpoint ------------------------------------------------------------------------------
    def _refuse(self, reason: str, status: int, message: str, headers: dict[str, str] | None = None,
                request: Request | None = None) -> Response:
        self.count_error(reason)
        return self.error_response(status, message, headers, request)

    def error_response(self, status: int, message: str, headers: dict[str, str] | None,
                       request: Request | None) -> Response:
        """The body of a refusal (a JSON error here; OTLP answers with a ``Status`` message)."""
        return Response.json({"error": message}, status, headers)

    def unsupported_media(self, request: Request) -> str | None:
        """Why the body's type or encoding cannot be read, or None when it can."""
        kind = media_type(request.headers.get("content-type", ""))
        if kind not in JSON_TYPES and kind not in NDJSON_TYPES:
            return "Content-Type must be application/json or application/x-ndjson"
        return None

    def _authorized(self, header: str) -> bool:
        assert self._token is not None
        scheme, _, given = header.strip().partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self._token)

    @contextmanager
    def admit(self, request: Request) -> Iterator[Response | None]:
        """Checks that need only the headers, before the body is kept in memory."""
        if self._token is not None and not self._authorized(request.headers.get("authorization", "")):
            yield self._refuse("unauthorized", 401, "missing or wrong bearer token",
                               {"WWW-Authenticate": 'Bearer realm="goodhart-agent"'})
            return
        unsupported = self.unsupported_media(request)
        if unsupported is not None:
            yield self._refuse("unsupported_media_type", 415, unsupported, request=request)
            return
        if request.headers.get("content-encoding", "").strip().lower() not in ENCODINGS:
            yield self._refuse("unsupported_encoding", 415, "Content-Encoding must be gzip or identity")
            return
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body_bytes:
            yield self._refuse("too_large", 413, f"body above {self.max_body_bytes} bytes", request=request)
            return
        yield None

    def slotted(self, handler: Handler) -> Handler:
        """``handler`` run once the body has arrived whole, inside an in-flight slot (429 when none is
        free): clients still sending their bodies, slowly or not, hold no slot."""

        def run(request: Request) -> Response:
            if not self._slots.acquire(blocking=False):
                return self._refuse("busy", 429, "too many pushes in flight, retry later",
                                    {"Retry-After": str(self.retry_after_seconds)}, request)
            with self._count_lock:
                self._in_flight += 1
            try:
                return handler(request)
            finally:
                with self._count_lock:
                    self._in_flight -= 1
                self._slots.release()

        return run

    def handle(self, request: Request) -> Response:
        """Decode, store in one transaction, then answer: the 202 means the records are on disk."""
        body = request.body
        if request.headers.get("content-encoding", "").strip().lower() in ("gzip", "x-gzip"):
            try:
                body = gunzip_limited(body, self.max_body_bytes)
            except BodyTooLarge as err:
                return self._refuse("too_large", 413, f"body {err}")
            except BodyError as err:
                return self._refuse("bad_encoding", 400, str(err))
        try:
            items = decode_body(media_type(request.headers.get("content-type", "")), body)
        except BodyError as err:
            return self._refuse("bad_body", 400, str(err), request=request)
        try:
            result = self.ingest(self.name, items)
        except Exception:
            log.exception("push ingest failed")
            return self._refuse("ingest_failed", 503, "records not stored, retry later",
                                {"Retry-After": str(self.retry_after_seconds)}, request)
        rejected = sum(result.rejected.values())
        return Response.json({"accepted": result.accepted, "rejected": rejected,
                              "reasons": dict(sorted(result.rejected.items()))}, 202)

    # -- lifecycle -----------------------------------------------------------------------------------
    def read(self, max_items: int) -> Batch:
        return Batch()  # pushes are stored as they arrive

    def start(self) -> None:
        if self._own:
            self.server.start()
        self._serving = True

    def close(self) -> None:
        """Stop accepting, then wait (bounded) for pushes already inside so their replies hold."""
        if self._own:
            self.server.stop()
        self._serving = False
        deadline = time.monotonic() + CLOSE_WAIT_SECONDS
        taken = 0
        while taken < self.max_in_flight and self._slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
            taken += 1
        for _ in range(taken):
            self._slots.release()

    @property
    def up(self) -> bool:
        return self._serving
