"""The agent's HTTP listener: a route table on the standard library's threading server.

``prometheus_client.start_http_server`` answers every path with metrics; a sidecar needs probes
and a few local endpoints too. Handlers get a :class:`Request` and return a :class:`Response`; they
never see sockets. The server enforces what every route needs before a handler runs: the route
exists (404, or 405 with ``Allow``), the body is framed by exactly one valid Content-Length (411
for chunked or none on a POST, 400 for a duplicate or invalid one, each closing the connection so
no bytes of a body are ever read as a next request) and fits the route's limit (413, answered
before the body is read), and the route's admission hook lets it in. The connection itself is held
to :class:`~agent.http.wire.ServerLimits`: deadlines for headers, body and keep-alive idling, a
header budget (431), and a cap on open connections (503 at accept). Every error answer is counted
by status and every dropped connection by reason, for ``goodhart_http_*``.

The standard library's server is kept, fixed: what it lacked is ~150 lines here, in
:mod:`agent.http.wire` and in :mod:`agent.http.head` (a lean, strict header parser, and answers
written in one piece), against a new dependency and a rewrite of the handler model.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agent.http.head import BadRequest, parse_fields, parse_request_line
from agent.http.loop import AcceptLoop
from agent.http.wire import CONTENT_LENGTH, HeaderReader, HeaderTooLarge, ServerLimits, read_body, response_head

log = logging.getLogger(__name__)

MAX_BODY_DEFAULT = 1 << 20
#: reasons a connection is dropped without a handler's answer (``goodhart_http_connections_dropped_total``)
DROP_REASONS = ("timeout", "disconnect", "over_limit")
BUSY_REPLY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
              b"Content-Length: 21\r\nRetry-After: 1\r\nConnection: close\r\n\r\ntoo many connections\n")


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    client: str

    @property
    def is_loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.client).is_loopback
        except ValueError:
            return False


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        return cls(status, (json.dumps(payload, sort_keys=True) + "\n").encode(), "application/json",
                   headers or {})

    @classmethod
    def text(cls, text: str, status: int = 200) -> Response:
        return cls(status, text.encode())


Handler = Callable[[Request], Response]
#: Sees the request without its body; yields a Response to refuse it, None to let the handler run inside.
Admit = Callable[[Request], AbstractContextManager[Response | None]]


@dataclass(frozen=True)
class Route:
    handler: Handler
    max_body: int | None = None  # None: the server's default
    admit: Admit | None = None


class RoutingServer(ThreadingHTTPServer):
    """The socket server holding the route table; one daemon thread per connection."""

    daemon_threads = True
    block_on_close = False  # closing never waits on a slow client's thread
    allow_reuse_address = True
    #: the kernel's accept queue (the standard library's 5 leaves a burst of clients in SYN retries
    #: instead of reaching the connection cap, which answers the excess 503 at once)
    request_queue_size = 128

    def __init__(self, host: str, port: int, max_body: int, limits: ServerLimits) -> None:
        if ":" in host:  # an IPv6 literal
            self.address_family = socket.AF_INET6
        self.routes: dict[tuple[str, str], Route] = {}
        self.max_body = max_body
        self.limits = limits
        self.open_connections = 0
        self.errors: dict[int, int] = {}
        self.dropped: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        self._lock = threading.Lock()
        super().__init__((host, port), RequestHandler)

    def count_status(self, status: int) -> None:
        with self._lock:
            self.errors[status] = self.errors.get(status, 0) + 1

    def count_drop(self, reason: str, client: Any) -> None:
        """One debug line and one count per dropped connection, never a traceback."""
        with self._lock:
            self.dropped[reason] += 1
        log.debug("http connection dropped", extra={"fields": {"reason": reason, "client": str(client)}})

    def process_request(self, request: Any, client_address: Any) -> None:
        """A connection over ``max_connections`` gets a 503 at once and is closed, without a thread."""
        with self._lock:
            full = self.open_connections >= self.limits.max_connections
            if not full:
                self.open_connections += 1
        if not full:
            return super().process_request(request, client_address)
        self.count_status(503)
        self.count_drop("over_limit", client_address)
        try:
            request.setblocking(False)  # a fresh socket's send buffer is empty: this never waits
            request.sendall(BUSY_REPLY)
        except OSError:
            pass
        self.shutdown_request(request)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._lock:
                self.open_connections -= 1

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up or stalls mid-request is routine, not a traceback on stderr."""
        err = sys.exc_info()[1]
        if isinstance(err, (ConnectionError, TimeoutError)):
            return self.count_drop("timeout" if isinstance(err, TimeoutError) else "disconnect", client_address)
        super().handle_error(request, client_address)

    def allowed(self, path: str) -> list[str]:
        """The methods routed for ``path`` (the ``Allow`` header of a 405)."""
        return sorted(m for (m, p) in self.routes if p == path)


