"""Run every scenario on several seeds for goodhart-agent, each peer and the oracle.

    python -m bench.run [--seeds N] [--quick] [--methods A,B] [--scenarios WORD,...]

Prints a markdown table: per scenario and method, detections out of seeds (a Goodhart case)
or runs with any alarm (a quiet case), the median delay in audits after the change, and the
false alarms (alarms before the change, or anywhere in a quiet case); over-optimisation cases
also count the seeds whose first alarm after the change came before the audit's peak.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from bench.peers import METHODS
from bench.scenarios import Scenario, all_scenarios


def evaluate(scn: Scenario, method: str, seeds: int) -> tuple[int, float | None, int, int]:
    hits, delays, false, early = 0, [], 0, 0
    for seed in range(seeds):
        s = scn.make(np.random.default_rng(1000 + seed))
        alarms = METHODS[method](s, scn.truth)
        if scn.change is None:
            false += len(alarms)
            continue
        false += sum(1 for i in alarms if i < scn.change)
        post = [i for i in alarms if i >= scn.change]
        if post:
            hits += 1
            delays.append(post[0] - scn.change)
            early += int(scn.peak is not None and post[0] < scn.peak)
    return hits, (statistics.median(delays) if delays else None), false, early


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5, help="seeds per scenario (default 5)")
    ap.add_argument("--quick", action="store_true", help="2 seeds, goodhart-agent and the oracle only")
    ap.add_argument("--methods", default="", help="comma-separated subset of methods (default: all)")
    ap.add_argument("--scenarios", default="", help="only scenarios whose name contains one of these "
                    "comma-separated words")
    args = ap.parse_args(argv)
    seeds = 2 if args.quick else args.seeds
    methods = ["goodhart-agent", "oracle CUSUM"] if args.quick else list(METHODS)
    if args.methods:
        methods = [m.strip() for m in args.methods.split(",")]
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            ap.error(f"unknown methods {unknown}; choose from {list(METHODS)}")
    words = [w.strip() for w in args.scenarios.split(",") if w.strip()]
    t0 = time.perf_counter()
    print(f"Cells: detections/seeds, median delay in audits after the change, false alarms "
          f"[{seeds} seeds; quiet cases show only false alarms]\n")
    print("| scenario | " + " | ".join(methods) + " |")
    print("|---|" + "---|" * len(methods))
    for scn in all_scenarios():
        if words and not any(w in scn.name for w in words):
            continue
        cells = []
        for m in methods:
            hits, delay, false, early = evaluate(scn, m, seeds)
            if scn.change is None:
                cells.append(f"FA {false}")
            else:
                d = "-" if delay is None else f"{delay:g}"
                before = f", {early}/{seeds} before peak" if scn.peak is not None else ""
                cells.append(f"{hits}/{seeds}, {d}, FA {false}{before}")
        print(f"| {scn.name} | " + " | ".join(cells) + " |")
    print(f"\n({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
