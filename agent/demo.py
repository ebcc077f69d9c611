"""``demo``: a simulated support bot, watched by the real daemon, that learns to game its proxies.

The bot answers conversations in three segments. Each conversation gets a thumbs-up or not and a
resolution time (the proxies); whether it was *actually resolved* (the audit) arrives later as a
label, for half of the conversations, like a ticket that is or is not reopened. After
``change_after`` seconds of demo time a new bot version starts closing conversations early:
resolution time and thumbs-up improve, actual resolution falls. The daemon's pipeline (JSONL
source, store, scheduler, exporter) runs on embedded defaults in a temporary state directory; a
reviewer (an OpenAI-compatible judge stand-in on 127.0.0.1) scores a sample on a 1-5 rubric, and
when skops is installed a small text model trained at start gives a learned proxy. The simulated
world lives in :mod:`agent.demo_world`.
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

from agent.bank import Event
from agent.config import Config, config_from_mapping
from agent.daemon import Agent
from agent.demo_world import ReviewerJudge, SupportBot, train_thumbs_model
from agent.explain import sentence


def demo_config(state_dir: Path, records_path: Path, speedup: float, judge_url: str,
                model_path: Path | None) -> Config:
    proxies: list[dict[str, Any]] = [
        {"name": "thumbs_up", "field": "proxy.thumbs_up", "direction": "higher"},
        {"name": "resolution_seconds", "field": "proxy.resolution_seconds", "direction": "lower"},
        {"name": "answer_words", "compute": {"kind": "length", "field": "output", "unit": "words"}},
    ]
    if model_path is not None:
        proxies.append({"name": "predicted_thumbs", "compute": {"kind": "model", "path": str(model_path),
                                                                "field": "output", "version": "demo-v1"}})
    return config_from_mapping({
        "source": {"type": "jsonl", "path": str(records_path)},
        "proxies": proxies,
        "audits": [
            {"name": "resolved", "field": "audit.resolved"},
            {"name": "rubric", "llm_judge": {
                "base_url": judge_url, "model": "demo-reviewer", "prompt": ReviewerJudge.PROMPT, "scale": [1, 5],
                "concurrency": 4, "budget": {"per_minute": 600 * speedup},
                "price_per_1k_prompt_tokens": 0.15, "price_per_1k_completion_tokens": 0.6}},
        ],
        "audit_sampling": {"rate": 0.3},
        "segments": {"field": "labels.segment"},
        "state_dir": str(state_dir),
        "schedule": {"ingest_seconds": max(0.1, 1.0 / speedup), "detect_seconds": max(0.5, 15.0 / speedup),
                     "retention_seconds": max(1.0, 300.0 / speedup), "audit_seconds": max(0.1, 1.0 / speedup)},
        "log": {"level": "WARNING", "format": "text"},
    }, environ={})


def describe(event: Event) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(event["ts"]))
    return f"[{stamp}] {sentence(event)}"


def run_demo(listen: str, speedup: float = 1.0, change_after: float = 120.0, duration: float = 0.0,
             rate: float = 10.0, state_dir: str | None = None, seed: int = 7, out: IO[str] = sys.stdout,
             label_delay: float = 20.0, label_fraction: float = 0.5) -> int:
    """Runs until ``duration`` demo seconds have passed (0: until interrupted); returns an exit code."""
    tmp = tempfile.TemporaryDirectory(prefix="goodhart-demo-") if state_dir is None else None
    base = Path(tmp.name if tmp else str(state_dir))
    base.mkdir(parents=True, exist_ok=True)
    records_path = base / "outputs.jsonl"
    bot = SupportBot(seed)
    judge = ReviewerJudge(bot)
    model_path = base / "thumbs-model.skops"
    has_model = train_thumbs_model(model_path, seed)
    config = demo_config(base / "state", records_path, speedup, judge.base_url,
                         model_path if has_model else None)
    from agent.logs import setup_logging

    setup_logging(config.log.level, config.log.format)
    logging.getLogger("agent.events").setLevel(logging.ERROR)  # the demo prints events itself
    agent = Agent(config, listen)
    lock = threading.Lock()

    def print_event(event: Event) -> None:
        if event["segment"] != "*" and event["state"] != "alarm":
            return  # per-segment warm-up and clears are noise on a terminal; /metrics has it all
        with lock:
            out.write(describe(event) + "\n")
            out.flush()

    assert agent.pipeline is not None  # the demo's config has no forward: section
    agent.pipeline.event_sinks.append(print_event)
    stop = threading.Event()
    writer = threading.Thread(target=_write_records, name="demo-bot", daemon=True,
                              args=(bot, records_path, speedup, change_after, rate, label_delay, label_fraction,
                                    stop, out, lock))
    host, port = str(agent.server.httpd.server_address[0]), agent.server.port
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    out.write(f"goodhart-agent demo: metrics at http://{shown}:{port}/metrics (Ctrl-C to stop)\n"
              f"  records: {records_path}\n  reviewer (an LLM judge stand-in): {judge.base_url}\n"
              f"  learned proxy: {'predicted_thumbs' if has_model else 'off (pip install skops to enable)'}\n"
              f"  the bot starts gaming its proxies after {change_after:g}s of demo time"
              f" ({change_after / speedup:g}s of wall time)\n")
    out.flush()
    judge.start()
    agent.start()
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
        judge.stop()
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
