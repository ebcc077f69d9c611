"""Pushes per second on one keep-alive connection, against a bare server in the same run.

    python -m bench.push_rate [--pushes 300] [--batch 100] [--compare CHECKOUT [--rounds 3]]

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
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

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


ROOT = Path(__file__).resolve().parent.parent


def rate(port: int, bodies: list[bytes]) -> float:
    """Requests per second, one keep-alive connection, one request at a time, from a client
    process of its own (as an app is; in this process it would contend for the server's GIL).
    The client is ``http.client``: ``requests`` costs ~1 ms a call here and made the client the bound."""
    return rate_and_cpu(port, bodies)[0]


def rate_and_cpu(port: int, bodies: list[bytes]) -> tuple[float, float]:
    """Requests per second (as :func:`rate`) and this process's CPU microseconds per request."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        cpu = time.process_time()
        per_second = float(pool.apply(_client_rate, (port, bodies)))
        return per_second, 1e6 * (time.process_time() - cpu) / len(bodies)


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


def measure(pushes: int, batch: int) -> dict[str, float]:
    """Rates and CPU per push of the agent's push source and of the bare server, single and batched."""
    logging.basicConfig(level=logging.ERROR)  # these records carry no audits, and the agent would say so

    def bodies(size: int, tag: str) -> list[bytes]:
        return [b"".join(json.dumps({"id": f"{tag}{i}-{j}", "ts": time.time(), "proxy": {"thumbs_up": 1}}).encode()
                         + b"\n" for j in range(size)) for i in range(pushes)]

    bare = ThreadingHTTPServer(("127.0.0.1", 0), _Bare)
    threading.Thread(target=bare.serve_forever, daemon=True).start()
    bare_port = int(bare.server_address[1])
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        config = config_from_mapping({**CONFIG, "state_dir": tmp,
                                      "source": {"type": "http_push", "listen": "127.0.0.1:0"}}, {})
        store = Store(Path(tmp))
        assert config.source is not None
        source = HttpPushSource.from_config(config.source, Pipeline(config, store, WallClock()).ingest_items, None)
        source.start()
        out["single"], out["single_cpu_us"] = rate_and_cpu(source.port, bodies(1, "s"))
        out["single_bare"], out["single_bare_cpu_us"] = rate_and_cpu(bare_port, bodies(1, "s"))
        out["batched"], out["batched_cpu_us"] = rate_and_cpu(source.port, bodies(batch, "b"))
        out["batched_bare"], out["batched_bare_cpu_us"] = rate_and_cpu(bare_port, bodies(batch, "b"))
        source.close()
        store.close()
    bare.shutdown()
    return out


def report(m: dict[str, float], batch: int) -> str:
    return "\n".join([
        f"single-record pushes: {m['single']:,.0f} requests/s  (bare server {m['single_bare']:,.0f}/s, "
        f"ratio {m['single'] / m['single_bare']:.2f}); CPU {m['single_cpu_us']:.0f} us a push "
        f"(bare {m['single_bare_cpu_us']:.0f})",
        f"{batch}-record pushes:    {m['batched'] * batch:,.0f} records/s  "
        f"(bare server {m['batched_bare'] * batch:,.0f}/s, ratio {m['batched'] / m['batched_bare']:.2f}); "
        f"CPU {m['batched_cpu_us']:.0f} us a push (bare {m['batched_bare_cpu_us']:.0f})"])


def measure_checkout(checkout: Path, pushes: int, batch: int) -> dict[str, float]:
    """:func:`measure` in a process of its own whose ``agent`` package is the one in ``checkout``."""
    code = (f"import sys, json; sys.path.insert(0, {str(checkout.resolve())!r}); import agent; "
            f"sys.path.insert(0, {str(ROOT)!r}); from bench.push_rate import measure; "
            f"print(json.dumps(measure({pushes}, {batch})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def compare(other: Path, rounds: int, pushes: int, batch: int) -> str:
    """This checkout and ``other`` measured in turn, ``rounds`` times each: medians and ratios."""
    runs: dict[str, list[dict[str, float]]] = {"this": [], "other": []}
    for _ in range(rounds):
        runs["this"].append(measure_checkout(ROOT, pushes, batch))
        runs["other"].append(measure_checkout(other, pushes, batch))
    med: dict[str, dict[str, Any]] = {
        side: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for side, rs in runs.items()}
    lines = [f"{side} ({ROOT if side == 'this' else other}), medians of {rounds}:\n{report(med[side], batch)}"
             for side in ("other", "this")]
    ratio = {k: med["this"][k] / med["other"][k] for k in ("single", "single_cpu_us", "batched", "batched_cpu_us")}
    lines.append(f"this / other: single-record rate x{ratio['single']:.2f}, CPU a push x{ratio['single_cpu_us']:.2f}; "
                 f"{batch}-record rate x{ratio['batched']:.2f}, CPU a push x{ratio['batched_cpu_us']:.2f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pushes", type=int, default=300)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--compare", type=Path, help="another checkout whose agent is measured in turn")
    parser.add_argument("--rounds", type=int, default=3, help="measurements of each side with --compare")
    args = parser.parse_args()
    if args.compare is not None:
        print(compare(args.compare, args.rounds, args.pushes, args.batch))
    else:
        print(report(measure(args.pushes, args.batch), args.batch))


if __name__ == "__main__":
    main()
