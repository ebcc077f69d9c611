"""The detection seam: what the pipeline asks of every detector.

The pipeline feeds each detector the observations of one (proxy, audit, segment) test as they
arrive and asks for a :class:`Verdict` on every detect tick. Proxy values arrive already
*oriented* (multiplied by -1 for ``direction: lower``), so a detector may always assume that a
larger proxy claims a better output. The ok/warn/alarm state machine, its events and the
exported series belong to the pipeline; a detector only reports its current verdict.

Detectors follow River's anatomy: hyper-parameters in ``__init__``, ``update``-style methods that
mutate, a read-only verdict. They must be deterministic for a given sequence of calls (``replay``
promises the same events for the same input) and serialisable (``state_dict``/``load_state``) so a
restart resumes where the last detect tick left off.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Literal

State = Literal["ok", "warn", "alarm"]
STATES: tuple[State, ...] = ("ok", "warn", "alarm")
STATE_CODES: dict[str, int] = {"ok": 0, "warn": 1, "alarm": 2}


@dataclass(frozen=True)
class Verdict:
    """A detector's answer on one detect tick.

    ``statistic`` and ``threshold`` are the decision statistic and the alarm threshold it is
    compared with (NaN when not applicable, e.g. while warming up). ``reason`` is a short
    machine-friendly word ("warming up", "proxy_inflated", "audit_dropped", "relation_lost", ...).
    ``details`` carries extra, JSON-serialisable facts (gap, interval, correlations, samples used)
    that the pipeline copies into events and exported series.
    """

    state: State
    statistic: float = math.nan
    threshold: float = math.nan
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PairObservation:
    """One audited output: its oriented proxy value, its audit value and its sampling weight."""

    ts: float
    proxy: float
    audit: float
    weight: float = 1.0


class Detector(ABC):
    """Contract for one (proxy, audit, segment) test."""

    @abstractmethod
    def observe_proxy(self, ts: float, value: float) -> None:
        """Every output's oriented proxy value, audited or not, in arrival order."""

    @abstractmethod
    def observe_pair(self, obs: PairObservation) -> None:
        """An audited pair, in the order the pairs became complete (output and audit joined)."""

    @abstractmethod
    def verdict(self, now: float) -> Verdict:
        """The verdict at virtual or wall time ``now``; called once per detect tick."""

    @abstractmethod
    def rebaseline(self, now: float) -> None:
        """Forget the reference: the next pairs build a new one (after an intended change)."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state, enough for :meth:`load_state` to resume exactly."""

    @abstractmethod
    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def sufficient_statistics(self) -> dict[str, float]:
        """Monotone sums (counters) that Prometheus can add across replicas; empty by default."""
        return {}
