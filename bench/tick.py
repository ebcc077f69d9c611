"""Cost of one detect tick with 100,000 pairs in the window.

    python -m bench.tick

Reports the median time of one new pair plus ``verdict()`` and its ratio to a baseline measured in the same run on
the same arrays (a weighted mean, ``np.dot(w, x) / w.sum()``), so the figure travels across
machines. Target (issue #4): a tick <= 200 ms on one core.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from agent.detect.base import PairObservation
from agent.detect.decoupling import DecouplingDetector

N = 100_000


def _median_seconds(fn: object, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    rng = np.random.default_rng(0)
    p = rng.normal(size=N + 200)
    a = 0.6 * p + rng.normal(scale=0.8, size=N + 200)
    det = DecouplingDetector(arl0=200_000, window=N)
    t0 = time.perf_counter()
    for i in range(N + 200):
        det.observe_pair(PairObservation(float(i), float(p[i]), float(a[i])))
    per_pair = (time.perf_counter() - t0) / (N + 200)
    w = np.ones(N)
    x = a[-N:]
    base = _median_seconds(lambda: float(np.dot(w, x) / w.sum()), 50)
    extra = iter(range(N + 200, N + 10_000))

    def tick_with_a_new_pair() -> None:
        # A real tick follows new pairs; without one, verdict() reuses its cached window estimates.
        i = next(extra)
        det.observe_pair(PairObservation(float(i), 0.1, 0.05))
        det.verdict(float(i))

    tick = _median_seconds(tick_with_a_new_pair, 15)
    print(f"verdict() with {det.verdict(0).estimates.samples} pairs in the window: {tick * 1e3:.1f} ms "
          f"(baseline weighted mean {base * 1e6:.0f} us; ratio {tick / base:.0f}x); "
          f"observe_pair {per_pair * 1e6:.1f} us per pair")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
