"""What a ``/metrics`` scrape costs, by config shape, and while an ingest backlog runs.

    python -m bench.scrape [--repeat 7] [--quick]

For each shape (proxies × audits × segments) a real daemon (``agent.daemon.Agent``: SQLite store in
a temporary directory, its HTTP listener on 127.0.0.1) is filled with records so that every
segment's detectors are past warm-up, one detect step runs, and ``GET /metrics`` is timed over real
HTTP (a fresh connection each time): min and median of ``--repeat`` scrapes, and the body's size.
The baseline, measured in the same run on the same daemon, is what building the whole exposition
costs (every collector asked afresh and rendered, which is what each scrape did before issue #16);
``/healthz`` on the same listener is the floor of one request.

The backlog case holds the pipeline busy with back-to-back ingest batches (and a detect step now and
then) from another thread while scraping; it reports the median and the worst scrape.

``segments.max_exported`` is the cap on the segments exported (where this agent has it): the
5×4×1000 shape runs without it (``null``) and with it (the default).
"""

from __future__ import annotations

import argparse
import http.client
import logging
import random
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

from prometheus_client import generate_latest

from agent.config import ConfigError, config_from_mapping
from agent.daemon import Agent

REFERENCE_PAIRS = 20  # the smallest reference the config allows: fewer records to get past warm-up
BACKLOG_BATCH = 2000  # records per ingest batch in the backlog case (each carries 20 audited pairs)


@dataclass(frozen=True)
class Shape:
    proxies: int
    audits: int
    segments: int  # 0: no segments (one pair per proxy and audit)
    cap: int | str | None = "default"  # segments.max_exported; "default": leave the key out

    @property
    def name(self) -> str:
        base = f"{self.proxies}×{self.audits}×{self.segments} segments" if self.segments else (
            f"{self.proxies}×{self.audits}, no segments")
        if self.cap == "default":
            return base
        return base + (" (no cap)" if self.cap is None else f" (cap {self.cap})")


def config_for(shape: Shape, state_dir: str) -> dict[str, Any]:
    config: dict[str, Any] = {
        "source": {"type": "http_push", "listen": "shared"},
        "state_dir": state_dir,
        "proxies": [{"name": f"p{i}", "field": f"proxy.p{i}"} for i in range(shape.proxies)],
        "audits": [{"name": f"a{i}", "field": f"audit.a{i}"} for i in range(shape.audits)],
        "schedule": {"detect_seconds": 3600, "ingest_seconds": 3600},  # the bench runs the steps itself
        "detection": {"reference_pairs": REFERENCE_PAIRS},
        "log": {"level": "ERROR"},
    }
    if shape.segments:
        config["segments"] = {"field": "labels.segment", "max_values": shape.segments}
        if shape.cap != "default":
            config["segments"]["max_exported"] = shape.cap
    return config


def records(shape: Shape, count: int, start: int, rng: random.Random) -> list[dict[str, Any]]:
    """Outputs with every proxy and every audit, spread evenly over the segments."""
    now = time.time()
    out = []
    for i in range(start, start + count):
        quality = rng.gauss(0, 1)
        record: dict[str, Any] = {
            "id": f"r{i}", "ts": now - 3600 + i * 1e-3,
            "proxy": {f"p{k}": quality + rng.gauss(0, 0.5) for k in range(shape.proxies)},
            "audit": {f"a{k}": quality + rng.gauss(0, 0.5) for k in range(shape.audits)}}
        if shape.segments:
            record["labels"] = {"segment": f"s{i % shape.segments}"}
        out.append(record)
    return out


def fill(agent: Agent, shape: Shape, per_segment: int, rng: random.Random) -> int:
    assert agent.pipeline is not None
    total = per_segment * max(shape.segments, 1)
    for start in range(0, total, 2000):
        agent.pipeline.ingest_items("bench", records(shape, min(2000, total - start), start, rng))
    agent.pipeline.detect()
    return total


