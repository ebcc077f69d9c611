"""The alarm state machine: one event per change, alarms latch until ok, rebaseline clears."""

from __future__ import annotations

from agent.alarms import AlarmBook
from agent.detect.base import Verdict

KEY = ("thumbs_up", "resolved", "*")


def test_first_verdict_is_an_event_and_repeats_are_not() -> None:
    book = AlarmBook()
    first = book.update(KEY, Verdict("warn", reason="warming up"), 1.0)
    assert first is not None and (first["previous"], first["state"]) == ("ok", "warn")
    assert book.update(KEY, Verdict("warn", reason="warming up"), 2.0) is None


def test_an_alarm_latches_through_warn_and_clears_on_ok() -> None:
    book = AlarmBook()
    book.update(KEY, Verdict("ok"), 1.0)
    raised = book.update(KEY, Verdict("alarm", 14.0, 13.0, "proxy_inflated", {"gap": 0.3}), 2.0)
    assert raised is not None and raised["state"] == "alarm" and raised["gap"] == 0.3
    assert book.update(KEY, Verdict("warn", 12.0, 13.0, "proxy_inflated"), 3.0) is None
    assert book.state(KEY).state == "alarm" and book.state(KEY).since == 2.0
    cleared = book.update(KEY, Verdict("ok", 1.0, 13.0), 4.0)
    assert cleared is not None and (cleared["previous"], cleared["state"]) == ("alarm", "ok")


def test_warming_up_after_a_rebaseline_clears_an_alarm() -> None:
    book = AlarmBook()
    book.update(KEY, Verdict("alarm", 20.0, 13.0, "audit_dropped"), 1.0)
    event = book.update(KEY, Verdict("warn", reason="warming up"), 2.0)
    assert event is not None and (event["previous"], event["state"], event["reason"]) == ("alarm", "warn",
                                                                                         "warming up")


def test_nan_statistics_become_null_in_events() -> None:
    event = AlarmBook().update(KEY, Verdict("warn", reason="warming up", details={"gap": float("nan")}), 1.0)
    assert event is not None and event["statistic"] is None and event["gap"] is None
