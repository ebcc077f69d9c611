"""How fast ``replay`` runs a recorded stream, as a process, against reading and decoding the same file.

    python -m bench.replay_speed [--records 60000] [--runs 3] [--compare DIR]

Each run times three processes on the same file, alternating: the baseline ``python -c 'import
json,sys; [json.loads(l) for l in open(sys.argv[1],"rb")]' FILE`` (the floor any replay pays),
``goodhart-agent replay`` over the whole stream, and ``replay`` over its first record only (process
start, imports, config and store: what any replay pays before its first record). Ratios are what to
compare between runs (the machines are shared and noisy); medians over the runs are printed.
``--compare DIR`` also times the agent found on that ``PYTHONPATH`` (another checkout) in the same
runs, e.g. the code before a change.

The agent runs from compiled bytecode, as it does when installed (pip and the image compile it):
``PYTHONDONTWRITEBYTECODE`` is dropped for the timed processes and one untimed run per agent
writes the ``.pyc`` files first; otherwise every run would recompile the agent's modules (about
0.07 s of each start).
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from agent.demo_world import SupportBot

CHECKOUT = Path(__file__).resolve().parents[1]  # the agent timed as "this": the one beside this bench
BASELINE = 'import json,sys; [json.loads(l) for l in open(sys.argv[1],"rb")]'

CONFIG = {
    "proxies": [{"name": "thumbs_up", "field": "proxy.thumbs_up"},
                {"name": "resolution_seconds", "field": "proxy.resolution_seconds", "direction": "lower"}],
    "audits": [{"name": "resolved", "field": "audit.resolved"}],
    "segments": {"field": "labels.segment"},
}


def write_stream(path: Path, records: int, seed: int = 1) -> None:
    """Two thirds outputs, one third late labels (half the outputs get one, two minutes later)."""
    bot = SupportBot(seed)
    outputs = records * 2 // 3
    labels: list[tuple[float, int, str]] = []
    with open(path, "w", encoding="utf-8") as f:
        for i in range(outputs):
            ts = 1_790_000_000.0 + i
            while labels and labels[0][0] <= ts:
                f.write(heapq.heappop(labels)[2] + "\n")
            record, resolved = bot.conversation(ts, gamed=i > outputs // 2)
            f.write(json.dumps(record) + "\n")
            if i % 2 == 0:
                heapq.heappush(labels, (ts + 120, i, json.dumps(
                    {"id": record["id"], "ts": ts + 120, "audit": {"resolved": resolved}})))
        while labels:
            f.write(heapq.heappop(labels)[2] + "\n")


def timed(args: list[str], pythonpath: str | None = None) -> float:
    """Wall seconds of one process, start to exit."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    started = time.perf_counter()
    # Run from a neutral directory: ``-m`` puts the working directory first on sys.path, so run from a
    # checkout, both agents would be that checkout's.
    subprocess.run(args, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=60_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--compare", metavar="DIR", help="also time the agent on this PYTHONPATH")
    args = parser.parse_args()
    agents = {"this": str(CHECKOUT)} | ({"compared": args.compare} if args.compare else {})
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        stream, first = tmp / "stream.jsonl", tmp / "first.jsonl"
        write_stream(stream, args.records)
        with open(stream, "rb") as f:
            lines = f.readlines()
        first.write_bytes(lines[0])
        config = tmp / "config.yaml"
        config.write_text(json.dumps(CONFIG))
        for path in agents.values():  # untimed: writes the bytecode the timed runs load
            timed([sys.executable, "-m", "agent", "replay", "--config", str(config), str(first),
                   "--events-out", os.devnull], path)
        for _ in range(args.runs):
            times.setdefault("baseline", []).append(timed([sys.executable, "-c", BASELINE, str(stream)]))
            for agent, path in agents.items():
                for what, source in (("replay", stream), ("start", first)):
                    times.setdefault(f"{agent} {what}", []).append(timed(
                        [sys.executable, "-m", "agent", "replay", "--config", str(config), str(source),
                         "--events-out", os.devnull], path))
    median = {key: statistics.median(values) for key, values in times.items()}
    base = median["baseline"]
    print(f"records: {len(lines)}; medians of {args.runs} runs, each process timed from start to exit")
    print(f"baseline (python -c read + json.loads):  {base:.2f} s  ({len(lines) / base:,.0f} records/s)")
    for agent in agents:
        whole, start = median[f"{agent} replay"], median[f"{agent} start"]
        print(f"[{agent}] replay:                 {whole:.2f} s  ({len(lines) / whole:,.0f} records/s); "
              f"rate {base / whole:.1%} of the baseline's (target 25%)")
        print(f"[{agent}] replay of one record:   {start:.2f} s  (start, imports, config, store: "
              f"{start / (4 * base):.0%} of the 25% target's whole budget of {4 * base:.2f} s)")


if __name__ == "__main__":
    main()
