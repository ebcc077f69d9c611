"""The ok/warn/alarm state machine: one state per (proxy, audit, segment), one event per change.

Detectors only give verdicts; this module turns them into state changes with the CONTRACT's event
fields, remembers since when the current state holds, and serialises itself with the detectors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from agent.detect.base import Verdict

PairKey = tuple[str, str, str]  # (proxy, audit, segment); segment "*" for the whole stream


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass
class AlarmState:
    state: str = "ok"
    since: float | None = None
    initialised: bool = False


class AlarmBook:
    def __init__(self) -> None:
        self._states: dict[PairKey, AlarmState] = {}

    def state(self, key: PairKey) -> AlarmState:
        return self._states.setdefault(key, AlarmState())

    def update(self, key: PairKey, verdict: Verdict, now: float) -> dict[str, Any] | None:
        """Record the verdict; the CONTRACT event when the state changed, else None.

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
        return make_event(key, verdict, previous, now, state)

    @staticmethod
    def effective_state(current: str, verdict: Verdict) -> str:
        """An alarm latches until the detector says ``ok`` (or a rebaseline restarts warm-up).

        A CUSUM hovering around its threshold would otherwise flap alarm → warn → alarm, each
        flap restarting the page's ``for:`` timer and spamming the events file.
        """
        if current == "alarm" and verdict.state == "warn" and verdict.reason != "warming up":
            return "alarm"
        return verdict.state

    def to_dict(self, key: PairKey) -> dict[str, Any]:
        s = self.state(key)
        return {"state": s.state, "since": s.since, "initialised": s.initialised}

    def load(self, key: PairKey, data: dict[str, Any]) -> None:
        self._states[key] = AlarmState(str(data.get("state", "ok")), data.get("since"),
                                       bool(data.get("initialised", False)))


def make_event(key: PairKey, verdict: Verdict, previous: str, now: float,
               state: str | None = None) -> dict[str, Any]:
    proxy, audit, segment = key
    event: dict[str, Any] = {
        "ts": now, "proxy": proxy, "audit": audit, "segment": segment,
        "state": state or verdict.state, "previous": previous,
        "statistic": _finite_or_none(float(verdict.statistic)),
        "threshold": _finite_or_none(float(verdict.threshold)),
    }
    if verdict.reason:
        event["reason"] = verdict.reason
    for name, value in sorted(verdict.details.items()):
        event.setdefault(name, _finite_or_none(value))
    return event
