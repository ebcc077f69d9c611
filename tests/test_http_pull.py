"""The http_pull source against a real HTTP server on 127.0.0.1 that serves records page by page."""

from __future__ import annotations

import datetime
import ipaddress
import json
import random
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from support import BASE_CONFIG, AgentProcess, free_port, record, write_config

from agent.cli import main
from agent.clock import WallClock
from agent.config import ConfigError, config_from_mapping
from agent.pipeline import Pipeline
from agent.sources.http_pull import HttpPullSource
from agent.store import Store

T0 = time.time() - 3600


class RecordsApi:
    """A records API on a free port. ``style`` picks the reply shape and how the cursor works:

    - ``object``: ``?cursor=<offset>`` → ``{"records": [...], "next_cursor": <offset after the page>}``;
    - ``nested``: the same under ``{"data": {"items": [...]}, "meta": {"next": ...}}``;
    - ``ndjson``: ``?since=<ts>`` → NDJSON of the records with a later ``ts``;
    - ``array``: ``?after=<id>`` → a JSON array of the records after that id.

    ``script`` holds actions taken by the next requests instead of a normal reply:
    ``("status", code, headers)``, ``("sleep", seconds)`` (then reply), ``("drip", seconds)`` (the body
    a byte at a time over that long), ``("body", bytes, content_type)``.
    """

    def __init__(self, style: str = "object", page_size: int = 10, tls: ssl.SSLContext | None = None) -> None:
        self.style = style
        self.page_size = page_size
        self.records: list[dict[str, Any]] = []
        self.script: list[tuple[Any, ...]] = []
        self.requests: list[tuple[dict[str, str], dict[str, str]]] = []  # (query, headers)
        self.lock = threading.Lock()
        api = self

        # A raw handler, not agent.http.server: "drip" writes the body a byte at a time with flushes in
        # between (to prove the client's whole-reply deadline), which a Request -> Response handler
        # cannot express; the listener is also wrapped in TLS for the certificate tests.
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                query = {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}
                with api.lock:
                    api.requests.append((query, {k.lower(): v for k, v in self.headers.items()}))
                    action = api.script.pop(0) if api.script else ("reply",)
                    body, content_type = api.page(query)
                try:
                    if action[0] == "status":
                        return self.send(action[1], b'{"error": "scripted"}', "application/json", action[2])
                    if action[0] == "sleep":
                        time.sleep(action[1])
                    if action[0] == "body":
                        body, content_type = action[1], action[2]
                    if action[0] == "drip":
                        return self.send(200, body, content_type, {}, drip=action[1])
                    self.send(200, body, content_type, {})
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up first: what timeouts are for

            def send(self, status: int, body: bytes, content_type: str, headers: dict[str, str],
                     drip: float = 0.0) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                if not drip:
                    self.wfile.write(body)
                    return
                for i in range(len(body)):
                    self.wfile.write(body[i:i + 1])
                    self.wfile.flush()
                    time.sleep(drip / len(body))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}/records"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def page(self, query: dict[str, str]) -> tuple[bytes, str]:
        n = int(query.get("limit", self.page_size))
        if self.style in ("object", "nested"):
            start = int(query.get("cursor", 0))
            items = self.records[start:start + n]
            nxt = start + len(items)
            doc: Any = ({"records": items, "next_cursor": nxt} if self.style == "object"
                        else {"data": {"items": items}, "meta": {"next": nxt}})
            return json.dumps(doc).encode(), "application/json"
        if self.style == "ndjson":
            since = float(query.get("since", "-1"))
            items = [r for r in self.records if r["ts"] > since][:n]
            return b"".join(json.dumps(r).encode() + b"\n" for r in items), "application/x-ndjson"
        ids = [r["id"] for r in self.records]
        start = ids.index(query["after"]) + 1 if "after" in query else 0
        return json.dumps(self.records[start:start + n]).encode(), "application/json"

    def sent(self, param: str) -> list[str | None]:
        """The value of ``param`` in every request so far."""
        return [q.get(param) for q, _ in self.requests]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class FakeClock:
    """The source's monotonic clock, stepped by the test (requests still take real time)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Pulled:
    """A pipeline on a real store with a pull source polling ``url``."""

    def __init__(self, tmp_path: Path, url: str, clock: FakeClock, **source: Any) -> None:
        self.tmp_path = tmp_path
        self.config = config_from_mapping({**BASE_CONFIG, "state_dir": str(tmp_path),
                                           "source": {"type": "http_pull", "url": url, **source}}, environ={})
        self.store = Store(tmp_path)
        self.pipeline = Pipeline(self.config, self.store, WallClock())
        assert self.config.source is not None
        self.source = HttpPullSource(self.config.source, self.config.limits.max_record_bytes,
                                     self.store.get_offset(HttpPullSource.name), clock=clock, rng=random.Random(3))

    def ingest(self) -> int:
        return self.pipeline.ingest(self.source)

    def stored(self) -> int:
        return int(self.store.conn.execute("SELECT COUNT(*) FROM outputs").fetchone()[0])

    def close(self) -> None:
        self.source.close()
        self.store.close()


@pytest.fixture
def apis() -> Iterator[Any]:
    made: list[RecordsApi] = []

    def make(style: str = "object", page_size: int = 10, tls: ssl.SSLContext | None = None) -> RecordsApi:
        made.append(RecordsApi(style, page_size, tls))
        return made[-1]

    yield make
    for api in made:
        api.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def pulled(tmp_path: Path, clock: FakeClock) -> Iterator[Any]:
    made: list[Pulled] = []

    def make(url: str, **source: Any) -> Pulled:
        made.append(Pulled(tmp_path / f"s{len(made)}", url, clock, **source))
        return made[-1]

    yield make
    for p in made:
        p.close()


def records(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [record(f"r{i}", T0 + i, resolved=i % 2) for i in range(start, start + n)]


# -- pages and cursors ----------------------------------------------------------------------------------------
def test_pages_are_followed_until_exhausted_then_polled_after_poll_seconds(apis: Any, pulled: Any,
                                                                           clock: FakeClock) -> None:
    api = apis("object", page_size=10)
    api.records = records(25)
    p = pulled(api.url, poll_seconds=30)
    assert p.ingest() == 25
    assert api.sent("cursor") == [None, "10", "20", "25"]  # the last page is empty: exhausted
    assert p.store.get_offset("http_pull") == {"cursor": 25}
    assert p.stored() == 25 and p.source.up
    api.records += records(3, start=25)
    assert p.ingest() == 0 and len(api.requests) == 4  # no request before poll_seconds have passed
    clock.now += 30
    assert p.ingest() == 3
    assert api.sent("cursor")[4:] == ["25", "28"]
    assert p.pipeline.counters.value("records_total", source="http_pull") == 28
    assert p.pipeline.counters.value("records_rejected_total", reason="duplicate") == 0


def test_a_restarted_source_resumes_at_the_stored_cursor(apis: Any, tmp_path: Path, clock: FakeClock) -> None:
    api = apis("object", page_size=10)
    api.records = records(20)
    first = Pulled(tmp_path, api.url, clock)
    assert first.ingest() == 20
    first.close()
    api.records += records(5, start=20)
    again = Pulled(tmp_path, api.url, clock)
    try:
        assert again.ingest() == 5
        assert api.sent("cursor")[3] == "20"  # first request after the restart
    finally:
        again.close()


def test_cursor_and_records_found_by_json_pointer_and_params_sent(apis: Any, pulled: Any) -> None:
    api = apis("nested")
    api.records = records(7)
    p = pulled(api.url, records_field="/data/items", cursor_field="meta.next", params={"limit": "3"})
    assert p.ingest() == 7
    assert api.sent("cursor") == [None, "3", "6", "7"]
    assert api.sent("limit") == ["3"] * 4


def test_ndjson_replies_use_the_last_records_ts_as_cursor(apis: Any, pulled: Any) -> None:
    api = apis("ndjson", page_size=4)
    api.records = records(10)
    p = pulled(api.url, cursor_param="since", cursor_start=0)
    assert p.ingest() == 10
    sent = api.sent("since")
    assert sent[0] == "0" and [float(s) for s in sent[1:] if s] == [T0 + 3, T0 + 7, T0 + 9]
    assert p.store.get_offset("http_pull") == {"cursor": T0 + 9}


def test_json_array_replies_can_use_the_last_records_id(apis: Any, pulled: Any) -> None:
    api = apis("array", page_size=4)
    api.records = records(6)
    p = pulled(api.url, cursor_param="after", cursor_record_field="id")
    assert p.ingest() == 6
    assert api.sent("after") == [None, "r3", "r5"]


def test_bad_records_in_a_page_are_rejected_and_the_page_still_counts(apis: Any, pulled: Any) -> None:
    api = apis("ndjson")
    api.records = records(2)
    digits = '{"id": "long", "proxy": {"thumbs_up": ' + "1" * 5000 + "}}"  # over Python's 4,300 digits
    body = (json.dumps(api.records[0]) + "\n{oops\n" + json.dumps({"ts": T0 + 5}) + "\n" + digits + "\n"
            + json.dumps(api.records[1]) + "\n").encode()
    api.script = [("body", body, "application/x-ndjson")]
    p = pulled(api.url, cursor_param="since")
    p.ingest()
    assert p.stored() == 2  # before: the 5,000 digits failed the whole page on every poll
    assert p.pipeline.counters.value("records_rejected_total", reason="not_json") == 2
    assert p.pipeline.counters.value("records_rejected_total", reason="no_id") == 1


# -- failures -------------------------------------------------------------------------------------------------
def test_5xx_backs_off_exponentially_with_jitter_and_recovers(apis: Any, pulled: Any, clock: FakeClock) -> None:
    api = apis("object")
    api.records = records(5)
    api.script = [("status", 500, {}), ("status", 502, {}), ("status", 503, {})]
    p = pulled(api.url, backoff_initial_seconds=2, backoff_max_seconds=5)
    waits = []
    for _ in range(3):
        before = len(api.requests)
        assert p.ingest() == 0 and len(api.requests) == before + 1
        assert not p.source.up
        waits.append(p.source.not_before - clock.now)
        clock.now += waits[-1] - 0.01
        assert p.ingest() == 0 and len(api.requests) == before + 1  # still backing off: no request
        clock.now += 0.01
    assert 1 <= waits[0] <= 2 and 2 <= waits[1] <= 4 and 2.5 <= waits[2] <= 5  # doubling, capped at 5, jittered
    assert p.source.errors["http_5xx"] == 3
    assert p.ingest() == 5 and p.source.up and p.source.failures == 0


def test_429_waits_exactly_retry_after_and_stays_up(apis: Any, pulled: Any, clock: FakeClock) -> None:
    api = apis("object")
    api.records = records(3)
    api.script = [("status", 429, {"Retry-After": "7"})]
    p = pulled(api.url)
    assert p.ingest() == 0
    assert p.source.not_before == clock.now + 7
    assert p.source.errors["http_429"] == 1 and p.source.up
    clock.now += 7
    assert p.ingest() == 3


def test_other_4xx_are_counted_and_the_source_is_down(apis: Any, pulled: Any) -> None:
    api = apis("object")
    api.script = [("status", 404, {})]
    p = pulled(api.url)
    assert p.ingest() == 0
    assert p.source.errors["http_4xx"] == 1 and not p.source.up


@pytest.mark.parametrize("action", [("sleep", 1.5), ("drip", 1.5)])
def test_a_reply_slower_than_the_timeout_is_a_timeout(apis: Any, pulled: Any, action: tuple[Any, ...]) -> None:
    api = apis("object")
    api.records = records(3)
    api.script = [action]
    p = pulled(api.url, timeout_seconds=0.4)
    assert p.ingest() == 0  # the server would take 1.5 s: the whole-request timeout ends it first
    assert p.source.errors["timeout"] == 1 and not p.source.up
    assert p.store.get_offset("http_pull") is None


def test_a_slow_reply_within_the_timeout_is_fine(apis: Any, pulled: Any) -> None:
    api = apis("object")
    api.records = records(3)
    api.script = [("sleep", 0.3)]
    p = pulled(api.url, timeout_seconds=3)
    assert p.ingest() == 3
    assert p.source.errors["timeout"] == 0


@pytest.mark.parametrize(("body", "content_type", "reason"), [
    (b"<html>502 Bad Gateway</html>", "text/html", "bad_body"),
    (b'{"records": "none"}', "application/json", "bad_body"),
    (b"[1, 2", "application/json", "bad_body"),
    (b"42", "application/json", "bad_body"),
    (b"[" + b'"x", ' * 1000 + b'"x"]', "application/json", "too_large"),
], ids=["html", "no-records-list", "truncated", "scalar", "too-large"])
def test_garbage_bodies_store_nothing_and_keep_the_cursor(apis: Any, pulled: Any, clock: FakeClock, body: bytes,
                                                          content_type: str, reason: str) -> None:
    api = apis("object", page_size=2)
    api.records = records(4)
    api.script = [("body", body, content_type)]
    p = pulled(api.url, max_reply_bytes=1024)
    assert p.ingest() == 0  # the very first page is garbage
    clock.now = p.source.not_before
    assert p.ingest() == 4
    clock.now += 100
    api.records += records(2, start=4)
    api.script = [("body", body, content_type)]
    assert p.ingest() == 0
    assert p.source.errors[reason] == 2
    assert p.store.get_offset("http_pull") == {"cursor": 4}
    assert p.stored() == 4


def test_an_object_reply_with_an_integer_over_4300_digits_is_a_bad_body(apis: Any, pulled: Any) -> None:
    api = apis("object")
    api.records = records(2)
    api.script = [("body", b'{"records": [{"id": "long", "n": ' + b"1" * 5000 + b"}]}", "application/json")]
    p = pulled(api.url)
    assert p.ingest() == 0  # before: an uncaught ValueError, the ingest job failing on every tick
    assert p.source.errors["bad_body"] == 1


def test_a_refused_connection_is_counted_and_down(pulled: Any) -> None:
    p = pulled(f"http://127.0.0.1:{free_port()}/records")
    assert p.ingest() == 0
    assert p.source.errors["connection"] == 1 and not p.source.up


# -- credentials and TLS --------------------------------------------------------------------------------------
def test_token_and_headers_come_from_env_and_files(apis: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    api = apis("object")
    api.records = records(1)
    monkeypatch.setenv("PULL_TOKEN", "tok-123")
    (tmp_path / "key").write_text("key-456\n")
    config = config_from_mapping({**BASE_CONFIG, "source": {
        "type": "http_pull", "url": api.url + "?tenant=a", "token_env": "PULL_TOKEN",
        "headers": {"X-Client": "goodhart"}, "headers_file": {"X-Api-Key": str(tmp_path / "key")}}}, environ={})
    source = HttpPullSource.from_config(config, None)
    try:
        assert len(source.read(100).items) == 1
    finally:
        source.close()
    query, headers = api.requests[0]
    assert headers["authorization"] == "Bearer tok-123"
    assert headers["x-api-key"] == "key-456" and headers["x-client"] == "goodhart"
    assert query["tenant"] == "a"


def test_a_missing_secret_is_a_config_error_naming_its_key(tmp_path: Path) -> None:
    config = config_from_mapping({**BASE_CONFIG, "source": {
        "type": "http_pull", "url": "http://127.0.0.1:1/r", "headers_env": {"X-Key": "GOODHART_TEST_UNSET"}}},
        environ={})
    with pytest.raises(ConfigError) as err:
        HttpPullSource.from_config(config, None)
    assert err.value.problems == ["source.headers_env.X-Key: environment variable GOODHART_TEST_UNSET is not set"]


def self_signed(tmp_path: Path) -> tuple[Path, ssl.SSLContext]:
    """A certificate for 127.0.0.1, its own CA; returns its PEM path and a server context."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "goodhart-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return cert_path, context


