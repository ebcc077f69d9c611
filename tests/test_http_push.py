"""The http_push source: POST /v1/records, in process against a real listener and end to end against the daemon."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from support import BASE_CONFIG, AgentProcess, free_port, label, record, write_config

from agent.cli import main
from agent.clock import WallClock
from agent.config import ConfigError, config_from_mapping
from agent.pipeline import Pipeline
from agent.sources.http_push import HttpPushSource
from agent.store import DB_FILENAME, Store

T0 = time.time() - 3600
NDJSON = "application/x-ndjson"


class Pushed:
    """A pipeline on a real store with the push source serving on a free localhost port."""

    def __init__(self, tmp_path: Path, **source: Any) -> None:
        config = config_from_mapping({**BASE_CONFIG, "state_dir": str(tmp_path),
                                      "source": {"type": "http_push", "listen": "127.0.0.1:0", **source}}, environ={})
        self.store = Store(tmp_path)
        self.pipeline = Pipeline(config, self.store, WallClock())
        assert config.source is not None
        self.source = HttpPushSource.from_config(config.source, self.pipeline.ingest_items, None)
        self.source.start()
        self.url = f"http://127.0.0.1:{self.source.port}/v1/records"

    def post(self, body: Any, content_type: str | None = "application/json", **headers: str) -> requests.Response:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        if content_type is not None:
            headers["Content-Type"] = content_type
        return requests.post(self.url, data=data, headers=headers, timeout=10)

    def close(self) -> None:
        self.source.close()
        self.store.close()


@pytest.fixture
def make_pushed(tmp_path: Path) -> Iterator[Any]:
    made: list[Pushed] = []

    def make(**source: Any) -> Pushed:
        made.append(Pushed(tmp_path / f"p{len(made)}", **source))
        return made[-1]

    yield make
    for p in made:
        p.close()


def ndjson(objects: list[Any]) -> bytes:
    return b"".join((o if isinstance(o, bytes) else json.dumps(o).encode()) + b"\n" for o in objects)


# -- content types --------------------------------------------------------------------------------------------
def test_a_202_means_the_record_is_already_in_the_store(make_pushed: Any) -> None:
    p = make_pushed()
    resp = p.post(record("c1", T0, resolved=1))
    assert resp.status_code == 202
    assert resp.json() == {"accepted": 1, "rejected": 0, "reasons": {}}
    assert p.store.get_output("c1") is not None  # no ingest step ran: the handler stored it
    assert p.store.pair_counts()[("thumbs_up", "resolved", "*")] == 1
    assert p.pipeline.counters.value("records_total", source="http_push") == 1
    assert p.source.read(100).items == []


def test_a_json_array_is_stored_with_rejections_counted_by_reason(make_pushed: Any) -> None:
    p = make_pushed()
    body = [record("a1", T0), {"proxy": {"thumbs_up": 1}}, {"id": "a2", "proxy": {"thumbs_up": "many"}}, 7,
            record("a1", T0), label("a3", T0, 1)]
    resp = p.post(body)
    assert resp.status_code == 202
    assert resp.json() == {"accepted": 2, "rejected": 4,
                           "reasons": {"bad_metric": 1, "duplicate": 1, "no_id": 1, "not_object": 1}}
    assert p.pipeline.counters.value("records_total", source="http_push") == 6
    assert p.pipeline.counters.value("records_rejected_total", reason="duplicate") == 1


def test_poison_records_are_rejected_alone_and_the_push_is_accepted(make_pushed: Any) -> None:
    """A lone surrogate or a 10**400 once made the whole push 503 (retry later) or 500, valid records
    included, so a well-behaved client retried the poison forever."""
    p = make_pushed()
    body = ndjson([record("v1", T0), b'{"id": "b\\ud800", "proxy": {"thumbs_up": 1}}',
                   b'{"id": "big", "proxy": {"thumbs_up": 1' + b"0" * 400 + b"}}", record("v2", T0)])
    resp = p.post(body, NDJSON)
    assert resp.status_code == 202
    assert resp.json() == {"accepted": 2, "rejected": 2, "reasons": {"bad_id": 1, "bad_metric": 1}}
    assert p.store.get_output("v2") is not None


@pytest.mark.parametrize("content_type", [NDJSON, "application/jsonl", "application/x-ndjson; charset=utf-8"])
def test_ndjson_bodies_are_split_by_line_and_bad_lines_rejected(make_pushed: Any, content_type: str) -> None:
    p = make_pushed()
    body = ndjson([record("n1", T0), b"{not json", record("n2", T0 + 1)]).replace(b"\n", b"\r\n", 1) + b"\n\n"
    resp = p.post(body, content_type)
    assert resp.status_code == 202
    assert resp.json() == {"accepted": 2, "rejected": 1, "reasons": {"not_json": 1}}
    assert p.store.get_output("n1") is not None and p.store.get_output("n2") is not None


def test_a_record_above_the_record_limit_is_rejected_alone(make_pushed: Any) -> None:
    p = make_pushed()
    big = record("big", T0)
    big["output"] = "x" * 70_000  # above limits.max_record_bytes (64 KiB), below the body limit
    resp = p.post(ndjson([big, record("small", T0)]), NDJSON)
    assert resp.status_code == 202
    assert resp.json()["reasons"] == {"too_large": 1}


# -- refusals -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("body", "content_type", "reason"), [
    (b"{not json", "application/json", "not valid JSON"),
    (b"\xff\xfe\x00garbage", "application/json", "not valid JSON"),
    pytest.param(b'[{"id": "x", "proxy": {"thumbs_up": ' + b"1" * 5000 + b"}}]", "application/json",
                 "not valid JSON", id="over-4300-digits"),  # before: 500 and a traceback
    (b"42", "application/json", "object or an array"),
    (b'"text"', "application/json", "object or an array"),
    (b"   ", "application/json", "empty"),
    (b"", NDJSON, "empty"),
    (b'{"id": "x"}\n\xff\xfe\n', NDJSON, "not UTF-8"),
])
def test_an_undecodable_body_is_400_with_a_reason(make_pushed: Any, body: bytes, content_type: str,
                                                  reason: str) -> None:
    p = make_pushed()
    resp = p.post(body, content_type)
    assert resp.status_code == 400
    assert reason in resp.json()["error"]
    assert p.source.errors["bad_body"] == 1
    assert p.pipeline.counters.value("records_total", source="http_push") == 0


def test_a_body_above_the_limit_is_413_unread(make_pushed: Any) -> None:
    p = make_pushed(max_body_bytes=4096)
    resp = p.post([record(f"r{i}", T0) for i in range(200)])
    assert resp.status_code == 413
    assert p.source.errors["too_large"] == 1
    assert p.post([record("fits", T0)]).status_code == 202


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_other_content_types_are_415(make_pushed: Any, content_type: str | None) -> None:
    p = make_pushed()
    resp = p.post(record("t", T0), content_type)
    assert resp.status_code == 415
    assert p.source.errors["unsupported_media_type"] == 1
    assert p.store.get_output("t") is None


@pytest.mark.parametrize("where", ["env", "file"])
def test_a_configured_bearer_token_is_required(make_pushed: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                               where: str) -> None:
    if where == "env":
        monkeypatch.setenv("PUSH_TOKEN", "s3cret-token")
        p = make_pushed(token_env="PUSH_TOKEN")
    else:
        (tmp_path / "token").write_text("s3cret-token\n")
        p = make_pushed(token_file=str(tmp_path / "token"))
    assert p.post(record("a", T0)).status_code == 401
    wrong = p.post(record("a", T0), Authorization="Bearer s3cret-tokex")
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"].startswith("Bearer")
    assert p.post(record("a", T0), Authorization="Basic s3cret-token").status_code == 401
    assert p.post(record("a", T0), Authorization="Bearer s3cret-token").status_code == 202
    assert p.source.errors["unauthorized"] == 3
    assert "s3cret" not in json.dumps(p.source.errors)


def test_a_token_env_that_is_not_set_stops_the_start(tmp_path: Path) -> None:
    config = config_from_mapping({**BASE_CONFIG, "state_dir": str(tmp_path),
                                  "source": {"type": "http_push", "listen": "127.0.0.1:0",
                                             "token_env": "GOODHART_TEST_UNSET_TOKEN"}}, environ={})
    store = Store(tmp_path)
    with pytest.raises(ConfigError) as err:
        HttpPushSource.from_config(config.source, Pipeline(config, store, WallClock()).ingest_items, None)
    store.close()
    assert err.value.problems == ["source.token_env: environment variable GOODHART_TEST_UNSET_TOKEN is not set"]


def test_429_with_retry_after_when_every_slot_is_in_flight(make_pushed: Any) -> None:
    p = make_pushed(max_in_flight=2, retry_after_seconds=3)
    with ThreadPoolExecutor(2) as pool:
        with p.pipeline.lock:  # an ingest step holds the pipeline: pushes wait inside their slots
            inside = [pool.submit(p.post, [record(f"w{i}", T0)]) for i in range(2)]
            deadline = time.monotonic() + 10
            while p.source.in_flight < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            refused = p.post([record("late", T0)])
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "3"
        assert [f.result().status_code for f in inside] == [202, 202]
    assert p.source.errors["busy"] >= 1
    assert p.store.get_output("late") is None
    assert p.post([record("late", T0)]).status_code == 202


# -- config ---------------------------------------------------------------------------------------------------
def test_check_config_names_the_push_keys_at_fault(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path / "c.yaml", source={
        "type": "http_push", "listen": "localhost", "max_in_flight": 0, "path": "/x.jsonl",
        "token_env": "A", "token_file": "/b"})
    assert main(["check-config", str(config)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert "source.listen: expected HOST:PORT, got 'localhost'" in lines
    assert any(line.startswith("source.max_in_flight: ") for line in lines)
    assert "source.path: only used when type is jsonl, not http_push" in lines
    write_config(config, source={"type": "http_push", "token_env": "A", "token_file": "/b"})
    assert main(["check-config", str(config)]) == 2
    assert capsys.readouterr().err.splitlines() == ["source: set at most one of token_env, token_file"]
    write_config(config, source={"type": "http_push"})
    assert main(["check-config", str(config)]) == 0


# -- the daemon -----------------------------------------------------------------------------------------------
def push_config(tmp_path: Path, listen: str, **source: Any) -> Path:
    return write_config(tmp_path / "config.yaml", source={"type": "http_push", "listen": listen, **source},
                        state_dir=str(tmp_path / "state"),
                        schedule={"ingest_seconds": 0.2, "detect_seconds": 0.5, "retention_seconds": 60},
                        log={"level": "INFO", "format": "json"})


def test_records_answered_202_survive_kill_9_right_after(tmp_path: Path, agent_factory: Any) -> None:
    push_port = free_port()
    agent: AgentProcess = agent_factory(push_config(tmp_path, f"127.0.0.1:{push_port}")).start()
    url = f"http://127.0.0.1:{push_port}/v1/records"
    outputs = [record(f"k{i}", T0 + i, resolved=i % 2 if i < 30 else None) for i in range(50)]
    assert requests.post(url, json=outputs, timeout=10).status_code == 202
    resp = requests.post(url, data=ndjson([label(f"k{i}", T0 + 100, 1) for i in range(30, 40)]),
                         headers={"Content-Type": NDJSON}, timeout=10)
    assert resp.status_code == 202
    agent.kill()  # SIGKILL straight after the reply: no shutdown hook runs

    db = sqlite3.connect(f"file:{tmp_path / 'state' / DB_FILENAME}?mode=ro", uri=True)
    try:
        assert db.execute("SELECT COUNT(*) FROM outputs").fetchone()[0] == 50
        assert db.execute("SELECT COUNT(*) FROM pairs WHERE proxy = 'thumbs_up'").fetchone()[0] == 40
    finally:
        db.close()
    agent.start()
    assert agent.value("goodhart_records_total", source="http_push") == 60
    assert agent.wait_for("goodhart_audited_pairs", 40, proxy="thumbs_up", audit="resolved", segment="*") == 40
    assert agent.value("goodhart_up", component="source") == 1


def test_shared_listener_serves_pushes_beside_metrics(tmp_path: Path, agent_factory: Any) -> None:
    agent: AgentProcess = agent_factory(push_config(tmp_path, "shared")).start()
    resp = requests.post(agent.url + "/v1/records", json=[record("s1", T0), {"id": ""}], timeout=10)
    assert resp.status_code == 202 and resp.json()["reasons"] == {"no_id": 1}
    assert agent.value("goodhart_records_total", source="http_push") == 2
    assert agent.value("goodhart_source_errors_total", reason="busy") == 0
    assert requests.get(agent.url + "/v1/records", timeout=5).status_code == 405


def vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.slow
def test_a_flood_gets_429s_and_neither_crashes_nor_grows_memory(tmp_path: Path, agent_factory: Any) -> None:
    push_port = free_port()
    agent: AgentProcess = agent_factory(push_config(tmp_path, f"127.0.0.1:{push_port}", max_in_flight=2)).start()
    assert agent.proc is not None
    url = f"http://127.0.0.1:{push_port}/v1/records"
    warm = requests.post(url, json=[record(f"warm{i}", T0) for i in range(300)], timeout=10)
    assert warm.status_code == 202
    rss_before = vm_rss_kib(agent.proc.pid)
    clients, per_client, batch, budget = 8, 25, 300, 8.0  # bounded: 200 requests, 8 seconds
    stop_at = time.monotonic() + budget
    codes: list[int] = []
    accepted: list[int] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        with requests.Session() as session:
            for j in range(per_client):
                if time.monotonic() > stop_at:
                    return
                body = [record(f"f{n}-{j}-{k}", T0 + k, resolved=k % 2) for k in range(batch)]
                resp = session.post(url, json=body, timeout=30)
                with lock:
                    codes.append(resp.status_code)
                    if resp.status_code == 202:
                        accepted.append(resp.json()["accepted"])

    with ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(client, n) for n in range(clients)]:
            f.result()
    assert set(codes) <= {202, 429}, set(codes)
    assert codes.count(429) > 0 and codes.count(202) > 0
    assert agent.proc.poll() is None
    assert requests.get(agent.url + "/healthz", timeout=5).status_code == 200
    growth_mib = (vm_rss_kib(agent.proc.pid) - rss_before) / 1024
    assert growth_mib < 64, f"RSS grew {growth_mib:.0f} MiB under the flood"
    # Exactly the 202-answered records were stored, and every refusal was counted as busy.
    assert agent.value("goodhart_records_total", source="http_push") == 300 + sum(accepted)
    assert agent.value("goodhart_source_errors_total", reason="busy") == codes.count(429)
