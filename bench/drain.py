"""How fast a running daemon drains a JSONL backlog, against reading and decoding the same file.

    python -m bench.drain [--records 100000] [--compare DIR] [--in-process]

A real ``goodhart-agent run`` subprocess (a temporary state directory, /metrics on 127.0.0.1)
follows a JSONL file written beforehand (``bench.replay_speed.write_stream``: two thirds outputs,
one third late labels) from its beginning. Progress is the source offset the daemon commits with
every batch, read every ``--every`` seconds from its store by a read-only SQLite connection (a
WAL reader: it neither waits for nor blocks the daemon, where a /metrics scrape would compete with
ingest for the store); once the offset reaches the end of the file, /metrics is scraped until
``goodhart_records_total`` shows every record. The rate is counted from the first committed batch
(process start and imports are reported apart); the longest stretch without a committed batch
while records were still waiting is the largest gap (the ingest job used to wait for its next run
after each 20 × 5,000 records). The baseline, in the same run, is a bare loop reading the file and
``json.loads``-ing each line.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from bench.replay_speed import CONFIG, write_stream

SERIES = re.compile(rb'^goodhart_records_total\{source="jsonl"\} ([0-9.e+]+)$', re.MULTILINE)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(url: str) -> int | None:
    try:
        body = requests.get(url, timeout=5).content
    except requests.RequestException:
        return None  # not listening yet
    found = SERIES.search(body)
    return int(float(found.group(1))) if found else 0


def committed(db: Path, ends: list[int]) -> int:
    """Records up to the offset the daemon committed (0 before its store or first batch exists)."""
    try:
        conn = sqlite3.connect(f"{db.absolute().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            row = conn.execute("SELECT state FROM offsets WHERE source = 'jsonl'").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return 0
    return bisect.bisect_right(ends, int(json.loads(row[0])["offset"])) if row else 0


def drain(stream: Path, ends: list[int], tmp: Path, every: float, timeline: bool = False,
          pythonpath: str | None = None) -> dict[str, float]:
    """Start the daemon on ``stream`` (a new state directory) and time it until every record is counted."""
    port = free_port()
    state = Path(tempfile.mkdtemp(dir=tmp))
    config = {**CONFIG, "state_dir": str(state), "listen": f"127.0.0.1:{port}",
              "source": {"type": "jsonl", "path": str(stream), "start_at": "beginning"}}
    (state / "config.yaml").write_text(json.dumps(config))
    url = f"http://127.0.0.1:{port}/metrics"
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    started = time.perf_counter()
    with open(state / "agent.log", "wb") as log:
        # run from the state directory: ``-m`` puts the working directory first on sys.path, where a
        # checkout's own ``agent`` would shadow the one on ``pythonpath`` (--compare timed this one twice)
        proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(state / "config.yaml")],
                                stdout=subprocess.DEVNULL, stderr=log, env=env, cwd=state)
    try:
        first = last_change = None
        gap = 0.0
        count = previous = at_first = 0
        records = len(ends)
        while count < records:
            if proc.poll() is not None:
                raise SystemExit(f"the agent exited ({proc.returncode}); see its log: {state / 'agent.log'}")
            if time.perf_counter() - started > 600:
                raise SystemExit(f"not drained after 600 s ({count} of {records} records)")
            time.sleep(every)
            now = time.perf_counter()
            count = committed(state / "goodhart.db", ends)
            if count and first is None:
                first = last_change = now
                at_first = count
            elif count != previous and last_change is not None:
                gap = max(gap, now - last_change)
                last_change = now
            previous = count
            if timeline:
                print(f"  {now - started:7.2f} s  {count}", file=sys.stderr)
        done = time.perf_counter()
        while (scrape(url) or 0) < records:  # and the counter shows them all
            time.sleep(every)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert first is not None
    return {"to_first": first - started, "drain": done - first, "total": done - started, "gap": gap,
            "drained": records - at_first}


def in_process(stream: Path, tmp: Path) -> tuple[float, float]:
    """CPU-seconds of ``Pipeline.ingest`` over the whole file, then of one detect step over it, in
    this process (no scheduler, no HTTP, the garbage collector set as the daemon sets it): the
    ingest path's own cost."""
    from agent.clock import WallClock
    from agent.config import config_from_mapping
    from agent.ingest import tune_collector
    from agent.pipeline import Pipeline
    from agent.sources.jsonl import JsonlSource
    from agent.store import Store

    state = Path(tempfile.mkdtemp(dir=tmp))
    config = config_from_mapping({**CONFIG, "state_dir": str(state),
                                  "source": {"type": "jsonl", "path": str(stream)}}, {})
    store = Store(state)
    pipeline = Pipeline(config, store, WallClock())
    source = JsonlSource(stream, config.limits.max_record_bytes, None, "beginning")
    tune_collector()  # as `run` and `replay` do once built
    started = time.process_time()
    pipeline.ingest(source)
    ingest = time.process_time() - started
    started = time.process_time()
    pipeline.detect()
    detect = time.process_time() - started
    source.close()
    store.close()
    return ingest, detect


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--every", type=float, default=0.05, help="seconds between two progress reads")
    parser.add_argument("--timeline", action="store_true", help="print every scrape's count to stderr")
    parser.add_argument("--compare", metavar="DIR", help="also drain with the agent on this PYTHONPATH")
    parser.add_argument("--in-process", action="store_true",
                        help="instead: CPU-seconds of Pipeline.ingest over the file and one detect step, in this "
                             "process (to time another checkout, run this file from within it)")
    args = parser.parse_args()
    agents = {"this": os.environ.get("PYTHONPATH")} | ({"compared": args.compare} if args.compare else {})
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        stream = tmp / "stream.jsonl"
        write_stream(stream, args.records)
        ends = list(itertools.accumulate(len(line) for line in stream.read_bytes().splitlines(keepends=True)))
        lines = len(ends)
        started = time.perf_counter()
        with open(stream, "rb") as f:
            for line in f:
                json.loads(line)
        baseline = time.perf_counter() - started
        if args.in_process:
            ingest, detect = in_process(stream, tmp)
            print(f"records: {lines}; baseline (read + json.loads): {baseline:.2f} s")
            print(f"Pipeline.ingest: {ingest:.2f} CPU-s ({ingest / lines * 1e6:.1f} µs a record, "
                  f"{ingest / baseline:.1f}x the baseline); one detect step over it: {detect:.2f} CPU-s")
            return
        results = {agent: drain(stream, ends, tmp, args.every, args.timeline, path) for agent, path in agents.items()}
    print(f"records: {lines}")
    print(f"baseline (read + json.loads): {baseline:.2f} s  ({lines / baseline:,.0f} records/s)")
    for agent, times in results.items():
        rate = times["drained"] / times["drain"]  # from the first scrape that shows records
        print(f"[{agent}] start until the first batch committed: {times['to_first']:.2f} s")
        print(f"[{agent}] drain: {times['drain']:.2f} s for {times['drained']:,.0f} records: {rate:,.0f} records/s "
              f"({rate / (lines / baseline):.0%} of the baseline's rate); start to drained {times['total']:.2f} s")
        print(f"[{agent}] largest stretch without progress while behind: {times['gap']:.2f} s "
              f"(progress read every {args.every} s)")


if __name__ == "__main__":
    main()
