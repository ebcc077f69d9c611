"""The forwarder in process: what it adds to records, how the gateway takes forwarded computed values,
gzip on the push endpoint, and what each gateway answer does to the buffer.

The gateway is a real push source on a real pipeline and store on a localhost port; the answers a
healthy gateway never gives (429 with Retry-After, a refused body, 401) come from a scripted server
on the agent's own HTTP server, also on localhost.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from support import BASE_CONFIG, free_port

from agent.clock import WallClock
from agent.config import Config, config_from_mapping
from agent.forward import Enricher, Forwarder, ForwarderView, GatewayClient, identity_from_env
from agent.http.server import HttpServer, Request, Response
from agent.pipeline import Pipeline
from agent.records import RecordParser
from agent.sources.http_push import HttpPushSource
from agent.store import Store

T0 = 1_790_000_000.0
COMPUTED = [{"name": "words", "compute": {"kind": "length", "field": "output", "unit": "words"}}]


def make_config(url: str, tmp: Path, **forward: Any) -> Config:
    return config_from_mapping({**BASE_CONFIG, "proxies": BASE_CONFIG["proxies"] + COMPUTED, "state_dir": str(tmp),
                                "source": {"type": "jsonl", "path": str(tmp / "in.jsonl")},
                                "forward": {"url": url, "backoff_initial_seconds": 0.5, **forward}}, environ={})


def rec(i: int, **extra: Any) -> dict[str, Any]:
    return {"id": f"r{i}", "ts": T0 + i, "output": "one two three", "labels": {"segment": "billing"},
            "proxy": {"thumbs_up": 1, "resolution_seconds": 30.0}, **extra}


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[str, Store]]:
    """A real gateway in process: push source → pipeline → store."""
    config = config_from_mapping({**BASE_CONFIG, "proxies": BASE_CONFIG["proxies"] + COMPUTED,
                                  "state_dir": str(tmp_path / "gw"),
                                  "source": {"type": "http_push", "listen": "127.0.0.1:0"}}, environ={})
    store = Store(tmp_path / "gw.db")
    pipeline = Pipeline(config, store, WallClock())
    source = HttpPushSource.from_config(config.source, pipeline.ingest_items, None)
    source.start()
    yield f"http://127.0.0.1:{source.port}/v1/records", store
    source.close()
    store.close()


@pytest.fixture
def scripted() -> Iterator[tuple[str, list[Callable[[list[dict[str, Any]]], Response]], list[list[str]]]]:
    """A server that answers each POST with the next scripted reply (the last one repeats) and logs the ids."""
    script: list[Callable[[list[dict[str, Any]]], Response]] = []
    seen: list[list[str]] = []

    def handle(request: Request) -> Response:
        lines = gzip.decompress(request.body).splitlines()
        items = [json.loads(line) for line in lines]
        seen.append([i["id"] for i in items])
        answer = script.pop(0) if len(script) > 1 else script[0]
        return answer(items)

    server = HttpServer("127.0.0.1", 0)
    server.route("POST", "/v1/records", handle)
    server.start()
    yield f"http://127.0.0.1:{server.port}/v1/records", script, seen
    server.stop()


def forwarder(config: Config, store: Store, monotonic: Callable[[], float] | None = None,
              identity: dict[str, str] | None = None) -> Forwarder:
    assert config.forward is not None
    kwargs: dict[str, Any] = {"monotonic": monotonic} if monotonic else {}
    return Forwarder(config, store, WallClock(), GatewayClient(config.forward, None), identity or {}, **kwargs)


# -- what a forwarder adds ------------------------------------------------------------------------------------
def test_identity_goes_into_labels_without_overwriting_the_records_own(tmp_path: Path) -> None:
    config = make_config("http://127.0.0.1:1/v1/records", tmp_path)
    parser = RecordParser(config)
    enricher = Enricher(config, ["words"], identity_from_env(
        {"pod": "POD_NAME", "namespace": "POD_NAMESPACE"}, {"POD_NAME": "bot-1", "POD_NAMESPACE": "prod"}))
    parsed = parser.parse_object(rec(1, labels={"segment": "billing", "namespace": "from-app"}))
    body = json.loads(enricher.encode(parsed, now=5.0))  # type: ignore[arg-type]
    assert body["labels"] == {"segment": "billing", "namespace": "from-app", "pod": "bot-1"}
    assert body["_goodhart"] == {"computed": {"words": 3.0}}
    assert body["ts"] == T0 + 1 and body["output"] == "one two three"


def test_a_record_without_ts_gets_the_time_it_was_read(tmp_path: Path) -> None:
    config = make_config("http://127.0.0.1:1/v1/records", tmp_path)
    record = rec(1)
    del record["ts"]
    parsed = RecordParser(config).parse_object(record)
    body = json.loads(Enricher(config, [], {}).encode(parsed, now=1234.5))  # type: ignore[arg-type]
    assert body["ts"] == 1234.5


def test_the_gateway_takes_a_forwarded_computed_value_instead_of_computing_it(tmp_path: Path) -> None:
    parser = RecordParser(make_config("http://127.0.0.1:1/v1/records", tmp_path))
    forwarded = parser.parse_object(rec(1, _goodhart={"computed": {"words": 42}}))
    assert forwarded.proxies["words"] == 42.0  # type: ignore[union-attr]
    not_a_number = parser.parse_object(rec(2, _goodhart={"computed": {"words": "many"}}))
    assert not_a_number.proxies["words"] == 3.0  # type: ignore[union-attr]  # computed here instead
    ordinary = parser.parse_object(rec(3))
    assert ordinary.proxies["words"] == 3.0  # type: ignore[union-attr]


# -- gzip on the push endpoint ----------------------------------------------------------------------------------
def test_push_accepts_gzip_and_bounds_what_it_inflates_to(gateway: tuple[str, Store]) -> None:
    url, store = gateway
    headers = {"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"}
    good = gzip.compress(b"\n".join(json.dumps(rec(i)).encode() for i in range(3)))
    assert requests.post(url, data=good, headers=headers, timeout=10).status_code == 202
    assert store.get_output("r2") is not None
    bomb = gzip.compress(b" " * (4 << 20))  # 4 MiB of spaces in a few KiB, above the 1 MiB limit
    assert len(bomb) < 1 << 20
    assert requests.post(url, data=bomb, headers=headers, timeout=10).status_code == 413
    assert requests.post(url, data=b"\x1f\x8bnot gzip", headers=headers, timeout=10).status_code == 400
    assert requests.post(url, data=good, headers={**headers, "Content-Encoding": "br"}, timeout=10).status_code == 415


def test_push_counts_each_refused_encoding_by_reason(tmp_path: Path) -> None:
    config = config_from_mapping({**BASE_CONFIG, "source": {"type": "http_push", "listen": "127.0.0.1:0"}},
                                 environ={})
    store = Store(tmp_path)
    source = HttpPushSource.from_config(config.source, Pipeline(config, store, WallClock()).ingest_items, None)
    source.start()
    try:
        url = f"http://127.0.0.1:{source.port}/v1/records"
        headers = {"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"}
        requests.post(url, data=gzip.compress(bytes(2 << 20)), headers=headers, timeout=10)
        requests.post(url, data=b"garbage", headers=headers, timeout=10)
        requests.post(url, data=b"{}", headers={**headers, "Content-Encoding": "deflate"}, timeout=10)
        assert (source.errors["too_large"], source.errors["bad_encoding"], source.errors["unsupported_encoding"]) \
            == (1, 1, 1)
    finally:
        source.close()
        store.close()


# -- source → buffer → gateway ----------------------------------------------------------------------------------
def test_records_reach_the_gateway_once_with_the_offset_buffered_in_the_same_transaction(
        tmp_path: Path, gateway: tuple[str, Store]) -> None:
    url, gw_store = gateway
    store = Store(tmp_path / "fw.db")
    fwd = forwarder(make_config(url, tmp_path, batch_records=7), store, identity={"pod": "bot-1"})
    items: list[bytes | dict[str, Any]] = [json.dumps(rec(i)).encode() for i in range(20)]
    result = fwd.store_items("jsonl", [*items, b"not json"], offset={"offset": 999})
    assert result.accepted == 20 and result.rejected == {"not_json": 1}
    assert store.get_offset("jsonl") == {"offset": 999} and store.buffer_stats().records == 20
    assert fwd.send_step() == 20
    assert store.buffer_stats().records == 0
    assert fwd.counters.value("forward_records_total") == 20 and fwd.counters.value("forward_batches_total") == 3
    assert gw_store.pending_counts()[0] == 20
    assert fwd.counters.value("records_rejected_total", reason="not_json") == 1
    view = {m.name: m for m in ForwarderView(fwd, WallClock()).collect()}
    assert view["goodhart_forward_buffer_records"].samples[0].value == 0


def test_429_waits_for_retry_after_then_delivers(tmp_path: Path, scripted: Any) -> None:
    url, script, seen = scripted
    script += [lambda _: Response.json({}, 429, {"Retry-After": "30"}), lambda items: Response.json({}, 202)]
    clock = Clock()
    fwd = forwarder(make_config(url, tmp_path), Store(tmp_path / "fw.db"), monotonic=clock)
    fwd.store_items("jsonl", [rec(1), rec(2)])
    assert fwd.send_step() == 0
    assert fwd.counters.value("forward_send_failures_total", reason="rate_limited") == 1
    assert fwd.gateway_up  # busy, but reachable and the token was taken
    clock.t += 29
    assert fwd.send_step() == 0 and len(seen) == 1  # not asked again before Retry-After
    clock.t += 2
    assert fwd.send_step() == 2 and seen[-1] == ["r1", "r2"]


def test_a_refused_record_is_isolated_by_splitting_and_dropped_alone(tmp_path: Path, scripted: Any) -> None:
    url, script, seen = scripted
    script.append(lambda items: Response.json({"error": "bad"}, 400) if any(i["id"] == "r5" for i in items)
                  else Response.json({}, 202))
    store = Store(tmp_path / "fw.db")
    fwd = forwarder(make_config(url, tmp_path), store)
    fwd.store_items("jsonl", [rec(i) for i in range(8)])
    assert fwd.send_step() == 7
    assert fwd.counters.value("forward_dropped_records_total", reason="refused") == 1
    delivered = sorted({i for ids in seen for i in ids if i != "r5"})
    assert delivered == sorted(f"r{i}" for i in range(8) if i != 5) and store.buffer_stats().records == 0


def test_a_wrong_token_keeps_records_buffered_and_says_the_gateway_is_down(tmp_path: Path, scripted: Any) -> None:
    url, script, _ = scripted
    script.append(lambda _: Response.json({"error": "token"}, 401))
    store = Store(tmp_path / "fw.db")
    fwd = forwarder(make_config(url, tmp_path), store)
    fwd.store_items("jsonl", [rec(1)])
    assert fwd.send_step() == 0
    assert not fwd.gateway_up
    assert fwd.counters.value("forward_send_failures_total", reason="unauthorized") == 1
    assert store.buffer_stats().records == 1 and fwd.counters.value("forward_dropped_records_total",
                                                                    reason="refused") == 0


def test_an_unreachable_gateway_backs_off(tmp_path: Path) -> None:
    clock = Clock()
    fwd = forwarder(make_config(f"http://127.0.0.1:{free_port()}/v1/records", tmp_path),
                    Store(tmp_path / "fw.db"), monotonic=clock)
    fwd.store_items("jsonl", [rec(1)])
    fwd.send_step()
    fwd.send_step()  # within the backoff: no second attempt
    assert fwd.counters.value("forward_send_failures_total", reason="connection") == 1
    assert not fwd.gateway_up
    clock.t += 1.0  # the first backoff is between 0.25 and 0.5 s
    fwd.send_step()
    assert fwd.counters.value("forward_send_failures_total", reason="connection") == 2


def test_a_full_buffer_drops_the_oldest_and_counts_them(tmp_path: Path) -> None:
    store = Store(tmp_path / "fw.db")
    fwd = forwarder(make_config("http://127.0.0.1:1/v1/records", tmp_path, max_buffer_bytes=8192,
                                batch_bytes=1024), store)
    for start in range(0, 200, 20):
        fwd.store_items("jsonl", [rec(i) for i in range(start, start + 20)])
    stats = store.buffer_stats()
    dropped = fwd.counters.value("forward_dropped_records_total", reason="buffer_full")
    assert stats.bytes <= 8192 and dropped > 0 and stats.records + dropped == 200
    batch = store.buffered_batch(1, 10_000)
    assert batch is not None and json.loads(batch.bodies[0])["id"] == f"r{int(dropped)}"
