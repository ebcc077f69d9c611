"""Fleet mode's ingest: records through N forwarders into one gateway, against the same records pushed
to the gateway directly.

    python -m bench.fleet [--forwarders 3] [--records 30000]

Both runs use a fresh gateway process (an ordinary agent with an ``http_push`` source) and the same
records, with two computed proxies (a word count and a keyword match). Direct: N client threads
POST NDJSON batches of ``--batch`` records, uncompressed, as an app would; the gateway computes the
proxies. Fleet: N forwarder processes each tail their own JSONL file, compute the proxies, add the
pod's identity and POST gzip batches; the gateway takes the computed values. Figures: records/s
from the first record written to the last one stored at the gateway, and the gateway's CPU (user +
system, from /proc/<pid>/stat before and after) per 1,000 records; the ratios compare the two runs
made here, on the same machine, since it is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

PROXIES = [{"name": "thumbs_up", "field": "proxy.thumbs_up"},
           {"name": "words", "compute": {"kind": "length", "field": "output", "unit": "words"}},
           {"name": "apology", "compute": {"kind": "match", "field": "output",
                                           "keywords": ["sorry", "apologise", "unfortunately"]}}]
AUDITS = [{"name": "resolved", "field": "audit.resolved"}]
TEXT = ("Thanks for reaching out. I have reset the billing cycle on your account and the duplicate charge "
        "will be refunded within five working days. Is there anything else I can help you with today?")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def record(i: int) -> dict[str, Any]:
    r: dict[str, Any] = {"id": f"conv-{i:08d}", "ts": 1_790_000_000.0 + i, "output": TEXT,
                         "labels": {"segment": ("billing", "technical", "account")[i % 3]},
                         "proxy": {"thumbs_up": i % 2}}
    if i % 4 == 0:
        r["audit"] = {"resolved": i % 3 % 2}
    return r


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (fields 14 and 15 of /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Proc:
    """``goodhart-agent run`` in a subprocess."""

    def __init__(self, config: dict[str, Any], workdir: Path, name: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        path = workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        log = open(workdir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config", str(path), "--listen", f"127.0.0.1:{self.port}"],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        log.close()
        wait(lambda: self._ready(), 60, f"{name} ready")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"agent exited with {self.proc.returncode}")
        try:
            return requests.get(f"http://127.0.0.1:{self.port}/readyz", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    def value(self, name: str, **labels: str) -> float:
        text = requests.get(f"http://127.0.0.1:{self.port}/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return float(s.value)
        return 0.0

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


def wait(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def gateway(workdir: Path, name: str) -> tuple[Proc, int]:
    push = free_port()
    config = {"source": {"type": "http_push", "listen": f"127.0.0.1:{push}", "max_in_flight": 8},
              "state_dir": str(workdir / name), "proxies": PROXIES, "audits": AUDITS,
              "segments": {"field": "labels.segment"}, "log": {"level": "WARNING"}}
    return Proc(config, workdir, name), push


def measure(gw: Proc, total: int, start: Callable[[], None]) -> tuple[float, float]:
    """(seconds, gateway CPU seconds) from ``start()`` until the gateway has counted ``total`` records."""
    cpu0, t0 = cpu_seconds(gw.proc.pid), time.monotonic()
    start()
    wait(lambda: gw.value("goodhart_records_total", source="http_push") >= total, 600, f"{total} records")
    return time.monotonic() - t0, cpu_seconds(gw.proc.pid) - cpu0


def direct(workdir: Path, forwarders: int, per: int, batch: int) -> tuple[float, float]:
    gw, push = gateway(workdir, "gateway-direct")
    url = f"http://127.0.0.1:{push}/v1/records"

    def client(n: int) -> None:
        lines = [json.dumps(record(n * per + i)).encode() for i in range(per)]
        with requests.Session() as session:
            for k in range(0, per, batch):
                body = b"\n".join(lines[k:k + batch]) + b"\n"
                while session.post(url, data=body, headers={"Content-Type": "application/x-ndjson"},
                                   timeout=60).status_code == 429:
                    time.sleep(0.05)

    def start() -> None:
        threads = [threading.Thread(target=client, args=(n,)) for n in range(forwarders)]
        for t in threads:
            t.start()

    try:
        return measure(gw, forwarders * per, start)
    finally:
        gw.stop()


def fleet(workdir: Path, forwarders: int, per: int, batch: int) -> tuple[float, float]:
    gw, push = gateway(workdir, "gateway-fleet")
    procs: list[Proc] = []
    files = [workdir / f"pod-{n}.jsonl" for n in range(forwarders)]
    for n, path in enumerate(files):
        path.touch()
        config = {"source": {"type": "jsonl", "path": str(path)}, "state_dir": str(workdir / f"pod-{n}"),
                  "proxies": PROXIES, "audits": AUDITS, "segments": {"field": "labels.segment"},
                  "log": {"level": "WARNING"}, "schedule": {"ingest_seconds": 0.2},
                  "forward": {"url": f"http://127.0.0.1:{push}/v1/records", "batch_records": batch,
                              "flush_seconds": 0.2}}
        procs.append(Proc(config, workdir, f"pod-{n}", {"POD_NAME": f"pod-{n}"}))
    texts = ["".join(json.dumps(record(n * per + i)) + "\n" for i in range(per)) for n in range(forwarders)]

    def start() -> None:
        for path, text in zip(files, texts, strict=True):
            path.write_text(text)

    try:
        return measure(gw, forwarders * per, start)
    finally:
        for p in procs:
            p.stop()
        gw.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--forwarders", type=int, default=3, help="forwarders (and direct clients), default 3")
    parser.add_argument("--records", type=int, default=30_000, help="records in all, default 30000")
    parser.add_argument("--batch", type=int, default=500, help="records per POST, default 500")
    args = parser.parse_args(argv)
    per = args.records // args.forwarders
    total = per * args.forwarders
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        d_sec, d_cpu = direct(Path(tmp), args.forwarders, per, args.batch)
        f_sec, f_cpu = fleet(Path(tmp), args.forwarders, per, args.batch)
    d_rate, f_rate = total / d_sec, total / f_sec
    d_k, f_k = 1000 * d_cpu / total, 1000 * f_cpu / total
    print(f"{total} records, {args.forwarders} clients/forwarders, batches of {args.batch}, {os.cpu_count()} cores")
    print(f"direct push   : {d_rate:8.0f} records/s, gateway CPU {1000 * d_k:6.1f} ms per 1,000 records")
    print(f"via forwarders: {f_rate:8.0f} records/s, gateway CPU {1000 * f_k:6.1f} ms per 1,000 records")
    print(f"ratios (forwarders / direct): throughput {f_rate / d_rate:.2f}x, gateway CPU per record {f_k / d_k:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
