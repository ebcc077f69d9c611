"""The agent's HTTP listener: a route table on the standard library's threading server.

``prometheus_client.start_http_server`` answers every path with metrics; a sidecar needs probes
and a few local endpoints too. Handlers get a :class:`Request` and return a :class:`Response`; they
never see sockets. The server enforces what every route needs before a handler runs: the route
exists (404, or 405 with ``Allow``), the body has a length (411 for chunked) and fits the route's
limit (413, answered before the body is read), and the route's admission hook lets it in.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import sys
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

MAX_BODY_DEFAULT = 1 << 20
DISCARD_CHUNK = 1 << 16


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
    allow_reuse_address = True

    def __init__(self, host: str, port: int, max_body: int) -> None:
        if ":" in host:  # an IPv6 literal
            self.address_family = socket.AF_INET6
        self.routes: dict[tuple[str, str], Route] = {}
        self.max_body = max_body
        super().__init__((host, port), RequestHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-request is routine, not a traceback on stderr."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            log.debug("http client went away", extra={"fields": {"client": str(client_address)}})
            return
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
        """Nagle off: headers and body go out as separate writes, and with Nagle on the second waits
        for the client's delayed ACK (~40 ms per request on a keep-alive connection)."""
        super().setup()
        if self.connection.family in (socket.AF_INET, socket.AF_INET6):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http " + format, *args)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_HEAD(self) -> None:
        self._serve("GET")  # a GET route answers HEAD; _send leaves the body out

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        path, _, query = self.path.partition("?")
        route = self.server.routes.get((method, path))
        if route is None:
            return self._unrouted(path)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._send(Response.text("chunked bodies are not accepted; send Content-Length\n", 411),
                              close=True)
        limit = self.server.max_body if route.max_body is None else route.max_body
        length = self.headers.get("Content-Length")
        size = int(length) if length and length.isdigit() else 0
        if route.admit is None:
            return self._handle(route.handler, method, path, query, size, limit)
        with route.admit(self._request(method, path, query, b"")) as refused:
            if refused is None:
                return self._handle(route.handler, method, path, query, size, limit)
            if size > limit:  # refused on its headers: the body is never kept, nor read when too large
                return self._send(refused, close=True)
            self._discard(size)
            self._send(refused)

    def _unrouted(self, path: str) -> None:
        allowed = self.server.allowed(path)
        resp = Response.text("method not allowed\n", 405) if allowed else Response.text("not found\n", 404)
        if allowed:
            resp.headers["Allow"] = ", ".join(allowed)
        self._send(resp, close=not self._drain())

    def _handle(self, handler: Handler, method: str, path: str, query: str, size: int, limit: int) -> None:
        if size > limit:
            return self._send(Response.json({"error": "body too large", "limit_bytes": limit}, 413), close=True)
        request = self._request(method, path, query, self.rfile.read(size) if size else b"")
        try:
            resp = handler(request)
        except Exception:
            log.exception("handler failed", extra={"fields": {"path": path}})
            resp = Response.text("internal error\n", 500)
        self._send(resp)

    def _request(self, method: str, path: str, query: str, body: bytes) -> Request:
        return Request(method, path, query, {k.lower(): v for k, v in self.headers.items()}, body,
                       self.client_address[0])

    def _discard(self, size: int) -> None:
        """Read and drop a body in small chunks: closing with unread data resets the connection,
        and the client may lose the reply with it."""
        while size > 0:
            chunk = self.rfile.read(min(size, DISCARD_CHUNK))
            if not chunk:
                return
            size -= len(chunk)

    def _drain(self) -> bool:
        """Read a small body nobody will use, so the connection can serve the next request; False when
        the body stays unread (too large, or chunked) and the connection must close."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return False
        length = self.headers.get("Content-Length")
        if not length or not length.isdigit():
            return True
        if int(length) > self.server.max_body:
            return False
        self._discard(int(length))
        return True

    def _send(self, resp: Response, close: bool = False) -> None:
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(len(resp.body)))
        for name, value in resp.headers.items():
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        try:
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(resp.body)
        except (BrokenPipeError, ConnectionResetError):  # the client left first; nothing to answer
            self.close_connection = True


class HttpServer:
    """Routes ``(method, path)`` to handlers; serves in daemon threads from :meth:`start` to :meth:`stop`."""

    def __init__(self, host: str, port: int, max_body: int = MAX_BODY_DEFAULT) -> None:
        """Binds now (so a taken port fails here); ``max_body`` is the limit of routes that set none."""
        self.httpd = RoutingServer(host, port, max_body)
        self.port: int = self.httpd.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def max_body(self) -> int:
        return self.httpd.max_body

    def route(self, method: str, path: str, handler: Handler, max_body: int | None = None,
              admit: Admit | None = None) -> None:
        """``admit`` sees the request without its body first; a Response it yields refuses the request
        unread (connection closed), None lets it through, and the handler runs inside its context."""
        self.httpd.routes[(method, path)] = Route(handler, max_body, admit)

    def start(self, poll_interval: float = 0.5) -> None:
        """Serve in a daemon thread; ``poll_interval`` bounds how long :meth:`stop` waits for it."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": poll_interval},
                                        name="http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and release the port (also for a server that was bound but never started)."""
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread = None
        self.httpd.server_close()
