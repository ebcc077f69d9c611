"""Hostile HTTP clients against the real daemon and the real server, on 127.0.0.1 (issue #17, items 3, 5, 6).

Each test is an attack that got through before: slow bodies holding every push slot, headers that
never end, an unframed POST smuggling a second request, connections beyond any limit.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from support import AgentProcess, free_port, record, wait_until, write_config

from agent.http.server import HttpServer, Response
from agent.http.wire import ServerLimits

T0 = 1_790_000_000.0
LIMITS = {"header_timeout_seconds": 1.5, "body_timeout_seconds": 1.5, "max_header_bytes": 4096, "max_connections": 32}


def hardened_config(tmp_path: Path, listen: str = "shared", **limits: Any) -> Path:
    return write_config(tmp_path / "config.yaml", source={"type": "http_push", "listen": listen},
                        state_dir=str(tmp_path / "state"), limits={**LIMITS, **limits},
                        schedule={"ingest_seconds": 0.2, "detect_seconds": 0.5, "retention_seconds": 60},
                        log={"level": "DEBUG", "format": "json"})


def raw(port: int, data: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(data)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def slow_push(port: int) -> socket.socket:
    """A push whose headers announce 100 bytes of which one ever arrives."""
    return raw(port, b"POST /v1/records HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n[")


def test_slow_bodies_hold_no_push_slot_and_are_dropped_at_the_body_deadline(tmp_path: Path,
                                                                            agent_factory: Any) -> None:
    agent: AgentProcess = agent_factory(hardened_config(tmp_path)).start()
    with ExitStack() as stack:
        slow = [stack.enter_context(slow_push(agent.port)) for _ in range(6)]  # max_in_flight is 4
        wait_until(lambda: agent.value("goodhart_http_connections_open", listener="main") == 7,
                   what="six slow pushes connected")  # and this scrape
        resp = requests.post(agent.url + "/v1/records", json=[record("fast", T0)], timeout=10)
        assert resp.status_code == 202
        for sock in slow:
            sock.settimeout(20)
            assert closed_by_server(sock)
    assert agent.wait_for("goodhart_http_connections_dropped_total", 6, listener="main", reason="timeout") == 6
    assert agent.value("goodhart_source_errors_total", reason="busy") == 0
    assert agent.value("goodhart_records_total", source="http_push") == 1


def test_headers_that_never_end_are_dropped_and_a_client_leaving_mid_body_is_one_counted_line(
        tmp_path: Path, agent_factory: Any) -> None:
    agent: AgentProcess = agent_factory(hardened_config(tmp_path)).start()
    with raw(agent.port, b"GET /metrics HTTP/1.1\r\nHost: t\r\nX-Slow: a") as sock:
        sock.settimeout(20)
        assert closed_by_server(sock)
    with raw(agent.port, b"POST /v1/records HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n[{\"id\": "):
        pass  # gone with 90 bytes unsent
    assert agent.wait_for("goodhart_http_connections_dropped_total", 1, listener="main", reason="disconnect") == 1
    assert agent.value("goodhart_http_connections_dropped_total", listener="main", reason="timeout") == 1
    log = agent.log_path.read_text()
    assert "Traceback" not in log
    assert log.count('"http connection dropped"') >= 2


def test_an_unframed_post_is_411_and_the_request_smuggled_in_its_body_is_never_processed(
        tmp_path: Path, agent_factory: Any) -> None:
    agent: AgentProcess = agent_factory(hardened_config(tmp_path)).start()
    smuggled = (b'[{"id": "smuggled", "ts": 1790000000, "input": "q", "output": "a", "proxies": {"thumbs_up": 1}}]')
    inner = (b"POST /v1/records HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
             b"Content-Length: %d\r\n\r\n" % len(smuggled)) + smuggled
    head = b"POST /v1/records HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    with raw(agent.port, head + b"\r\n" + inner) as s:
        s.settimeout(20)
        answer = read_all(s)
    assert answer.startswith(b"HTTP/1.1 411 ")
    assert answer.count(b"HTTP/1.1 ") == 1  # one answer, then the connection closed
    bad = (b"Content-Length: 2\r\nContent-Length: 40\r\n", b"Content-Length: +2\r\n", b"Content-Length: 2 2\r\n")
    for lengths in bad:
        with raw(agent.port, head + lengths + b"\r\n[]" + inner) as s:
            s.settimeout(20)
            answer = read_all(s)
        assert answer.startswith(b"HTTP/1.1 400 ") and answer.count(b"HTTP/1.1 ") == 1, (lengths, answer)
    assert requests.post(agent.url + "/v1/records", json=[record("after", T0)], timeout=10).status_code == 202
    assert agent.value("goodhart_records_total", source="http_push") == 1  # "after" only
    assert agent.value("goodhart_http_errors_total", listener="main", status="411") == 1
    assert agent.value("goodhart_http_errors_total", listener="main", status="400") == 3


@pytest.mark.slow
def test_sigterm_with_slow_clients_connected_exits_without_waiting_for_them(tmp_path: Path,
                                                                           agent_factory: Any) -> None:
    push_port = free_port()
    config = hardened_config(tmp_path, f"127.0.0.1:{push_port}", body_timeout_seconds=600)
    agent: AgentProcess = agent_factory(config).start()
    with ExitStack() as stack:
        for _ in range(6):
            stack.enter_context(slow_push(push_port))
        wait_until(lambda: agent.value("goodhart_http_connections_open", listener="http_push") == 6,
                   what="six slow pushes connected")
        # Before: each held a push slot, and shutdown waited 10 s for them; now no slot is held.
        assert agent.terminate(timeout=8) == 0
    assert "agent stopped" in agent.log_path.read_text()


# -- the server alone, with its own limits -------------------------------------------------------------------
@contextmanager
def limited_server(**limits: Any) -> Iterator[HttpServer]:
    srv = HttpServer("127.0.0.1", 0, limits=ServerLimits(**limits))
    srv.route("GET", "/ok", lambda _: Response.text("ok\n"))
    srv.route("POST", "/echo", lambda r: Response(200, r.body))
    srv.start(poll_interval=0.05)
    try:
        yield srv
    finally:
        srv.stop()


def test_a_header_block_over_the_budget_is_431_and_closed() -> None:
    with limited_server(max_header_bytes=2048) as srv:
        filler = b"".join(b"X-F%d: %s\r\n" % (i, b"a" * 100) for i in range(30))
        with raw(srv.port, b"GET /ok HTTP/1.1\r\nHost: t\r\n" + filler + b"\r\n") as s:
            s.settimeout(10)
            answer = read_all(s)
        assert answer.startswith(b"HTTP/1.1 431 ")
        with raw(srv.port, b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\nHost: t\r\n\r\n") as s:
            s.settimeout(10)
            assert read_all(s).startswith(b"HTTP/1.1 414 ")
        assert srv.httpd.errors == {431: 1, 414: 1}
        assert requests.get(f"http://127.0.0.1:{srv.port}/ok", timeout=5).status_code == 200


def test_connections_beyond_the_limit_get_503_at_once_and_the_listener_serves_again_after() -> None:
    with limited_server(max_connections=4, header_timeout=60) as srv, ExitStack() as stack:
        idle = [stack.enter_context(socket.create_connection(("127.0.0.1", srv.port), timeout=10)) for _ in range(4)]
        wait_until(lambda: srv.httpd.open_connections == 4, what="four idle connections held")
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as extra:
            answer = read_all(extra)
        assert answer.startswith(b"HTTP/1.1 503 ") and b"Connection: close" in answer
        assert srv.httpd.dropped["over_limit"] == 1 and srv.httpd.errors == {503: 1}
        for sock in idle:
            sock.close()
        wait_until(lambda: srv.httpd.open_connections == 0, what="idle connections released")
        assert requests.get(f"http://127.0.0.1:{srv.port}/ok", timeout=5).status_code == 200


def test_a_keep_alive_connection_serves_several_requests_within_its_limits() -> None:
    with limited_server(header_timeout=5, idle_timeout=5) as srv:
        session = requests.Session()
        for i in range(3):
            resp = session.post(f"http://127.0.0.1:{srv.port}/echo", data=f"body{i}".encode(), timeout=5)
            assert resp.content == f"body{i}".encode()
        assert srv.httpd.errors == {}



# -- the head parser: strict where the standard library's email parser was lenient --------------------------------
@pytest.mark.parametrize("line", [b"Not a header", b"Content-Length : 2", b" folded: onto the line before",
                                  b"X-A: b\rContent-Length: 2", b"X-N\0: v", b": no name"])
def test_a_header_line_that_is_not_a_field_is_400_closed_and_never_reaches_a_handler(line: bytes) -> None:
    """Before, the email parser ended the block at such a line: every field after it (a framing one
    among them) vanished for this server while a proxy in front may have read them."""
    with limited_server() as srv:
        with raw(srv.port, b"POST /echo HTTP/1.1\r\nHost: t\r\n" + line + b"\r\nContent-Length: 2\r\n\r\nab") as s:
            s.settimeout(10)
            answer = read_all(s)
        assert answer.startswith(b"HTTP/1.1 400 ") and answer.count(b"HTTP/1.1 ") == 1
        assert b"ab" not in answer.split(b"\r\n\r\n", 1)[1]  # the echo handler never ran
        assert srv.httpd.errors == {400: 1}


def test_more_than_99_header_fields_are_431_as_the_standard_library_counts_them() -> None:
    with limited_server(max_header_bytes=16384) as srv:
        fields = b"".join(b"X-%d: v\r\n" % i for i in range(99))
        with raw(srv.port, b"GET /ok HTTP/1.1\r\nHost: t\r\n" + fields + b"\r\n") as s:
            s.settimeout(10)
            assert read_all(s).startswith(b"HTTP/1.1 431 ")
        fields = b"".join(b"X-%d: v\r\n" % i for i in range(97))  # with Host and Connection: 99, the most allowed
        with raw(srv.port, b"GET /ok HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" + fields + b"\r\n") as s:
            s.settimeout(10)
            assert read_all(s).startswith(b"HTTP/1.1 200 ")
        assert srv.httpd.errors == {431: 1}


def test_a_head_sent_a_few_bytes_at_a_time_reads_as_the_same_request_as_one_sent_at_once() -> None:
    """Whole header blocks are taken in one read, blocks still arriving line by line: the same fields."""
    request = (b"POST /echo HTTP/1.1\r\nHost: t\r\nX-Empty:\r\nX-Spaces:   padded value \t\r\n"
               b"Content-Length: 5\r\n\r\nhello")
    answers = []
    with limited_server(header_timeout=10) as srv:
        for step in (len(request), 7):
            with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
                for at in range(0, len(request), step):
                    s.sendall(request[at:at + step])
                answer = b""
                while not answer.endswith(b"hello"):
                    answer += s.recv(65536)
            answers.append(answer.split(b"\r\n\r\n", 1)[1])
        assert answers == [b"hello", b"hello"] and srv.httpd.errors == {}


def test_keep_alive_follows_the_version_and_the_connection_header() -> None:
    with limited_server() as srv:
        for head, closes in ((b"GET /ok HTTP/1.1\r\nHost: t\r\n", False), (b"GET /ok HTTP/1.0\r\n", True),
                             (b"GET /ok HTTP/1.0\r\nConnection: keep-alive\r\n", False),
                             (b"GET /ok HTTP/1.1\r\nConnection: close\r\n", True)):
            with raw(srv.port, head + b"\r\n") as s:
                s.settimeout(10)
                answer = b""
                while not answer.endswith(b"ok\n"):
                    answer += s.recv(65536)
                assert answer.startswith(b"HTTP/1.1 200 ")
                s.settimeout(0.5 if not closes else 10)
                if closes:
                    assert closed_by_server(s)
                else:
                    with pytest.raises(TimeoutError):
                        s.recv(1)  # still open: waiting for the next request


@pytest.mark.parametrize(("line", "status"), [(b"GET / HTTP/2.0", b""), (b"GET / HTTP/1.x", b""),
                                              (b"GET / x HTTP/1.1", b"HTTP/1.1 400 "), (b"POST /", b"")])
def test_request_lines_are_refused_as_the_standard_library_refuses_them(line: bytes, status: bytes) -> None:
    """HTTP/0.9-style answers (no status line) where the version was not read, as before."""
    with limited_server() as srv:
        with raw(srv.port, line + b"\r\nHost: t\r\n\r\n") as s:
            s.settimeout(10)
            answer = read_all(s)
        assert answer.startswith(status) and b"Error response" in answer
        assert sum(srv.httpd.errors.values()) == 1
