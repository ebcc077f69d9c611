"""The agent's HTTP listener: ``/metrics``, ``/healthz``, ``/readyz``, ``/``, plus routes others add.

``prometheus_client.start_http_server`` answers every path with metrics; a sidecar needs probes
and a few local endpoints too, so this is a small route table on the standard library's threading
server. Handlers get a :class:`Request` and return a :class:`Response`; they never see sockets.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder

log = logging.getLogger(__name__)

MAX_BODY_DEFAULT = 1 << 20


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
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
Admit = Callable[[Request], AbstractContextManager[Response | None]]


class HttpServer:
    """Routes ``(method, path)`` to handlers; serves in daemon threads until :meth:`stop`."""

    def __init__(self, host: str, port: int, max_body: int = MAX_BODY_DEFAULT) -> None:
        self.routes: dict[tuple[str, str], Handler] = {}
        self.body_limits: dict[tuple[str, str], int] = {}
        self.admitters: dict[tuple[str, str], Admit] = {}
        self.max_body = max_body
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "goodhart-agent"

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("http " + format, *args)

            def _serve(self, method: str) -> None:
                path, _, query = self.path.partition("?")
                handler = server.routes.get((method, path))
                if handler is None:
                    allowed = sorted(m for (m, p) in server.routes if p == path)
                    resp = (Response.text("method not allowed\n", 405) if allowed
                            else Response.text("not found\n", 404))
                    if allowed:
                        resp.headers["Allow"] = ", ".join(allowed)
                    self._drain()
                    return self._send(resp)
                limit = server.body_limits.get((method, path), server.max_body)
                length = self.headers.get("Content-Length")
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    return self._send(Response.text("chunked bodies are not accepted; send Content-Length\n", 411),
                                      close=True)
                size = int(length) if length and length.isdigit() else 0
                admit = server.admitters.get((method, path))
                if admit is None:
                    return self._handle(handler, method, path, query, size, limit)
                head = Request(method, path, query, {k.lower(): v for k, v in self.headers.items()}, b"",
                               self.client_address[0])
                with admit(head) as refused:
                    if refused is not None:  # refused on its headers: the body is never kept
                        if size > limit:
                            return self._send(refused, close=True)
                        self._discard(size)
                        return self._send(refused)
                    self._handle(handler, method, path, query, size, limit)

            def _handle(self, handler: Handler, method: str, path: str, query: str, size: int, limit: int) -> None:
                if size > limit:
                    return self._send(Response.json({"error": "body too large", "limit_bytes": limit}, 413),
                                      close=True)
                body = self.rfile.read(size) if size else b""
                request = Request(method, path, query, {k.lower(): v for k, v in self.headers.items()}, body,
                                  self.client_address[0])
                try:
                    resp = handler(request)
                except Exception:
                    log.exception("handler failed", extra={"fields": {"path": path}})
                    resp = Response.text("internal error\n", 500)
                self._send(resp)

            def _discard(self, size: int) -> None:
                """Read and drop a body in small chunks: closing with unread data resets the connection,
                and the client may lose the reply with it."""
                while size > 0:
                    chunk = self.rfile.read(min(size, 1 << 16))
                    if not chunk:
                        return
                    size -= len(chunk)

            def _drain(self) -> None:
                length = self.headers.get("Content-Length")
                if length and length.isdigit() and int(length) <= server.max_body:
                    self.rfile.read(int(length))

            def _send(self, resp: Response, close: bool = False) -> None:
                self.send_response(resp.status)
                self.send_header("Content-Type", resp.content_type)
                self.send_header("Content-Length", str(len(resp.body)))
                for name, value in resp.headers.items():
                    self.send_header(name, value)
                if close:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(resp.body)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_HEAD(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

        class _Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        if ":" in host:
            _Server.address_family = __import__("socket").AF_INET6
        self.httpd = _Server((host, port), _Handler)
        self.port = self.httpd.server_address[1]
        self._thread: threading.Thread | None = None

    def route(self, method: str, path: str, handler: Handler, max_body: int | None = None,
              admit: Admit | None = None) -> None:
        """``admit`` sees the request without its body first; a Response it yields refuses the request
        unread (connection closed), None lets it through, and the handler runs inside its context."""
        self.routes[(method, path)] = handler
        if max_body is not None:
            self.body_limits[(method, path)] = max_body
        if admit is not None:
            self.admitters[(method, path)] = admit

    def start(self) -> None:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


INDEX_PAGE = """<!doctype html><html><head><title>goodhart-agent</title></head><body>
<h1>goodhart-agent {version}</h1>
<ul><li><a href="/metrics">/metrics</a></li><li><a href="/healthz">/healthz</a></li>
<li><a href="/readyz">/readyz</a></li><li><a href="/v1/events">/v1/events</a> (recent alarm events)</li></ul>
</body></html>
"""


def add_standard_routes(server: HttpServer, registry: CollectorRegistry, ready: Callable[[], tuple[bool, str]],
                        version: str) -> None:
    """The endpoints every agent listener has."""

    def metrics(request: Request) -> Response:
        accept = request.headers.get("accept", "")
        if "application/openmetrics-text" in accept:
            encoder, content_type = choose_encoder(accept)
            return Response(200, encoder(registry), content_type)
        # The classic text format, which every Prometheus 2.x understands.
        return Response(200, generate_latest(registry), CONTENT_TYPE_PLAIN_0_0_4)

    def healthz(_: Request) -> Response:
        return Response.text("ok\n")

    def readyz(_: Request) -> Response:
        ok, reason = ready()
        return Response.text(("ready" if ok else f"not ready: {reason}") + "\n", 200 if ok else 503)

    def index(_: Request) -> Response:
        return Response(200, INDEX_PAGE.format(version=version).encode(), "text/html; charset=utf-8")

    server.route("GET", "/metrics", metrics)
    server.route("GET", "/healthz", healthz)
    server.route("GET", "/readyz", readyz)
    server.route("GET", "/", index)
