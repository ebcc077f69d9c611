"""The alarm state machine: one event per change, alarms latch until ok, rebaseline clears."""

from __future__ import annotations

import json
import math

import numpy as np

from agent.alarms import AlarmBook, StateChange
from agent.detect.base import Detector, Estimates, PairObservation, Verdict
from agent.detect.decoupling import DecouplingDetector
from agent.detect.placeholder import PlaceholderDetector

KEY = ("thumbs_up", "resolved", "*")
FIXED = ["ts", "proxy", "audit", "segment", "state", "previous", "statistic", "threshold"]


def test_first_verdict_is_an_event_and_repeats_are_not() -> None:
    book = AlarmBook()
    first = book.update(KEY, Verdict.warming(), 1.0)
    assert first is not None and (first["previous"], first["state"]) == ("ok", "warn")
    assert book.update(KEY, Verdict.warming(), 2.0) is None


def test_an_alarm_latches_through_warn_and_clears_on_ok() -> None:
    book = AlarmBook()
    book.update(KEY, Verdict("ok"), 1.0)
    raised = book.update(KEY, Verdict("alarm", 14.0, 13.0, "proxy_inflated", Estimates(gap=0.3)), 2.0)
    assert raised is not None and raised["state"] == "alarm" and raised["gap"] == 0.3
    assert book.update(KEY, Verdict("warn", 12.0, 13.0, "proxy_inflated"), 3.0) is None
    assert book.state(KEY).state == "alarm" and book.state(KEY).since == 2.0
    cleared = book.update(KEY, Verdict("ok", 1.0, 13.0), 4.0)
    assert cleared is not None and (cleared["previous"], cleared["state"]) == ("alarm", "ok")


def test_warming_up_after_a_rebaseline_clears_an_alarm() -> None:
    book = AlarmBook()
    book.update(KEY, Verdict("alarm", 20.0, 13.0, "audit_dropped"), 1.0)
    event = book.update(KEY, Verdict.warming(), 2.0)
    assert event is not None and (event["previous"], event["state"], event["reason"]) == ("alarm", "warn",
                                                                                         "warming up")


def test_the_latch_reads_the_warming_up_flag_not_the_reason_text() -> None:
    book = AlarmBook()
    book.update(KEY, Verdict("alarm", 20.0, 13.0, "audit_dropped"), 1.0)
    assert book.update(KEY, Verdict("warn", 12.0, 13.0, reason="warming up"), 2.0) is None  # not warming up
    assert book.state(KEY).state == "alarm"


def test_nan_statistics_become_null_in_events() -> None:
    event = AlarmBook().update(KEY, Verdict.warming(Estimates(gap=math.nan)), 1.0)
    assert event is not None and event["statistic"] is None and event["gap"] is None


def test_an_event_reports_only_the_estimates_its_detector_made_in_name_order() -> None:
    verdict = Verdict("alarm", 14.5, 13.0, "audit_dropped",
                      Estimates(samples=200, gap=0.25, since=math.nan, reference_pairs=200, late_pairs_ignored=0))
    event = StateChange.of(KEY, verdict, "warn", 7.0).as_event()
    assert json.dumps(event) == (
        '{"ts": 7.0, "proxy": "thumbs_up", "audit": "resolved", "segment": "*", "state": "alarm", '
        '"previous": "warn", "statistic": 14.5, "threshold": 13.0, "reason": "audit_dropped", "gap": 0.25, '
        '"late_pairs_ignored": 0, "reference_pairs": 200, "samples": 200, "since": null}')


def _events(detector: Detector) -> list[dict[str, object]]:
    rng = np.random.default_rng(7)
    book, events = AlarmBook(), []
    for t in range(700):
        p = rng.normal()
        a = 0.6 * p + rng.normal(scale=0.8) - (0.8 if t >= 400 else 0.0)
        detector.observe_pair(PairObservation(ts=float(t), proxy=p, audit=a))
        event = book.update(KEY, detector.verdict(float(t)), float(t))
        if event is not None:
            events.append(event)
    return events


def test_the_decoupling_detectors_events_keep_their_keys() -> None:
    """Replay events are a published format: these keys (and their order) are what it has always had."""
    events = _events(DecouplingDetector(arl0=200_000))
    assert list(events[0]) == [*FIXED, "reason", "late_pairs_ignored", "reference_pairs", "samples"]
    estimates = ["beyond_range_fraction", "curve_statistic", "excursion_gap", "excursion_pairs", "gap", "gap_lower",
                 "gap_upper", "late_pairs_ignored", "level_statistic", "proxy_shift", "rank_corr_reference",
                 "rank_corr_window", "reference_pairs", "samples", "since", "slope_statistic", "warn_threshold"]
    assert list(events[1]) == [*FIXED, *estimates]  # ok after warm-up: no reason
    alarm = next(e for e in events if e["state"] == "alarm")
    assert list(alarm) == [*FIXED, "reason", *estimates]
    assert all(isinstance(alarm[k], int) for k in ("excursion_pairs", "late_pairs_ignored", "reference_pairs",
                                                   "samples"))
    json.dumps(events, allow_nan=False)


def test_the_placeholder_detectors_events_keep_their_keys() -> None:
    events = _events(PlaceholderDetector(reference_size=50, window=50))
    assert list(events[0]) == [*FIXED, "reason", "samples"]
    assert {tuple(e) for e in events[1:]} == {(*FIXED, "gap", "samples"), (*FIXED, "reason", "gap", "samples")}


def test_a_state_change_reads_as_one_sentence_with_both_times_and_the_rank() -> None:
    from agent.explain import sentence

    event = {"ts": 1_790_000_600.0, "since": 1_790_000_000.0, "proxy": "thumbs_up", "audit": "rubric",
             "segment": "*", "previous": "warn", "state": "alarm", "reason": "proxy_inflated",
             "excursion_gap": 0.4, "rank": 1, "ranked_of": 2}
    text = sentence(event)
    assert text.startswith("thumbs_up vs rubric [*]: warn -> ALARM (proxy_inflated, audit 0.40 below")
    assert "started " in text and ", raised " in text
    assert "proxy 1 of 2 in alarm against rubric" in text
    assert "started" not in sentence({**event, "state": "ok", "previous": "alarm"})
