"""Test support: the real agent as a subprocess on a free port, configs, records, /metrics parsing."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

BASE_CONFIG: dict[str, Any] = {
    "proxies": [
        {"name": "thumbs_up", "field": "proxy.thumbs_up", "direction": "higher"},
        {"name": "resolution_seconds", "field": "proxy.resolution_seconds", "direction": "lower"},
    ],
    "audits": [{"name": "resolved", "field": "audit.resolved"}],
    "segments": {"field": "labels.segment"},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(path: Path, **overrides: Any) -> Path:
    config = json.loads(json.dumps(BASE_CONFIG))
    config.update(overrides)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def parse_metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as {(name, sorted labels): value}."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def wait_until(predicate: Callable[[], object], timeout: float = 20.0, interval: float = 0.05, *,
               what: str) -> object:
    """Poll ``predicate`` until it returns something truthy and return that; fail naming ``what``.

    For tests that wait for a state to be reached instead of sleeping for a fixed time.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last result: {result!r})")
        time.sleep(interval)


class AgentProcess:
    """``goodhart-agent run`` in a subprocess, talking to it only over HTTP and signals."""

    def __init__(self, config: Path, port: int, log_path: Path, args: tuple[str, ...] = ()) -> None:
        self.config = config
        self.port = port
        self.log_path = log_path
        self.args = args  # more ``run`` options, e.g. ("--on-error", "serve")
        self.proc: subprocess.Popen[bytes] | None = None
        #: extra environment for the process (a forwarder's POD_NAME, a token)
        self.env: dict[str, str] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait_ready: bool = True) -> AgentProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config", str(self.config), "--listen", f"127.0.0.1:{self.port}",
             *self.args],
            stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        if wait_ready:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            try:
                if requests.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"agent not ready after {timeout}s:\n{self.log_path.read_text()}")

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        resp = requests.get(self.url + "/metrics", timeout=5)
        resp.raise_for_status()
        return parse_metrics(resp.text)

    def value(self, name: str, **labels: str) -> float | None:
        return self.metrics().get((name, tuple(sorted(labels.items()))))

    def wait_for(self, name: str, expected: float, timeout: float = 20.0, **labels: str) -> float | None:
        """Poll /metrics until the sample equals ``expected``; returns the last value seen."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = self.value(name, **labels)
            if value == expected:
                return value
            time.sleep(0.2)
        return value

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop_quietly(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def record(rid: str, ts: float, thumbs: int = 1, seconds: float = 60.0, segment: str = "billing",
           resolved: int | None = None) -> dict[str, Any]:
    r: dict[str, Any] = {"id": rid, "ts": ts, "labels": {"segment": segment},
                         "proxy": {"thumbs_up": thumbs, "resolution_seconds": seconds}}
    if resolved is not None:
        r["audit"] = {"resolved": resolved}
    return r


def label(rid: str, ts: float, resolved: int) -> dict[str, Any]:
    return {"id": rid, "ts": ts, "audit": {"resolved": resolved}}


def append_lines(path: Path, objects: list[Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        for obj in objects:
            f.write((obj if isinstance(obj, str) else json.dumps(obj)) + "\n")


def support_bot_stream(path: Path, n: int, seed: int = 1, change_at: int | None = None, t0: float = 1_790_000_000.0,
                       interval: float = 1.0, label_fraction: float = 0.5, label_delay: float = 120.0) -> Path:
    """A seeded support-bot stream: outputs with proxies, late labels for a fraction of them.

    After output ``change_at`` the bot games its proxies (faster, more thumbs-up, fewer resolved).
    Labels are written ``label_delay`` seconds after their output, so the file is in time order.
    """
    import heapq
    import math
    import random

    rng = random.Random(seed)
    segments = {"billing": 0.2, "technical": 0.6, "account": 0.4}
    labels: list[tuple[float, int, str]] = []
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            ts = t0 + i * interval
            while labels and labels[0][0] <= ts:
                f.write(heapq.heappop(labels)[2] + "\n")
            gamed = change_at is not None and i >= change_at
            segment = rng.choice(list(segments))
            difficulty = min(1.0, max(0.0, rng.gauss(segments[segment], 0.15)))
            p = 1 / (1 + math.exp(-(2.0 - 3.0 * difficulty))) - (0.35 if gamed else 0.0)
            resolved = int(rng.random() < max(0.05, p))
            seconds = (120 + 480 * difficulty) * math.exp(rng.gauss(0, 0.3)) * (0.45 if gamed else 1.0)
            thumbs = int(rng.random() < ((0.55 + 0.35 * resolved) if gamed else (0.15 + 0.65 * resolved)))
            rid = f"conv-{i:07d}"
            f.write(json.dumps({"id": rid, "ts": ts, "labels": {"segment": segment},
                                "proxy": {"thumbs_up": thumbs, "resolution_seconds": round(seconds, 1)}}) + "\n")
            if rng.random() < label_fraction:
                heapq.heappush(labels, (ts + label_delay, i, json.dumps(
                    {"id": rid, "ts": ts + label_delay, "audit": {"resolved": resolved}})))
        while labels:
            f.write(heapq.heappop(labels)[2] + "\n")
    return path
