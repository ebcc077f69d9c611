"""The lab of ``scripts/attacks.py``: the real agent in a subprocess on 127.0.0.1, raw sockets, /metrics.

Kept apart from ``tests/support.py`` on purpose: the attack script runs outside pytest, and the agent
must never depend on the tests. Everything here talks to the agent only over HTTP, sockets, signals
and its files, as an attacker would.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
T0 = 1_790_000_000.0
BASE_CONFIG: dict[str, Any] = {
    "proxies": [
        {"name": "thumbs_up", "field": "proxy.thumbs_up", "direction": "higher"},
        {"name": "resolution_seconds", "field": "proxy.resolution_seconds", "direction": "lower"},
    ],
    "audits": [{"name": "resolved", "field": "audit.resolved"}],
    "segments": {"field": "labels.segment"},
}
FAST_SCHEDULE = {"ingest_seconds": 0.2, "detect_seconds": 0.5, "retention_seconds": 60}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def agent_env() -> dict[str, str]:
    """The environment of every agent subprocess: this checkout's ``agent`` first on the path."""
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": f"{REPO}{os.pathsep}{path}" if path else str(REPO)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; that value, or the last one at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result or time.monotonic() >= deadline:
            return result
        time.sleep(interval)


def record(rid: str, ts: float, thumbs: int = 1, seconds: float = 60.0, segment: str = "billing",
           resolved: int | None = None) -> dict[str, Any]:
    r: dict[str, Any] = {"id": rid, "ts": ts, "labels": {"segment": segment},
                         "proxy": {"thumbs_up": thumbs, "resolution_seconds": seconds}}
    if resolved is not None:
        r["audit"] = {"resolved": resolved}
    return r


def proc_status(pid: int) -> dict[str, int]:
    """RSS in KiB and thread count of a live process, from /proc (Linux)."""
    found = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "Threads"):
                found[key] = int(value.split()[0])
    return found


class Lab:
    """A temporary directory holding every agent the run starts; ``close`` kills whatever is left."""

    def __init__(self, keep: bool = False) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="goodhart-attacks-"))
        self.keep = keep
        self.agents: list[Agent] = []
        self._shared: dict[str, Agent] = {}

    def dir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def config(self, name: str, **overrides: Any) -> Path:
        """A config file in the directory ``name`` with its own state dir; ``overrides`` replace top-level keys."""
        config = json.loads(json.dumps(BASE_CONFIG))
        config.update({"state_dir": str(self.dir(name) / "state"), "schedule": FAST_SCHEDULE,
                       "log": {"level": "INFO", "format": "json"}})
        config.update(overrides)
        path = self.dir(name) / "config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def agent(self, name: str, config: Path, listen: str = "127.0.0.1") -> Agent:
        agent = Agent(config, free_port(), self.dir(name) / "agent.log", listen)
        self.agents.append(agent)
        return agent

    def shared(self, name: str, make: Callable[[Lab], Agent]) -> Agent:
        """One running agent that several attacks use in turn (each looks at the deltas it causes)."""
        if name not in self._shared or not self._shared[name].alive():
            self._shared[name] = make(self).start()
        return self._shared[name]

    def close(self) -> None:
        for agent in self.agents:
            agent.stop_quietly()
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)


class Agent:
    """``python -m agent run`` in a subprocess, known only by its port, its pid and its log."""

    def __init__(self, config: Path, port: int, log_path: Path, host: str = "127.0.0.1") -> None:
        self.config, self.port, self.log_path, self.host = config, port, log_path, host
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> list[str]:
        return [sys.executable, "-m", "agent", "run", "--config", str(self.config),
                "--listen", f"{self.host}:{self.port}"]

    def start(self, wait_ready: bool = True) -> Agent:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         env=agent_env())
        if wait_ready:
            ready = wait_until(lambda: not self.alive() or self.readyz()[0] == 200, timeout=60, interval=0.1)
            if not ready or not self.alive():
                raise RuntimeError(f"agent did not get ready:\n{self.log_path.read_text()[-2000:]}")
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def readyz(self) -> tuple[int, str]:
        try:
            resp = requests.get(self.url + "/readyz", timeout=5)
        except requests.RequestException as err:
            return 0, type(err).__name__
        return resp.status_code, resp.text.strip()

    def metrics(self) -> Samples:
        resp = requests.get(self.url + "/metrics", timeout=10)
        resp.raise_for_status()
        samples = {}
        for family in text_string_to_metric_families(resp.text):
            for s in family.samples:
                samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return samples

    def value(self, name: str, **labels: str) -> float:
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)

    def wait_value(self, name: str, expected: float, timeout: float = 20.0, **labels: str) -> float:
        """Poll /metrics until the sample reaches ``expected``; the last value seen."""
        return float(wait_until(lambda: (v := self.value(name, **labels)) >= expected and v, timeout, 0.2)
                     or self.value(name, **labels))

    def status(self) -> dict[str, int]:
        return proc_status(self.pid)

    def post(self, path: str, timeout: float = 10.0, **kwargs: Any) -> requests.Response:
        return requests.post(self.url + path, timeout=timeout, **kwargs)

    def terminate(self, timeout: float = 30.0) -> tuple[int, float]:
        """SIGTERM; the exit code and the seconds it took."""
        assert self.proc is not None
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        return code, time.monotonic() - start

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop_quietly(self) -> None:
        if self.alive():
            self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


# -- raw sockets -----------------------------------------------------------------------------------------------
def raw(port: int, data: bytes, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if data:
        sock.sendall(data)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or resets it)."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (ConnectionResetError, TimeoutError):
        pass
    return b"".join(chunks)


def status_of(answer: bytes) -> int:
    """The status code of the first answer on a connection; 0 if none came."""
    parts = answer.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and answer.startswith(b"HTTP/") and parts[1].isdigit() else 0


def seconds_until_closed(sock: socket.socket, limit: float) -> float | None:
    """How long until the server closes ``sock`` (None if still open after ``limit`` seconds)."""
    start = time.monotonic()
    sock.settimeout(limit)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return None
    return time.monotonic() - start


# -- streams for replay ----------------------------------------------------------------------------------------
def support_bot_stream(path: Path, n: int, seed: int = 1, change_at: int | None = None,
                       label_fraction: float = 0.5, label_delay: float = 120.0) -> Path:
    """A seeded support-bot stream with late labels (the tests' generator, kept here so the script
    needs no test code): after output ``change_at`` the bot games its proxies."""
    import heapq

    rng = random.Random(seed)
    segments = {"billing": 0.2, "technical": 0.6, "account": 0.4}
    labels: list[tuple[float, int, str]] = []
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            ts = T0 + i
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


def replay(lab: Lab, name: str, stream: Path, **overrides: Any) -> tuple[list[dict[str, Any]], str]:
    """``agent replay`` of ``stream``: its state-change events and its stderr."""
    config = json.loads(json.dumps(BASE_CONFIG))
    config.update(overrides)
    path = lab.dir(name) / "replay.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    events = lab.dir(name) / "events.jsonl"
    run = subprocess.run([sys.executable, "-m", "agent", "replay", "--config", str(path), str(stream),
                          "--events-out", str(events)], capture_output=True, text=True, timeout=300,
                         env=agent_env())
    if run.returncode != 0:
        raise RuntimeError(f"replay failed ({run.returncode}): {run.stderr[-2000:]}")
    return [json.loads(line) for line in events.read_text().splitlines()], run.stderr