def test_tls_is_verified_by_default_and_a_ca_bundle_can_be_given(apis: Any, pulled: Any, tmp_path: Path) -> None:
    cert, context = self_signed(tmp_path)
    api = apis("object", tls=context)
    api.records = records(2)
    strict = pulled(api.url)
    assert strict.ingest() == 0
    assert strict.source.errors["tls"] == 1 and not strict.source.up
    trusted = pulled(api.url, ca_bundle=str(cert))
    assert trusted.ingest() == 2 and trusted.source.up


# -- config ---------------------------------------------------------------------------------------------------
def test_check_config_names_the_pull_keys_at_fault(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path / "c.yaml", source={"type": "http_pull"})
    assert main(["check-config", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == ["source: url is required when type is http_pull"]
    write_config(path, source={"type": "http_pull", "url": "file:///etc/passwd", "timeout_seconds": 0,
                               "listen": "127.0.0.1:1", "headers_env": {"X-Key": "not a var"}})
    assert main(["check-config", str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert "source.url: expected an http:// or https:// URL" in lines
    assert any(line.startswith("source.timeout_seconds: ") for line in lines)
    assert "source.listen: only used when type is http_push or otlp, not http_pull" in lines
    assert any(line.startswith("source.headers_env.X-Key: ") for line in lines)
    write_config(path, source={"type": "http_pull", "url": "https://logs.example/v1/records",
                               "backoff_initial_seconds": 60, "backoff_max_seconds": 10})
    assert main(["check-config", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "source: backoff_initial_seconds must not exceed backoff_max_seconds"]


# -- the daemon -----------------------------------------------------------------------------------------------
def pull_config(tmp_path: Path, url: str, **source: Any) -> Path:
    return write_config(tmp_path / "config.yaml",
                        source={"type": "http_pull", "url": url, "poll_seconds": 0.2, **source},
                        state_dir=str(tmp_path / "state"),
                        schedule={"ingest_seconds": 0.1, "detect_seconds": 0.5, "retention_seconds": 60},
                        log={"level": "INFO", "format": "json"})


def test_daemon_resumes_from_its_cursor_after_kill_9(tmp_path: Path, apis: Any, agent_factory: Any) -> None:
    api = apis("object", page_size=10)
    api.records = records(30)
    agent: AgentProcess = agent_factory(pull_config(tmp_path, api.url)).start()
    assert agent.wait_for("goodhart_records_total", 30, source="http_pull") == 30
    assert agent.value("goodhart_up", component="source") == 1
    agent.kill()
    api.records += records(5, start=30)
    with api.lock:
        seen = len(api.requests)
    agent.start()
    assert agent.wait_for("goodhart_records_total", 35, source="http_pull") == 35
    assert api.sent("cursor")[seen] == "30"  # the first request after the restart
    assert agent.value("goodhart_records_rejected_total", reason="duplicate") == 0
    assert agent.wait_for("goodhart_audited_pairs", 35, proxy="thumbs_up", audit="resolved", segment="*") == 35


def test_daemon_reports_the_source_down_with_reasons_then_up(tmp_path: Path, apis: Any, agent_factory: Any) -> None:
    api = apis("object")
    api.records = records(4)
    api.script = [("status", 500, {})] * 3 + [("status", 429, {"Retry-After": "1"})]
    agent: AgentProcess = agent_factory(pull_config(tmp_path, api.url, backoff_initial_seconds=0.1,
                                                    backoff_max_seconds=0.3)).start()
    assert agent.wait_for("goodhart_source_errors_total", 3, reason="http_5xx") == 3
    assert agent.wait_for("goodhart_records_total", 4, source="http_pull") == 4
    assert agent.value("goodhart_source_errors_total", reason="http_429") == 1
    assert agent.value("goodhart_source_errors_total", reason="timeout") == 0
    assert agent.value("goodhart_up", component="source") == 1
    api.script = [("status", 503, {"Retry-After": "30"})]
    assert agent.wait_for("goodhart_up", 0, component="source") == 0
