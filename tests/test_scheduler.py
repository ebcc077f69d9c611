"""The virtual scheduler runs steps when the live one would, on the records' own time."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from agent.clock import VirtualClock
from agent.scheduler import Jobs, VirtualScheduler


def recording(clock: VirtualClock, log: list[tuple[str, float]], name: str) -> Callable[[], None]:
    return lambda: log.append((name, clock.now()))


def test_steps_run_at_their_interval_of_virtual_time_and_coalesce_over_quiet_gaps() -> None:
    clock = VirtualClock()
    scheduler = VirtualScheduler(Jobs(), clock)
    runs: list[tuple[str, float]] = []
    scheduler.add("detect", 15.0, recording(clock, runs, "detect"))
    scheduler.add("retention", 100.0, recording(clock, runs, "retention"))
    scheduler.advance_to(1000.0)  # the first record: the grid starts here
    assert runs == [] and clock.now() == 1000.0
    assert not scheduler.due_by(1014.9) and scheduler.due_by(1015.0)
    scheduler.advance_to(1016.0)
    assert runs == [("detect", 1015.0)] and clock.now() == 1016.0
    scheduler.advance_to(5000.0)  # a long quiet gap: one step each, at the latest due time
    assert runs[1:] == [("detect", 4990.0), ("retention", 5000.0)]
    assert scheduler.last_run == {"detect": 4990.0, "retention": 5000.0}


def test_the_clock_never_goes_back_and_time_standing_still_runs_nothing() -> None:
    clock = VirtualClock()
    scheduler = VirtualScheduler(Jobs(), clock)
    runs: list[tuple[str, float]] = []
    scheduler.add("detect", 10.0, recording(clock, runs, "detect"))
    scheduler.advance_to(100.0)
    scheduler.advance_to(50.0)
    scheduler.advance_to(100.0)
    assert clock.now() == 100.0 and runs == []


def test_job_statistics_count_runs_and_errors_and_a_replay_fails_loudly() -> None:
    def broken() -> None:
        raise RuntimeError("step failed")

    live = Jobs()
    live.run("detect", broken)
    live.run("detect", lambda: None)
    assert (live.stats["detect"].runs, live.stats["detect"].errors) == (2, 1)
    with pytest.raises(RuntimeError):
        Jobs(reraise=True).run("detect", broken)
