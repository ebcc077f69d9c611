"""A seeded support-bot stream for examples/verbosity.yaml: answers get longer, resolution does not.

Each conversation has a hidden quality; the bot's answer is longer when it works the problem
harder, so before the change answer length genuinely tracks "resolved" (a useful proxy). After
``--change-at`` a new version pads every answer with boilerplate whose length has nothing to do
with the problem: lengths jump, the resolution rate stays where it was. Outputs carry only text;
the audit (resolved or not) arrives later as a label for ``--label-fraction`` of them.

    python examples/verbosity_stream.py --out verbosity.jsonl [--outputs 6000] [--change-at 3500]
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import random

T0 = 1_790_000_000.0
SEGMENTS = ("billing", "technical", "account")
WORDS = ("please", "check", "the", "router", "settings", "invoice", "account", "password", "reset", "update",
         "your", "plan", "refund", "we", "have", "processed", "request", "restart", "device", "again")
PADDING = ("I hope this helps and thank you so much for your patience today", "Let me know if there is anything"
           " else at all that I can help you with", "As a reminder our support team is always here for you",
           "Great question and I completely understand how frustrating this can be")


def answer(rng: random.Random, words: int, padding_words: int, apologise: bool) -> str:
    text = " ".join(rng.choice(WORDS) for _ in range(words))
    pad: list[str] = []
    while sum(len(p.split()) for p in pad) < padding_words:
        pad.append(rng.choice(PADDING))
    return ("Sorry for the trouble. " if apologise else "") + text.capitalize() + "." + "".join(
        f" {p}." for p in pad)


def write_stream(path: str, outputs: int, change_at: int, seed: int, label_fraction: float,
                 label_delay: float, interval: float) -> None:
    rng = random.Random(seed)
    labels: list[tuple[float, int, str]] = []
    with open(path, "w", encoding="utf-8") as out:
        for i in range(outputs):
            ts = T0 + i * interval
            while labels and labels[0][0] <= ts:
                out.write(heapq.heappop(labels)[2] + "\n")
            quality = rng.gauss(0.0, 1.0)
            resolved = int(rng.random() < 1 / (1 + math.exp(-(0.3 + 1.2 * quality))))
            words = max(8, round(70 + 25 * quality + rng.gauss(0, 12)))
            padding = round(rng.uniform(40, 440)) if i >= change_at else 0
            rid = f"conv-{i:07d}"
            record = {"id": rid, "ts": ts, "labels": {"segment": rng.choice(SEGMENTS)},
                      "input": "My issue is not solved", "output": answer(rng, words, padding, rng.random() < 0.1)}
            out.write(json.dumps(record) + "\n")
            if rng.random() < label_fraction:
                label = {"id": rid, "ts": ts + label_delay, "audit": {"resolved": resolved}}
                heapq.heappush(labels, (ts + label_delay, i, json.dumps(label)))
        while labels:
            out.write(heapq.heappop(labels)[2] + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSONL file to write")
    parser.add_argument("--outputs", type=int, default=6000, help="conversations (default 6000)")
    parser.add_argument("--change-at", type=int, default=3500, help="first padded conversation (default 3500)")
    parser.add_argument("--seed", type=int, default=11, help="random seed (default 11)")
    parser.add_argument("--label-fraction", type=float, default=0.5, help="share of outputs audited (default 0.5)")
    parser.add_argument("--label-delay", type=float, default=120.0, help="seconds until a label (default 120)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between conversations (default 1)")
    args = parser.parse_args()
    write_stream(args.out, args.outputs, args.change_at, args.seed, args.label_fraction, args.label_delay,
                 args.interval)


if __name__ == "__main__":
    main()