def get(port: int, path: str, accept: str = "") -> tuple[float, int]:
    """Seconds for one request on a fresh connection, and the body's size."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("GET", path, headers={"Accept": accept} if accept else {})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    elapsed = time.perf_counter() - started
    if resp.status != 200:
        raise RuntimeError(f"{path}: {resp.status}")
    return elapsed, len(body)


def full_build_seconds(agent: Agent) -> float:
    """The baseline: every collector asked afresh and the whole exposition rendered, as each scrape did before."""
    started = time.perf_counter()
    generate_latest(agent.wired.registry())  # a new registry builds every family when made or collected
    return time.perf_counter() - started


def timings(fn: Any, repeat: int) -> list[float]:
    return [fn() for _ in range(repeat)]


def measure(shape: Shape, repeat: int, per_segment: int) -> dict[str, Any] | None:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            config = config_from_mapping(config_for(shape, tmp), {})
        except ConfigError:  # an agent without segments.max_exported: it has no cap
            if shape.cap is not None:
                return None
            config = config_from_mapping(config_for(Shape(shape.proxies, shape.audits, shape.segments), tmp), {})
        agent = Agent(config, listen="127.0.0.1:0")
        try:
            fill(agent, shape, per_segment, random.Random(1))
            agent.start()
            get(agent.port, "/metrics")  # warm (a first OpenMetrics or text render)
            scrapes = timings(lambda: get(agent.port, "/metrics")[0], repeat)
            size = get(agent.port, "/metrics")[1]
            health = timings(lambda: get(agent.port, "/healthz")[0], repeat)
            build = timings(lambda: full_build_seconds(agent), 1 if shape.segments >= 1000 else max(3, repeat // 2))
        finally:
            agent.stop()
    return {"shape": shape.name, "min": min(scrapes), "median": statistics.median(scrapes), "bytes": size,
            "healthz": statistics.median(health), "build": statistics.median(build)}


def backlog(repeat: int) -> dict[str, Any]:
    """Scrapes while another thread keeps the pipeline busy with ingest batches and detect steps."""
    shape = Shape(5, 4, 50)
    with tempfile.TemporaryDirectory() as tmp:
        agent = Agent(config_from_mapping(config_for(shape, tmp), {}), listen="127.0.0.1:0")
        try:
            rng = random.Random(2)
            start = fill(agent, shape, REFERENCE_PAIRS + 5, rng)
            agent.start()
            idle = [get(agent.port, "/metrics")[0] for _ in range(repeat)]
            batches = [records(shape, BACKLOG_BATCH, start + k * BACKLOG_BATCH, rng) for k in range(3)]
            stop = threading.Event()
            busy: list[float] = []

            def keep_busy() -> None:
                assert agent.pipeline is not None
                k = 0
                while not stop.is_set():
                    t0 = time.perf_counter()
                    agent.pipeline.ingest_items("bench", batches[k % len(batches)])  # duplicates after one round
                    if k % 3 == 2:
                        agent.pipeline.detect()
                    busy.append(time.perf_counter() - t0)
                    k += 1

            worker = threading.Thread(target=keep_busy, daemon=True)
            worker.start()
            time.sleep(0.3)
            loaded = []
            for _ in range(max(repeat * 2, 10)):
                loaded.append(get(agent.port, "/metrics")[0])
                time.sleep(0.05)
            stop.set()
            worker.join()
        finally:
            agent.stop()
    return {"idle": statistics.median(idle), "median": statistics.median(loaded), "max": max(loaded),
            "step": statistics.median(busy) if busy else float("nan")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="scrapes per shape")
    parser.add_argument("--quick", action="store_true", help="leave out the 5×4×1000 shapes")
    parser.add_argument("--only", default="", help="comma-separated row numbers to run (1-5; 6: the backlog)")
    args = parser.parse_args()
    only = {int(n) for n in args.only.split(",") if n.strip()}
    logging.disable(logging.ERROR)
    shapes = [(Shape(1, 1, 0), 40), (Shape(3, 2, 10), 25), (Shape(5, 4, 50), 25)]
    if not args.quick:
        # 10 records a segment: the 1000-segment pairs stay warming up (no 20,000 reference fits to wait for)
        shapes += [(Shape(5, 4, 1000, cap=None), 10), (Shape(5, 4, 1000), 10)]
    print("| shape | /metrics min | median | bytes | built at scrape time (before #16) | build / scrape | /healthz |")
    print("|---|---|---|---|---|---|---|")
    for number, (shape, per_segment) in enumerate(shapes, 1):
        if only and number not in only:
            continue
        repeat = args.repeat if shape.segments < 1000 or shape.cap not in (None, "default") else 3
        row = measure(shape, repeat if shape.cap is not None else 3, per_segment)
        if row is None:
            print(f"| {shape.name} | n/a (no segments.max_exported in this agent) | | | | | |")
            continue
        print(f"| {row['shape']} | {row['min'] * 1e3:.1f} ms | {row['median'] * 1e3:.1f} ms | "
              f"{row['bytes'] / 1e6:.2f} MB | {row['build'] * 1e3:.1f} ms | {row['build'] / row['median']:.1f}× | "
              f"{row['healthz'] * 1e3:.2f} ms |", flush=True)
    if only and 6 not in only:
        return 0
    b = backlog(args.repeat)
    print(f"\nscrape during an ingest backlog (5×4×50, {BACKLOG_BATCH:,}-record batches back to back, "
          f"a detect step every third; one batch + step median {b['step'] * 1e3:.0f} ms): "
          f"median {b['median'] * 1e3:.1f} ms, "
          f"worst {b['max'] * 1e3:.1f} ms (idle median {b['idle'] * 1e3:.1f} ms; worst / idle "
          f"{b['max'] / b['idle']:.1f}×)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