class RequestHandler(BaseHTTPRequestHandler):
    """One connection: finds the route, enforces its limits and admission, calls its handler."""

    protocol_version = "HTTP/1.1"
    server_version = "goodhart-agent"
    server: RoutingServer

    def setup(self) -> None:
        """Nagle off: the standard library's error answers go out as two writes (head, body), and with
        Nagle on the second waits for the client's delayed ACK (~40 ms on a keep-alive connection)."""
        super().setup()
        if self.connection.family in (socket.AF_INET, socket.AF_INET6):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http " + format, *args)

    def send_response(self, code: int, message: str | None = None) -> None:
        """Every answer goes through here, the standard library's own errors too: count the errors."""
        if code >= 400:
            self.server.count_status(code)
        super().send_response(code, message)

    def handle_one_request(self) -> None:
        """The standard library's loop step, with the connection held to the server's limits."""
        limits = self.server.limits
        raw = self.rfile
        first = not hasattr(self, "raw_requestline")
        try:  # wait for the next request's first byte: a keep-alive connection may idle, not forever
            self.connection.settimeout(limits.header_timeout if first else limits.idle_timeout)
            if not raw.peek(1):  # type: ignore[attr-defined]
                self.close_connection = True
                return
        except (TimeoutError, ConnectionError) as err:
            self.close_connection = True
            if first or isinstance(err, ConnectionError):
                self.server.count_drop("timeout" if isinstance(err, TimeoutError) else "disconnect",
                                       self.client_address)
            return
        if not self._read_head(raw, time.monotonic() + limits.header_timeout):
            return
        method = getattr(self, "do_" + self.command, None)
        if method is None:
            self.send_error(501, f"unsupported method {self.command!r}")
            return
        method()
        self.wfile.flush()

    def _read_head(self, raw: Any, deadline: float) -> bool:
        """Request line and headers within the budget and deadline; False when answered or dropped."""
        self.rfile = reader = HeaderReader(raw, self.connection, self.server.limits.max_header_bytes,  # type: ignore[assignment]
                                           deadline)
        try:
            self.raw_requestline = reader.readline(65537)
            if not self.raw_requestline:
                self.close_connection = True
                return False
            return self.parse_request()
        except HeaderTooLarge:  # the request line alone
            self.requestline, self.request_version, self.command = "", "", ""
            self.send_error(414)
            return False
        except TimeoutError:
            self.close_connection = True
            self.server.count_drop("timeout", self.client_address)
            return False
        finally:
            self.rfile = raw

    def parse_request(self) -> bool:
        """The standard library's, with :mod:`agent.http.head` for the headers instead of the email
        package: strict (400 for a line that is not a field) and a fifth of a small push's time less."""
        self.command = None  # type: ignore[assignment]  # as the standard library: None until the line is read
        self.request_version, self.close_connection = self.default_request_version, True
        self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        try:
            line = parse_request_line(self.requestline)
            if line is None:
                return False
            self.command, self.path, self.request_version = line.command, line.path, line.version
            self.close_connection = line.close
            self.headers = parse_fields(self.rfile.header_lines())  # type: ignore[attr-defined, assignment]
        except (BadRequest, HeaderTooLarge) as err:  # HeaderTooLarge: the headers went over the budget
            if self.command is None:  # the request line: answered as far as its version was read
                self.request_version = getattr(err, "version", self.request_version)
            self.close_connection = True
            self.send_error(*((err.status, err.message) if isinstance(err, BadRequest) else (431, "Line too long")))
            return False
        connection = (self.headers.get("Connection") or "").lower()
        self.close_connection = connection == "close" or (self.close_connection and connection != "keep-alive")
        expect = (self.headers.get("Expect") or "").lower()
        if expect == "100-continue" and self.request_version >= "HTTP/1.1":
            return bool(self.handle_expect_100())
        return True

    def do_GET(self) -> None:
        self._serve("GET")

    def do_HEAD(self) -> None:
        self._serve("GET")  # a GET route answers HEAD; _send leaves the body out

    def do_POST(self) -> None:
        self._serve("POST")

    def _framing(self, method: str) -> int | Response:
        """The body's length from its one valid Content-Length, or the refusal (the connection closes:
        bytes of an unframed body must never be read as the next request)."""
        if "Transfer-Encoding" in self.headers:
            return Response.text("chunked bodies are not accepted; send Content-Length\n", 411)
        lengths = self.headers.get_all("Content-Length") or []
        if len(lengths) > 1:
            return Response.text("more than one Content-Length\n", 400)
        if not lengths:
            return Response.text("Content-Length required\n", 411) if method == "POST" else 0
        if not CONTENT_LENGTH.fullmatch(lengths[0].strip()):
            return Response.text("invalid Content-Length\n", 400)
        return int(lengths[0])

    def _serve(self, method: str) -> None:
        path, _, query = self.path.partition("?")
        size = self._framing(method)
        if isinstance(size, Response):
            return self._send(size, close=True)
        route = self.server.routes.get((method, path))
        if route is None:
            return self._unrouted(path, size)
        limit = self.server.max_body if route.max_body is None else route.max_body
        if route.admit is None:
            return self._handle(route.handler, method, path, query, size, limit)
        with route.admit(self._request(method, path, query, b"")) as refused:
            if refused is None:
                return self._handle(route.handler, method, path, query, size, limit)
            if size > limit:  # refused on its headers: the body is never kept, nor read when too large
                return self._send(refused, close=True)
            self._discard(size)
            self._send(refused)

    def _unrouted(self, path: str, size: int) -> None:
        allowed = self.server.allowed(path)
        resp = Response.text("method not allowed\n", 405) if allowed else Response.text("not found\n", 404)
        if allowed:
            resp.headers["Allow"] = ", ".join(allowed)
        if size > self.server.max_body:
            return self._send(resp, close=True)
        self._discard(size)
        self._send(resp)

    def _handle(self, handler: Handler, method: str, path: str, query: str, size: int, limit: int) -> None:
        if size > limit:
            return self._send(Response.json({"error": "body too large", "limit_bytes": limit}, 413), close=True)
        body = self._read(size)
        if body is None:
            return
        request = self._request(method, path, query, body)
        try:
            resp = handler(request)
        except Exception:
            log.exception("handler failed", extra={"fields": {"path": path}})
            resp = Response.text("internal error\n", 500)
        self._send(resp)

    def _read(self, size: int) -> bytes | None:
        """The whole body within the body deadline; None (connection dropped and counted) otherwise."""
        try:
            body = read_body(self.rfile, self.connection, size, self.server.limits.body_timeout)
        except TimeoutError:
            body = None
        if body is None or len(body) < size:
            self.close_connection = True
            self.server.count_drop("timeout" if body is None else "disconnect", self.client_address)
            return None
        return body

    def _request(self, method: str, path: str, query: str, body: bytes) -> Request:
        return Request(method, path, query, {k.lower(): v for k, v in self.headers.items()}, body,
                       self.client_address[0])

    def _discard(self, size: int) -> None:
        """Read and drop a body (at most a route's limit): closing with unread data resets the
        connection, and the client may lose the reply with it."""
        self._read(size)

    def _send(self, resp: Response, close: bool = False) -> None:
        """The answer in one write (head and body in one segment: half the syscalls of writing them apart)."""
        if resp.status >= 400:
            self.server.count_status(resp.status)
        self.log_request(resp.status, len(resp.body))
        if close:
            self.close_connection = True
        head = response_head(resp.status, self.responses.get(resp.status, ("",))[0], self.version_string(),
                             resp.content_type, len(resp.body), resp.headers, close)
        try:
            if self.request_version == "HTTP/0.9":  # no head at all, as the standard library answers it
                head = b""
            self.wfile.write(head if self.command == "HEAD" else head + resp.body)
        except (BrokenPipeError, ConnectionResetError):  # the client left first; nothing to answer
            self.close_connection = True


