"""What the report shows of one pair, read from the store and the detectors' snapshot, bounded.

Audited outputs come from the store's ``pairs`` table (the reference period, the recent window,
everything since the reference, the current excursion), the statistic over time from the recorded
verdicts (``verdicts``), the state history from the event log: nothing is recomputed that the
detectors already said.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from agent.bank import Snapshot
from agent.config import Config
from agent.core import ALL, PairKey
from agent.detect.base import ReferenceLine, Verdict
from agent.evidence import directions_of, evidence, excursion_start
from agent.store import Store, VerdictRow

SERIES_LIMIT = 20_000  # audited outputs per pair behind the time series (the newest)
HISTORY_LIMIT = 5_000  # recorded verdicts per pair behind the statistic's plot
STATE_ORDER = {"alarm": 0, "warn": 1, "ok": 2}

#: (ts, proxy value as recorded, audit value, weight)
Values = list[tuple[float, float, float, float]]


@dataclass(frozen=True)
class PairData:
    key: PairKey
    state: str
    verdict: Verdict | None
    line: ReferenceLine | None
    direction: float
    state_since: float | None  # when the pair entered its current state (an alarm: when it was raised)
    excursion_since: float | None  # the start of the current excursion (the detector's estimate)
    reference: Values = field(default_factory=list)
    recent: Values = field(default_factory=list)
    series: Values = field(default_factory=list)
    excursion: Values = field(default_factory=list)
    history: list[VerdictRow] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    evidence: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        proxy, audit, segment = self.key
        return f"{proxy} vs {audit} [{segment}]"

    def predicted(self, proxy_value: float) -> float:
        """What the reference promises for a proxy value as recorded."""
        assert self.line is not None
        return self.line.predict(self.direction * proxy_value)


def selected_keys(snapshot: Snapshot) -> list[PairKey]:
    """Every pair not ok, and every whole-stream pair: alarms first, then warnings."""
    keys = [k for k, state in snapshot.states.items() if state != "ok" or k[2] == ALL]
    return sorted(keys, key=lambda k: (STATE_ORDER.get(snapshot.states[k], 3), k[2] != ALL, k))


def gather(config: Config, store: Store, snapshot: Snapshot) -> list[PairData]:
    """The report's data for each selected pair."""
    events = [e for e in store.recent_events(config.retention.max_events) if "state" in e and "proxy" in e]
    directions = directions_of(config)
    return [_pair(config, store, snapshot, key, directions, events) for key in selected_keys(snapshot)]


def _pair(config: Config, store: Store, snapshot: Snapshot, key: PairKey, directions: dict[str, float],
          events: list[dict[str, Any]]) -> PairData:
    line = snapshot.lines.get(key)
    since = excursion_start(snapshot, key)
    mine = [e for e in events if (e.get("proxy"), e.get("audit"), e.get("segment")) == key]
    common: dict[str, Any] = {
        "key": key, "state": snapshot.states[key], "verdict": snapshot.verdicts.get(key), "line": line,
        "direction": directions.get(key[0], 1.0), "state_since": snapshot.since.get(key),
        "excursion_since": since, "history": store.verdict_history(*key, HISTORY_LIMIT), "events": mine,
        "evidence": evidence(store, snapshot, key, directions, config.evidence)}
    if line is None:
        return PairData(**common)
    start = line.baseline_ts if line.baseline_ts is not None else -math.inf
    return PairData(
        **common,
        reference=store.pair_values(*key, start, line.pairs),
        recent=store.pair_values(*key, start, config.detection.window, newest=True),
        series=store.pair_values(*key, start, SERIES_LIMIT, newest=True),
        excursion=store.pair_values(*key, since, SERIES_LIMIT) if since is not None else [])
