"""agent.http.server against real sockets on 127.0.0.1: routing, body limits, admission, errors, HEAD."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from agent.http.server import HttpServer, Request, Response


@pytest.fixture
def server() -> Iterator[HttpServer]:
    srv = HttpServer("127.0.0.1", 0, max_body=1024)
    srv.start(poll_interval=0.05)
    yield srv
    srv.stop()


def echo(request: Request) -> Response:
    return Response.json({"method": request.method, "query": request.query, "body": request.body.decode(),
                          "client": request.client, "agent": request.headers.get("user-agent")})


def connect(server: HttpServer) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)


def send_head_only(server: HttpServer, method: str, path: str, headers: dict[str, str]) -> http.client.HTTPResponse:
    """Send a request line and headers but never the body the headers announce; read the reply."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    lines = [f"{method} {path} HTTP/1.1", "Host: test", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    sock.sendall("\r\n".join(lines).encode())
    resp = http.client.HTTPResponse(sock)
    resp.begin()
    resp.read()
    sock.close()
    return resp


# -- routing --------------------------------------------------------------------------------------------------
def test_a_routed_request_reaches_its_handler_with_query_body_and_lowercased_headers(server: HttpServer) -> None:
    server.route("POST", "/echo", echo)
    conn = connect(server)
    conn.request("POST", "/echo?x=1", body=b"hello", headers={"User-Agent": "t/1"})
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.getheader("Content-Type") == "application/json"
    assert json.loads(resp.read()) == {"method": "POST", "query": "x=1", "body": "hello",
                                                     "client": "127.0.0.1", "agent": "t/1"}


def test_an_unknown_path_is_404_and_a_known_path_with_another_method_is_405_with_allow(server: HttpServer) -> None:
    server.route("POST", "/thing", echo)
    server.route("GET", "/thing", echo)
    server.route("GET", "/other", echo)
    conn = connect(server)
    conn.request("GET", "/nowhere")
    resp = conn.getresponse()
    assert (resp.status, resp.read()) == (404, b"not found\n")
    server.route("GET", "/only-get", echo)
    conn.request("POST", "/only-get", body=b"x" * 10)
    resp = conn.getresponse()
    assert resp.status == 405
    assert resp.getheader("Allow") == "GET"
    resp.read()
    conn.request("GET", "/thing")  # the drained body left the connection usable
    assert conn.getresponse().status == 200


def test_allow_lists_every_routed_method_sorted(server: HttpServer) -> None:
    server.route("POST", "/both", echo)
    server.route("GET", "/both", echo)
    resp = send_head_only(server, "DELETE", "/both", {})
    assert resp.status == 501  # no such method at all: the standard library's answer
    server.route("POST", "/post-only", echo)
    conn = connect(server)
    conn.request("GET", "/post-only")
    resp = conn.getresponse()
    assert (resp.status, resp.getheader("Allow")) == (405, "POST")


def test_head_answers_a_get_route_without_a_body(server: HttpServer) -> None:
    server.route("GET", "/page", lambda _: Response.text("twelve bytes"))
    conn = connect(server)
    conn.request("HEAD", "/page")
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.getheader("Content-Length") == "12"
    assert resp.read() == b""
    conn.request("GET", "/page")  # the connection is still in step: no stray body was sent
    assert conn.getresponse().read() == b"twelve bytes"


# -- bodies -----------------------------------------------------------------------------------------------------
def test_a_body_above_the_route_limit_is_refused_413_before_it_is_read(server: HttpServer) -> None:
    called = []
    server.route("POST", "/small", lambda r: called.append(r) or Response.text("ok"), max_body=100)
    resp = send_head_only(server, "POST", "/small", {"Content-Length": "101"})  # the body never comes
    assert resp.status == 413
    assert resp.getheader("Connection") == "close"
    assert called == []


def test_the_server_default_limit_applies_to_routes_without_their_own(server: HttpServer) -> None:
    server.route("POST", "/echo", echo)
    assert send_head_only(server, "POST", "/echo", {"Content-Length": "1025"}).status == 413
    conn = connect(server)
    conn.request("POST", "/echo", body=b"x" * 1024)
    assert conn.getresponse().status == 200


def test_a_chunked_body_is_refused_411(server: HttpServer) -> None:
    server.route("POST", "/echo", echo)
    resp = send_head_only(server, "POST", "/echo", {"Transfer-Encoding": "chunked"})
    assert resp.status == 411
    assert resp.getheader("Connection") == "close"


