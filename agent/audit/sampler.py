"""Which outputs get audited: consistent hashing on the id, optionally stratified by proxy quantile.

Every output's id is hashed to a number ``u`` in [0, 1); the output is audited when ``u`` falls
below its inclusion probability. The hash depends on nothing but the id (and a shared salt), so
replicas of one service that see the same output pick it, or skip it, without talking, and a
re-delivered output gets the same answer as the first time.

Stratification oversamples where gaming concentrates: the top of the proxy. The recent window of
one proxy's (oriented) values gives each new output a mid-rank quantile, hence a stratum ``k``
and a probability ``p_k = min(1, rate * w_k / mean(w))``; the strata are equally large, so the
expected audit rate stays ``rate`` unless some ``p_k`` hits 1. Each audited output carries the
weight ``rate / p_k``: its inverse inclusion probability scaled so that uniform sampling gives
weight 1 and the weights average 1 over the audited sample. Weighted (Hájek) estimates over the
audited sample are then unbiased for the whole stream. Replicas agree on stratified picks except
near stratum boundaries, where their windows may rank an output differently.
"""

from __future__ import annotations

import bisect
import hashlib
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from agent.config import StratifyConfig

MIN_WINDOW = 100  # values the window needs before quantiles mean anything


def hash_unit(rid: str, salt: str = "") -> float:
    """A uniform number in [0, 1) that depends only on the id and the salt.

    >>> hash_unit("conv-1") == hash_unit("conv-1")
    True
    >>> 0.0 <= hash_unit("conv-1", salt="fleet-a") < 1.0
    True
    """
    digest = hashlib.blake2b(f"{salt}\0{rid}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


@dataclass(frozen=True)
class Decision:
    selected: bool
    probability: float
    weight: float  # rate / probability: 1 under uniform sampling


class Sampler:
    """Decides per output; ``offer`` also feeds the quantile window when stratifying."""

    def __init__(self, rate: float, salt: str = "", stratify: StratifyConfig | None = None,
                 direction: float = 1.0) -> None:
        if not 0.0 < rate <= 1.0:
            raise ValueError("rate must be in (0, 1]")
        self.rate = rate
        self.salt = salt
        self.proxy = stratify.proxy if stratify else None
        self.direction = direction
        weights = list(stratify.weights) if stratify else [1.0]
        mean = sum(weights) / len(weights)
        self.probabilities = [min(1.0, rate * w / mean) for w in weights]
        self.window_size = stratify.window if stratify else 0
        self._fifo: deque[float] = deque()
        self._sorted: list[float] = []

    # -- the quantile window ------------------------------------------------------------------------
    def observe(self, value: float) -> None:
        """Add one raw proxy value (oriented here) to the window, evicting the oldest."""
        oriented = value * self.direction
        self._fifo.append(oriented)
        bisect.insort(self._sorted, oriented)
        if len(self._fifo) > self.window_size:
            old = self._fifo.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]

    def warm(self, values: Iterable[float]) -> None:
        """Refill the window after a restart (oldest first)."""
        for value in values:
            self.observe(value)

    def stratum(self, value: float) -> int | None:
        """The stratum of a raw proxy value: 0 worst … K-1 best; None while the window is short."""
        n = len(self._sorted)
        if self.proxy is None or n < min(self.window_size, MIN_WINDOW):
            return None
        oriented = value * self.direction
        rank = (bisect.bisect_left(self._sorted, oriented) + bisect.bisect_right(self._sorted, oriented)) / (2 * n)
        return min(len(self.probabilities) - 1, int(rank * len(self.probabilities)))

    # -- decisions ----------------------------------------------------------------------------------------
    def probability(self, value: float | None) -> float:
        if value is None:
            return self.rate
        k = self.stratum(value)
        return self.rate if k is None else self.probabilities[k]

    def decide(self, rid: str, value: float | None = None) -> Decision:
        p = self.probability(value)
        return Decision(hash_unit(rid, self.salt) < p, p, self.rate / p)

    def offer(self, rid: str, proxies: dict[str, float]) -> Decision:
        """Decide on one new output from the window as it was, then add the output to it."""
        value = proxies.get(self.proxy) if self.proxy else None
        decision = self.decide(rid, value)
        if value is not None:
            self.observe(value)
        return decision
