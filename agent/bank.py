"""The detector bank: one detector and one alarm state per pair, fed from the store, checkpointed with it.

A *pair* is one test of a proxy against an audit in one segment (``*`` for the whole stream). The
bank reads what the store received since its cursors (new outputs feed the proxy side, new audited
outputs the relation), asks every detector for a verdict, runs the alarm state machine and keeps
the snapshot the exporter reads. Detectors and cursors are saved together (a *checkpoint*), so
after a crash the detectors resume where they were and are re-fed exactly what came after.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.alarms import AlarmBook
from agent.core import ALL, PairKey
from agent.detect.base import Detector, PairObservation, ReferenceInfo, ReferenceLine, Verdict
from agent.detect.plausible import Plausibility
from agent.explain import rank_by_shift
from agent.store import Store

log = logging.getLogger(__name__)

Event = dict[str, Any]
CURSORS = ("detect.outputs", "detect.pairs")
#: (proxy, audit, segment, ts, state, body): one recorded verdict, for the report's plots
HistoryRow = tuple[str, str, str, float, str, dict[str, Any]]
HISTORY_FIELDS = ("gap", "gap_lower", "gap_upper", "samples", "since", "excursion_pairs", "warn_threshold")
_HISTORY_NAMES = frozenset(HISTORY_FIELDS)


def _number(value: float) -> float | None:
    return value if math.isfinite(value) else None


class UnknownPair(LookupError):
    """A selector names a proxy, audit or segment the agent does not have."""


@dataclass(frozen=True)
class Snapshot:
    """What the exporter shows, rebuilt at the end of every detect step; never mutated."""

    verdicts: dict[PairKey, Verdict] = field(default_factory=dict)
    states: dict[PairKey, str] = field(default_factory=dict)  # after the alarm latch
    since: dict[PairKey, float | None] = field(default_factory=dict)
    lines: dict[PairKey, ReferenceLine | None] = field(default_factory=dict)
    sufficient: dict[PairKey, dict[str, float]] = field(default_factory=dict)
    references: dict[PairKey, ReferenceInfo] = field(default_factory=dict)  # pairs past warm-up
    taken_at: float = 0.0
    generation: int = 0


def key_text(key: PairKey) -> str:
    """A pair's key in the store's detectors (and reference_imports) table."""
    return json.dumps(list(key))


class DetectorBank:
    """Detectors by pair; the caller serialises calls (the pipeline's lock)."""

    def __init__(self, store: Store, make_detector: Callable[[], Detector], settings: dict[str, Any],
                 directions: dict[str, float], audits: list[str], history_seconds: float = 60.0,
                 plausible_multiple: float = 0.0) -> None:
        """``plausible_multiple``: values beyond that many robust spreads of a metric's recent values
        are kept out of the detectors and counted (agent/detect/plausible.py); 0 turns that off."""
        self.store = store
        self.plausibility = Plausibility(plausible_multiple) if plausible_multiple > 0 else None
        self.implausible: dict[tuple[str, str], int] = {}  # (kind, metric) -> values left out, not yet counted
        self.make_detector = make_detector
        self.settings = settings
        self.directions = directions
        self.audits = audits
        self.detectors: dict[PairKey, Detector] = {}
        self.alarms = AlarmBook()
        self.snapshot = Snapshot()
        self.cursors = {name: store.get_cursor(name) for name in CURSORS}
        self._dirty: set[PairKey] = set()  # detectors changed since their state was last saved
        self.history_seconds = history_seconds
        self.history: list[HistoryRow] = []  # verdicts to record; the pipeline takes them into the store
        self._recorded: dict[PairKey, tuple[float, str, float]] = {}  # last recorded (ts, state, statistic)

    def load(self) -> list[PairKey]:
        """Resume saved detectors; returns the pairs whose saved settings differ (they start afresh)."""
        changed: list[PairKey] = []
        for key_text, state in sorted(self.store.load_detectors().items()):
            key: PairKey = tuple(json.loads(key_text))  # type: ignore[assignment]
            if state.get("settings", {}) != self.settings:
                # A detector calibrated for other settings would silently break the documented
                # false-alarm budget: start it afresh, as after a rebaseline.
                changed.append(key)
                continue
            detector = self.make_detector()
            detector.load_state(state["detector"])
            self.detectors[key] = detector
            self.alarms.load(key, state["alarm"])
        for proxy in self.directions:
            for audit in self.audits:
                self.detector((proxy, audit, ALL))
        return changed

    def start_from(self, pinned: dict[PairKey, dict[str, Any]]) -> None:
        """These pairs start from pinned references (a reference artifact) instead of warming up;
        their alarm states carry on, so the next verdict says what changed."""
        for key, state in pinned.items():
            detector = self.make_detector()
            detector.load_reference(state)
            self.detectors[key] = detector
            self._dirty.add(key)

    def detector(self, key: PairKey) -> Detector:
        """The detector for ``key``, created on first use; marked as changed, since it is about to be."""
        detector = self.detectors.get(key)
        if detector is None:
            detector = self.detectors[key] = self.make_detector()
        self._dirty.add(key)
        return detector

    def feed(self) -> None:
        """Everything the store received since the cursors: the rows just stored come from memory
        (the store's feed logs, agent/store/feed.py), older ones from SQLite; the logs then let go."""
        outputs, pairs = self.cursors["detect.outputs"], self.cursors["detect.pairs"]
        while rows := self.store.outputs_since(outputs):
            for row in rows:
                self._feed_output(row.ts, row.segment, row.proxies)
            outputs = rows[-1].seq
        directions = self.directions
        while audited := self.store.pairs_since(pairs):
            for pair_row in audited:
                if not (self._plausible("proxy", pair_row.proxy, pair_row.proxy_value, counted=False)
                        and self._plausible("audit", pair_row.audit, pair_row.audit_value)):
                    continue
                obs = PairObservation(pair_row.ts, pair_row.proxy_value * directions.get(pair_row.proxy, 1.0),
                                      pair_row.audit_value, pair_row.weight, pair_row.segment)
                star = self.detector((pair_row.proxy, pair_row.audit, ALL))
                star.observe_pair(obs)
                if pair_row.segment is not None:
                    segment = self.detector((pair_row.proxy, pair_row.audit, pair_row.segment))
                    if self._follows(star, segment, pair_row.segment):
                        segment.observe_pair(obs)
            pairs = audited[-1].seq
        self.cursors = {"detect.outputs": outputs, "detect.pairs": pairs}
        self.store.release_feed(outputs, pairs)
        self._adopt()

    def _follows(self, star: Detector, segment: Detector, name: str) -> bool:
        """Whether a segment's detector takes pairs: it has its reference, or gets it now from the
        whole-stream test's reference span (never from its own pairs after the span); a
        whole-stream test that does not pool leaves its segments to fit their own."""
        if not star.pools_segments or segment.reference_info() is not None:
            return True
        pinned = star.segment_reference(name)
        if pinned is None:
            return False
        segment.adopt_reference(pinned)
        return True

    def _adopt(self) -> None:
        """Segments waiting for a reference get it as soon as their pair's reference span ends."""
        for key, segment in list(self.detectors.items()):
            if key[2] != ALL and segment.reference_info() is None:
                star = self.detectors.get((key[0], key[1], ALL))
                if star is not None and star.pools_segments and star.reference_info() is not None \
                        and self._follows(star, segment, key[2]):
                    self._dirty.add(key)

    def fitted_events(self, before: set[PairKey], now: float) -> list[Event]:
        """A ``reference_fitted`` event per pair whose whole-stream reference is new since ``before``:
        the span of audited outputs it was fitted on, and the segments that took theirs from it."""
        refs = self.snapshot.references
        return [{"ts": now, "event": "reference_fitted", "proxy": key[0], "audit": key[1],
                 "first_ts": refs[key].first_ts, "last_ts": refs[key].last_ts,
                 "segments": sorted(k[2] for k in refs if k[:2] == key[:2] and k[2] != ALL)}
                for key in sorted(set(refs) - before) if key[2] == ALL and refs[key].origin == "fitted"]

    def with_span(self, keys: list[PairKey]) -> list[PairKey]:
        """``keys`` and every other test sharing a reference span with one of them (all segments
        of a pair whose whole-stream test pools them): a rebaseline resets the span for all."""
        pairs = {(k[0], k[1]) for k in keys
                 if (star := self.detectors.get((k[0], k[1], ALL))) is not None and star.pools_segments}
        return sorted(set(keys) | {k for k in self.detectors if (k[0], k[1]) in pairs})

    def _plausible(self, kind: str, metric: str, value: float, counted: bool = True) -> bool:
        """Whether ``value`` may reach the detectors; a proxy value is judged (and counted) once, with
        its output, and only checked again with its audit."""
        if self.plausibility is None or self.plausibility.check(f"{kind}:{metric}", value, keep=counted):
            return True
        if counted:
            self.implausible[(kind, metric)] = self.implausible.get((kind, metric), 0) + 1
        return False

    def take_implausible(self) -> dict[tuple[str, str], int]:
        """Values left out since the last call, by (kind, metric), for the persistent counters."""
        taken, self.implausible = self.implausible, {}
        return taken

    def _feed_output(self, ts: float, segment: str | None, proxies: dict[str, float]) -> None:
        for proxy, value in proxies.items():
            if not self._plausible("proxy", proxy, value):
                continue
            oriented = value * self.directions.get(proxy, 1.0)
            for audit in self.audits:
                self.detector((proxy, audit, ALL)).observe_proxy(ts, oriented)
                if segment is not None:
                    self.detector((proxy, audit, segment)).observe_proxy(ts, oriented)

    def judge(self, now: float, keys: list[PairKey] | None = None, cause: str | None = None) -> list[Event]:
        """Verdicts for ``keys`` (all pairs by default) through the alarm latch; the state changes."""
        verdicts = dict(self.snapshot.verdicts)
        events: list[Event] = []
        for key in sorted(self.detectors) if keys is None else keys:
            verdict = verdicts[key] = self.detectors[key].verdict(now)
            event = self.alarms.update(key, verdict, now)
            self._record(key, verdict, now)
            if event is not None:
                if cause is not None:
                    event["cause"] = cause
                events.append(event)
                self._dirty.add(key)
        self._refresh(now, verdicts)
        ranks = rank_by_shift((k, verdicts[k].reason, verdicts[k].eager.proxy_shift)
                              for k, state in self.snapshot.states.items() if state == "alarm" and k in verdicts)
        for event in events:
            rank = ranks.get((event["proxy"], event["audit"], event["segment"]))
            if rank is not None and event["state"] == "alarm":
                event["rank"], event["ranked_of"] = rank
        return events

    def _record(self, key: PairKey, verdict: Verdict, now: float) -> None:
        """Keep a verdict for the report's plots: at every state change, else when it moved and at
        most every ``history_seconds`` (bounded and cheap; warm-up verdicts are not plotted)."""
        if verdict.warming_up:
            return
        state = self.alarms.state(key).state
        last = self._recorded.get(key)
        if last is not None and last[1] == state and (
                now - last[0] < self.history_seconds or last[2] == verdict.statistic):
            return
        self._recorded[key] = (now, state, verdict.statistic)
        body: dict[str, Any] = {"statistic": _number(verdict.statistic), "threshold": _number(verdict.threshold),
                                "reason": verdict.reason}
        body.update(verdict.estimated(_HISTORY_NAMES).reported(HISTORY_FIELDS))  # only the gap is computed
        self.history.append((*key, now, state, body))

    def take_history(self) -> list[HistoryRow]:
        rows, self.history = self.history, []
        return rows

    def rebaseline(self, now: float, keys: list[PairKey]) -> None:
        for key in keys:
            self.detector(key).rebaseline(now)

    def matching(self, proxy: str | None, audit: str | None, segment: str | None) -> list[PairKey]:
        """The pairs a selector names; :class:`UnknownPair` when it names a proxy, audit or segment
        that does not exist (a typo must not answer "0 pairs rebaselined")."""
        unknown = [f"{kind} {value!r}" for kind, value, known in (
            ("proxy", proxy, self.directions), ("audit", audit, self.audits),
            ("segment", segment, {k[2] for k in self.detectors})) if value is not None and value not in known]
        if unknown:
            raise UnknownPair("no such " + " and no such ".join(unknown))
        keys = [k for k in sorted(self.detectors)
                if (proxy is None or k[0] == proxy) and (audit is None or k[1] == audit)
                and (segment is None or k[2] == segment)]
        if not keys:
            raise UnknownPair(f"no pair has proxy {proxy!r}, audit {audit!r} and segment {segment!r} together")
        return keys

    def checkpoint(self) -> None:
        """Save the detectors that changed and the cursors they correspond to (inside a transaction)."""
        self.store.save_detectors({
            key_text(key): {"detector": self.detectors[key].checkpoint_state(), "alarm": self.alarms.to_dict(key),
                                    "settings": self.settings}
            for key in sorted(self._dirty)})
        self._dirty.clear()
        for name, value in self.cursors.items():
            self.store.set_cursor(name, value)

    def refresh(self, now: float) -> None:
        """A snapshot of the current states without new verdicts (at start, before the first step)."""
        self._refresh(now, dict(self.snapshot.verdicts))

    def _refresh(self, now: float, verdicts: dict[PairKey, Verdict]) -> None:
        self.snapshot = Snapshot(
            verdicts=verdicts,
            states={key: self.alarms.state(key).state for key in self.detectors},
            since={key: self.alarms.state(key).since for key in self.detectors},
            lines={key: det.reference_line() for key, det in self.detectors.items()},
            sufficient={key: det.sufficient_statistics() for key, det in self.detectors.items()},
            references={key: info for key, det in self.detectors.items() if (info := det.reference_info())},
            taken_at=now, generation=self.snapshot.generation + 1)