# -- admission ----------------------------------------------------------------------------------------------------
def test_admission_refuses_on_headers_and_the_handler_runs_inside_an_admitted_context(server: HttpServer) -> None:
    events: list[str] = []

    @contextmanager
    def admit(request: Request) -> Iterator[Response | None]:
        assert request.body == b""  # admission sees headers only
        if request.headers.get("x-deny"):
            yield Response.json({"error": "denied"}, 403)
            return
        events.append("enter")
        yield None
        events.append("exit")

    def handler(request: Request) -> Response:
        events.append(f"handle {request.body.decode()}")
        return Response.text("ok")

    server.route("POST", "/gated", handler, max_body=100, admit=admit)
    conn = connect(server)
    conn.request("POST", "/gated", body=b"secret", headers={"X-Deny": "1"})
    resp = conn.getresponse()
    assert (resp.status, resp.read()) == (403, b'{"error": "denied"}\n')
    assert events == []
    conn.request("POST", "/gated", body=b"fine")  # the refused body was skipped: the connection is in step
    assert conn.getresponse().status == 200
    deadline = time.monotonic() + 5  # the reply is sent inside the context, so "exit" may follow it
    while len(events) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert events == ["enter", "handle fine", "exit"]


def test_admission_refusing_an_oversize_body_answers_without_reading_it(server: HttpServer) -> None:
    @contextmanager
    def deny(_: Request) -> Iterator[Response | None]:
        yield Response.text("busy\n", 429)

    server.route("POST", "/gated", echo, max_body=100, admit=deny)
    resp = send_head_only(server, "POST", "/gated", {"Content-Length": "1000000"})
    assert resp.status == 429
    assert resp.getheader("Connection") == "close"


# -- failures and concurrency ---------------------------------------------------------------------------------------
def test_a_handler_that_raises_is_a_500_and_the_server_keeps_serving(server: HttpServer) -> None:
    def broken(_: Request) -> Response:
        raise RuntimeError("bug")

    server.route("GET", "/broken", broken)
    server.route("GET", "/fine", lambda _: Response.text("fine"))
    conn = connect(server)
    conn.request("GET", "/broken")
    resp = conn.getresponse()
    assert (resp.status, resp.read()) == (500, b"internal error\n")
    conn.request("GET", "/fine")
    assert conn.getresponse().read() == b"fine"


def test_requests_are_served_concurrently(server: HttpServer) -> None:
    release = threading.Event()
    server.route("GET", "/wait", lambda _: Response.text("waited") if release.wait(5) else Response.text("late", 504))
    server.route("GET", "/now", lambda _: Response.text("now"))
    waiting = connect(server)
    waiting.request("GET", "/wait")
    other = connect(server)
    other.request("GET", "/now")
    assert other.getresponse().read() == b"now"  # not stuck behind the waiting request
    release.set()
    assert waiting.getresponse().read() == b"waited"


def test_stop_releases_the_port_also_when_never_started() -> None:
    srv = HttpServer("127.0.0.1", 0)
    port = srv.port
    srv.stop()
    again = HttpServer("127.0.0.1", port)
    again.stop()


def test_a_listener_without_a_poll_interval_serves_and_its_stop_ends_the_accept_loop() -> None:
    """The accept loop sleeps until a connection or stop: nothing wakes it on a timer to see a stop."""
    srv = HttpServer("127.0.0.1", 0)
    srv.route("GET", "/", lambda r: Response.text("up\n"))
    before = set(threading.enumerate())
    srv.start()
    loops = [t for t in threading.enumerate() if t.name == "http" and t not in before]
    try:
        for _ in range(2):  # one connection each: both accepted
            conn = connect(srv)
            conn.request("GET", "/")
            assert conn.getresponse().read() == b"up\n"
            conn.close()
    finally:
        srv.stop()
    assert loops and not any(t.is_alive() for t in loops)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=5)


def test_an_ipv6_host_is_served() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        srv = HttpServer("::1", 0)
    except OSError:
        pytest.skip("::1 is not available here")
    srv.route("GET", "/", lambda r: Response.text(r.client))
    srv.start(poll_interval=0.05)
    try:
        conn = http.client.HTTPConnection("::1", srv.port, timeout=5)
        conn.request("GET", "/")
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, b"::1")
    finally:
        srv.stop()
