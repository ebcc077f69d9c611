"""Pushes per second on one keep-alive connection, against a bare server in the same run.

    python -m bench.push_rate [--pushes 300] [--batch 100]

The agent's push source (a real store in a temporary directory, on 127.0.0.1) is measured with
single-record pushes and with batches; the baseline is a bare standard-library HTTP server on the
same loopback that answers every POST with an empty 202 without reading anything into a store.
Both sides set TCP_NODELAY as the agent's listeners do. The ratios are what to compare between
runs: the machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

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


def rate(url: str, bodies: list[bytes]) -> float:
    """Requests per second, one keep-alive connection, one request at a time."""
    with requests.Session() as session:
        session.post(url, data=bodies[0], headers={"Content-Type": "application/x-ndjson"}, timeout=10)  # connect
        started = time.perf_counter()
        for body in bodies[1:]:
            resp = session.post(url, data=body, headers={"Content-Type": "application/x-ndjson"}, timeout=10)
            assert resp.status_code == 202, resp.text
        return (len(bodies) - 1) / (time.perf_counter() - started)


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
    bare_url = f"http://127.0.0.1:{bare.server_address[1]}/v1/records"
    with tempfile.TemporaryDirectory() as tmp:
        config = config_from_mapping({**CONFIG, "state_dir": tmp,
                                      "source": {"type": "http_push", "listen": "127.0.0.1:0"}}, {})
        store = Store(Path(tmp))
        source = HttpPushSource.from_config(config, Pipeline(config, store, WallClock()).ingest_items, None)
        source.start()
        url = f"http://127.0.0.1:{source.port}/v1/records"
        single, single_bare = rate(url, bodies(1, "s")), rate(bare_url, bodies(1, "s"))
        batched, batched_bare = rate(url, bodies(args.batch, "b")), rate(bare_url, bodies(args.batch, "b"))
        source.close()
        store.close()
    bare.shutdown()
    print(f"single-record pushes: {single:,.0f} requests/s  (bare server {single_bare:,.0f}/s, "
          f"ratio {single / single_bare:.2f})")
    print(f"{args.batch}-record pushes:    {batched * args.batch:,.0f} records/s  "
          f"(bare server {batched_bare * args.batch:,.0f}/s, ratio {batched / batched_bare:.2f})")


if __name__ == "__main__":
    main()
