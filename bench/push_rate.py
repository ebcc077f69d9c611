"""Pushes per second on one keep-alive connection, against a bare server in the same run.

    python -m bench.push_rate [--pushes 300] [--batch 100]

The agent's push source (a real store in a temporary directory, on 127.0.0.1) is measured with
single-record pushes and with batches, sent by a client in a process of its own; the baseline is a
bare standard-library HTTP server on the same loopback that answers every POST with an empty 202
without reading anything into a store.
Both sides set TCP_NODELAY as the agent's listeners do. The ratios are what to compare between
runs: the machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import multiprocessing
import socket
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from agent.clock import WallClock
from agent.config import config_from_mapping
from agent.pipeline import Pipeline
from agent.sources.http_push import HttpPushSource
from agent.store import Store

CONFIG = {"proxies": [{"name": "thumbs_up", "field": "proxy.thumbs_up"}],
          "audits": [{"name": "resolved", "field": "audit.resolved"}]}


class _Bare(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def rate(port: int, bodies: list[bytes]) -> float:
    """Requests per second, one keep-alive connection, one request at a time, from a client
    process of its own (as an app is; in this process it would contend for the server's GIL).
    The client is ``http.client``: ``requests`` costs ~1 ms a call here and made the client the bound."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return float(pool.apply(_client_rate, (port, bodies)))


def _client_rate(port: int, bodies: list[bytes]) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Content-Type": "application/x-ndjson"}
    try:
        conn.request("POST", "/v1/records", bodies[0], headers)  # connect
        conn.getresponse().read()
        started = time.perf_counter()
        for body in bodies[1:]:
            conn.request("POST", "/v1/records", body, headers)
            resp = conn.getresponse()
            text = resp.read()
            assert resp.status == 202, text
        return (len(bodies) - 1) / (time.perf_counter() - started)
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pushes", type=int, default=300)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # these records carry no audits, and the agent would say so

    def bodies(size: int, tag: str) -> list[bytes]:
        return [b"".join(json.dumps({"id": f"{tag}{i}-{j}", "ts": time.time(), "proxy": {"thumbs_up": 1}}).encode()
                         + b"\n" for j in range(size)) for i in range(args.pushes)]

    bare = ThreadingHTTPServer(("127.0.0.1", 0), _Bare)
    threading.Thread(target=bare.serve_forever, daemon=True).start()
    bare_port = int(bare.server_address[1])
    with tempfile.TemporaryDirectory() as tmp:
        config = config_from_mapping({**CONFIG, "state_dir": tmp,
                                      "source": {"type": "http_push", "listen": "127.0.0.1:0"}}, {})
        store = Store(Path(tmp))
        assert config.source is not None
        source = HttpPushSource.from_config(config.source, Pipeline(config, store, WallClock()).ingest_items, None)
        source.start()
        single, single_bare = rate(source.port, bodies(1, "s")), rate(bare_port, bodies(1, "s"))
        batched, batched_bare = rate(source.port, bodies(args.batch, "b")), rate(bare_port, bodies(args.batch, "b"))
        source.close()
        store.close()
    bare.shutdown()
    print(f"single-record pushes: {single:,.0f} requests/s  (bare server {single_bare:,.0f}/s, "
          f"ratio {single / single_bare:.2f})")
    print(f"{args.batch}-record pushes:    {batched * args.batch:,.0f} records/s  "
          f"(bare server {batched_bare * args.batch:,.0f}/s, ratio {batched / batched_bare:.2f})")


if __name__ == "__main__":
    main()