class HttpServer:
    """Routes ``(method, path)`` to handlers; serves in daemon threads from :meth:`start` to :meth:`stop`."""

    def __init__(self, host: str, port: int, max_body: int = MAX_BODY_DEFAULT,
                 limits: ServerLimits | None = None) -> None:
        """Binds now (so a taken port fails here); ``max_body`` is the limit of routes that set none."""
        self.httpd = RoutingServer(host, port, max_body, limits or ServerLimits())
        self.port: int = self.httpd.server_address[1]
        self._loop: AcceptLoop | None = None

    @property
    def max_body(self) -> int:
        return self.httpd.max_body

    @property
    def limits(self) -> ServerLimits:
        return self.httpd.limits

    @limits.setter
    def limits(self, limits: ServerLimits) -> None:
        """New limits for connections from now on (the agent taking over never-down mode's listener)."""
        self.httpd.limits = limits

    def route(self, method: str, path: str, handler: Handler, max_body: int | None = None,
              admit: Admit | None = None) -> None:
        """``admit`` sees the request without its body first; a Response it yields refuses the request
        unread (connection closed), None lets it through, and the handler runs inside its context."""
        self.httpd.routes[(method, path)] = Route(handler, max_body, admit)

    def start(self, poll_interval: float | None = None) -> None:
        """Serve in a daemon thread, woken by connections and :meth:`stop` only (``poll_interval``: also
        every so many seconds, as ``serve_forever`` was)."""
        self._loop = AcceptLoop(self.httpd, poll_interval)
        self._loop.start()

    def stop(self) -> None:
        """Stop serving and release the port (also for a server that was bound but never started)."""
        if self._loop is not None:
            self._loop.stop()
            self._loop = None
        self.httpd.server_close()
