"""How fast ``replay`` runs a recorded stream, against reading and decoding the same file.

    python -m bench.replay_speed [--records 60000]

The baseline is the floor any replay pays (read every line, ``json.loads`` it); the figure that
matters is the ratio, measured in the same run, since the machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import heapq
import io
import json
import tempfile
import time
from pathlib import Path

from agent.config import config_from_mapping
from agent.demo_world import SupportBot
from agent.replay import replay

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=60_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stream = Path(tmp) / "stream.jsonl"
        write_stream(stream, args.records)
        with open(stream, "rb") as f:
            lines = sum(1 for _ in f)
        started = time.perf_counter()
        with open(stream, "rb") as f:
            for line in f:
                json.loads(line)
        baseline = time.perf_counter() - started
        summary = replay(config_from_mapping(CONFIG, {}), stream, io.StringIO(), progress=io.StringIO())
    print(f"records: {lines}")
    print(f"baseline (read + json.loads): {baseline:.2f} s")
    print(f"goodhart-agent replay:        {summary.seconds:.2f} s  ({lines / summary.seconds:,.0f} records/s)")
    print(f"ratio replay / baseline:      {summary.seconds / baseline:.0f}x")


if __name__ == "__main__":
    main()
