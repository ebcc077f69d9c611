"""``demo``: a simulated support bot, watched by the real daemon, that learns to game its proxies.

The bot answers conversations in three segments. Each conversation gets a thumbs-up or not and a
resolution time (the proxies); whether it was *actually resolved* (the audit) arrives later as a
label, for half of the conversations, like a ticket that is or is not reopened. After
``change_after`` seconds of demo time a new bot version starts closing conversations early:
resolution time and thumbs-up improve, actual resolution falls. The daemon's pipeline (JSONL
source, store, scheduler, exporter) runs on embedded defaults in a temporary state directory.
"""

from __future__ import annotations

import json
import logging
import math
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

from agent.config import Config, config_from_mapping
from agent.daemon import Agent
from agent.pipeline import Event

SEGMENTS = {"billing": 0.2, "technical": 0.6, "account": 0.4}  # typical difficulty


def demo_config(state_dir: Path, records_path: Path, speedup: float) -> Config:
    return config_from_mapping({
        "source": {"type": "jsonl", "path": str(records_path)},
        "proxies": [
            {"name": "thumbs_up", "field": "proxy.thumbs_up", "direction": "higher"},
            {"name": "resolution_seconds", "field": "proxy.resolution_seconds", "direction": "lower"},
        ],
        "audits": [{"name": "resolved", "field": "audit.resolved"}],
        "segments": {"field": "labels.segment"},
        "state_dir": str(state_dir),
        "schedule": {"ingest_seconds": max(0.1, 1.0 / speedup), "detect_seconds": max(0.5, 15.0 / speedup),
                     "retention_seconds": max(1.0, 300.0 / speedup)},
        "log": {"level": "WARNING", "format": "text"},
    }, environ={})


class SupportBot:
    """Generates conversations; ``gamed`` switches on the early-closing version."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.count = 0

    def conversation(self, ts: float, gamed: bool) -> tuple[dict[str, Any], int]:
        rng = self.rng
        self.count += 1
        segment = rng.choice(list(SEGMENTS))
        difficulty = min(1.0, max(0.0, rng.gauss(SEGMENTS[segment], 0.15)))
        p_resolved = 1 / (1 + math.exp(-(2.0 - 3.0 * difficulty)))
        if gamed:
            p_resolved = max(0.05, p_resolved - 0.35)
        resolved = int(rng.random() < p_resolved)
        seconds = (120 + 480 * difficulty) * math.exp(rng.gauss(0, 0.3))
        p_thumbs = 0.15 + 0.65 * resolved
        if gamed:
            seconds *= 0.45
            p_thumbs = 0.55 + 0.35 * resolved
        record = {"id": f"conv-{self.count:07d}", "ts": round(ts, 3),
                  "labels": {"segment": segment, "model": "bot-v2" if gamed else "bot-v1"},
                  "proxy": {"thumbs_up": int(rng.random() < p_thumbs), "resolution_seconds": round(seconds, 1)}}
        return record, resolved


def describe(event: Event) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(event["ts"]))
    text = (f"[{stamp}] {event['proxy']} vs {event['audit']} [{event['segment']}]: "
            f"{event['previous']} -> {event['state'].upper() if event['state'] == 'alarm' else event['state']}")
    if event.get("reason"):
        text += f" ({event['reason']}"
        if isinstance(event.get("gap"), int | float):
            text += f", gap {event['gap']:.2f}"
        text += ")"
    return text


def run_demo(listen: str, speedup: float = 1.0, change_after: float = 120.0, duration: float = 0.0,
             rate: float = 10.0, state_dir: str | None = None, seed: int = 7, out: IO[str] = sys.stdout,
             label_delay: float = 20.0, label_fraction: float = 0.5) -> int:
    """Runs until ``duration`` demo seconds have passed (0: until interrupted); returns an exit code."""
    tmp = tempfile.TemporaryDirectory(prefix="goodhart-demo-") if state_dir is None else None
    base = Path(tmp.name if tmp else str(state_dir))
    base.mkdir(parents=True, exist_ok=True)
    records_path = base / "outputs.jsonl"
    config = demo_config(base / "state", records_path, speedup)
    from agent.logs import setup_logging

    setup_logging(config.log.level, config.log.format)
    logging.getLogger("agent.events").setLevel(logging.ERROR)  # the demo prints events itself
    agent = Agent(config, listen)
    lock = threading.Lock()

    def print_event(event: Event) -> None:
        with lock:
            out.write(describe(event) + "\n")
            out.flush()

    agent.pipeline.event_sinks.append(print_event)
    stop = threading.Event()
    bot = SupportBot(seed)
    writer = threading.Thread(target=_write_records, name="demo-bot", daemon=True,
                              args=(bot, records_path, speedup, change_after, rate, label_delay, label_fraction,
                                    stop, out, lock))
    agent.start()
    host, port = str(agent.server.httpd.server_address[0]), agent.server.port
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    out.write(f"goodhart-agent demo: metrics at http://{shown}:{port}/metrics (Ctrl-C to stop)\n"
              f"  records: {records_path}\n  the bot starts gaming its proxies after {change_after:g}s of demo time"
              f" ({change_after / speedup:g}s of wall time)\n")
    out.flush()
    writer.start()
    try:
        deadline = time.monotonic() + duration / speedup if duration > 0 else math.inf
        while time.monotonic() < deadline:
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        writer.join(timeout=5)
        agent.stop()
        if tmp is not None:
            tmp.cleanup()
    return 0


def _write_records(bot: SupportBot, path: Path, speedup: float, change_after: float, rate: float,
                   label_delay: float, label_fraction: float, stop: threading.Event, out: IO[str],
                   lock: threading.Lock) -> None:
    start = time.time()
    pending: list[tuple[float, str]] = []  # (wall time due, label line)
    announced = False
    tick = 0.1
    with open(path, "a", encoding="utf-8") as handle:
        demo_seconds = 0.0
        while not stop.is_set():
            now = time.time()
            demo_seconds = (now - start) * speedup
            gamed = demo_seconds >= change_after
            if gamed and not announced:
                announced = True
                with lock:
                    out.write(f"[{time.strftime('%H:%M:%S')}] bot-v2 deployed: it now closes conversations early\n")
                    out.flush()
            for _ in range(_poisson(bot.rng, rate * speedup * tick)):
                record, resolved = bot.conversation(now, gamed)
                handle.write(json.dumps(record) + "\n")
                if bot.rng.random() < label_fraction:
                    label = {"id": record["id"], "ts": round(now, 3), "audit": {"resolved": resolved}}
                    pending.append((now + label_delay / speedup, json.dumps(label)))
            due = [line for when, line in pending if when <= now]
            pending = [(when, line) for when, line in pending if when > now]
            for line in due:
                handle.write(line + "\n")
            handle.flush()
            stop.wait(tick)


def _poisson(rng: random.Random, mean: float) -> int:
    if mean > 50:  # normal approximation; exp(-mean) would underflow
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1
