"""The ok/warn/alarm state machine: one state per (proxy, audit, segment), one event per change.

Detectors only give verdicts; this module turns them into :class:`StateChange` s with the CONTRACT's
event fields, remembers since when the current state holds, and serialises itself with the detectors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from agent.core import PairKey
from agent.detect.base import STATES, Estimates, State, Verdict

__all__ = ["AlarmBook", "AlarmState", "StateChange"]


def _finite_or_none(value: float) -> float | None:
    return None if not math.isfinite(value) else value


@dataclass(frozen=True)
class StateChange:
    """One pair's move from ``previous`` to ``state`` at ``ts``, with the verdict that moved it.

    :meth:`as_event` is the replay event line (CONTRACT "Replay events"): the fixed keys, then
    ``reason`` when there is one, then the verdict's estimates in name order.
    """

    ts: float
    proxy: str
    audit: str
    segment: str
    state: State
    previous: State
    statistic: float
    threshold: float
    reason: str = ""
    estimates: Estimates = field(default_factory=Estimates)

    @classmethod
    def of(cls, key: PairKey, verdict: Verdict, previous: State, now: float, state: State | None = None) -> StateChange:
        """The change a verdict makes; ``state`` when the alarm latch overrides the verdict's own."""
        proxy, audit, segment = key
        return cls(now, proxy, audit, segment, state or verdict.state, previous, float(verdict.statistic),
                   float(verdict.threshold), verdict.reason, verdict.estimates)

    def as_event(self) -> dict[str, Any]:
        """The JSON-ready event; NaN becomes null. Estimates never overwrite the fixed keys."""
        event: dict[str, Any] = {
            "ts": self.ts, "proxy": self.proxy, "audit": self.audit, "segment": self.segment,
            "state": self.state, "previous": self.previous,
            "statistic": _finite_or_none(self.statistic), "threshold": _finite_or_none(self.threshold),
        }
        if self.reason:
            event["reason"] = self.reason
        for name, value in self.estimates.reported().items():
            event.setdefault(name, value)
        return event


@dataclass
class AlarmState:
    state: State = "ok"
    since: float | None = None
    initialised: bool = False


class AlarmBook:
    def __init__(self) -> None:
        self._states: dict[PairKey, AlarmState] = {}

    def state(self, key: PairKey) -> AlarmState:
        return self._states.setdefault(key, AlarmState())

    def update(self, key: PairKey, verdict: Verdict, now: float) -> dict[str, Any] | None:
        """Record the verdict; the CONTRACT event (:meth:`StateChange.as_event`) when the state
        changed, else None.

        The first verdict of a pair is an event too (from ``ok``), so a replay's events file always
        shows when each pair left warming-up and when it alarmed.
        """
        current = self.state(key)
        state = self.effective_state(current.state, verdict)
        if current.initialised and current.state == state:
            return None
        previous = current.state
        current.state, current.since, current.initialised = state, now, True
        if previous == state:
            return None
        return StateChange.of(key, verdict, previous, now, state).as_event()

    @staticmethod
    def effective_state(current: State, verdict: Verdict) -> State:
        """An alarm latches until the detector says ``ok`` (or a rebaseline restarts warm-up).

        A CUSUM hovering around its threshold would otherwise flap alarm → warn → alarm, each
        flap restarting the page's ``for:`` timer and spamming the events file.
        """
        if current == "alarm" and verdict.state == "warn" and not verdict.warming_up:
            return "alarm"
        return verdict.state

    def to_dict(self, key: PairKey) -> dict[str, Any]:
        s = self.state(key)
        return {"state": s.state, "since": s.since, "initialised": s.initialised}

    def load(self, key: PairKey, data: dict[str, Any]) -> None:
        raw = data.get("state", "ok")
        state: State = STATES[STATES.index(raw)] if raw in STATES else "ok"  # unknown to this version: ok
        self._states[key] = AlarmState(state, data.get("since"), bool(data.get("initialised", False)))

