"""When each pipeline step runs: the scheduler decides *when*, the pipeline decides *what*.

Two schedulers with one interface (``add`` a job, then run): :class:`LiveScheduler` runs interval
jobs on APScheduler threads for the daemon (coalescing, one instance at a time);
:class:`VirtualScheduler` runs them on a virtual clock for ``replay``, at the times the live one
would have, coalesced the same way (a long quiet gap runs one step, not thousands). Both run every
step through :class:`Jobs`, which times it and counts its errors for the exporter.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from agent.clock import VirtualClock

log = logging.getLogger(__name__)

Step = Callable[[], object]
JOB_DEFAULTS = {"coalesce": True, "max_instances": 1, "misfire_grace_time": None}


@dataclass
class JobStats:
    runs: int = 0
    errors: int = 0
    last_duration: float = 0.0


class Jobs:
    """Runs steps by name; errors are logged and counted, never raised into the scheduler.

    ``reraise``: a replay must fail loudly instead of finishing with a step that never worked.
    """

    def __init__(self, reraise: bool = False) -> None:
        self.stats: dict[str, JobStats] = {}
        self.reraise = reraise

    def run(self, name: str, step: Step) -> None:
        started = time.perf_counter()
        stats = self.stats.setdefault(name, JobStats())
        try:
            step()
        except Exception:
            stats.errors += 1
            if self.reraise:
                raise
            log.exception("job failed", extra={"fields": {"job": name}})
        finally:
            stats.runs += 1
            stats.last_duration = time.perf_counter() - started


def next_due(previous: float, now: float, every: float) -> float:
    """The latest run time at or before ``now`` on the grid ``previous + k·every`` (coalescing).

    >>> next_due(0.0, 10.0, 15.0), next_due(0.0, 15.0, 15.0), next_due(0.0, 100.0, 15.0)
    (0.0, 15.0, 90.0)
    """
    return previous + ((now - previous) // every) * every


class LiveScheduler:
    """APScheduler interval jobs, each first run at start."""

    def __init__(self, jobs: Jobs) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler  # the daemon's only: replay starts without it

        self.jobs = jobs
        self._scheduler = BackgroundScheduler(timezone=UTC, job_defaults=JOB_DEFAULTS)

    def add(self, name: str, every: float, step: Step) -> None:
        self._scheduler.add_job(self.jobs.run, "interval", seconds=every, args=(name, step), id=name, name=name,
                                next_run_time=datetime.now(UTC))

    def start(self) -> None:
        self._scheduler.start()

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def shutdown(self) -> None:
        """No new step starts; the running one finishes."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)


class VirtualScheduler:
    """Interval jobs on a virtual clock: :meth:`advance_to` runs every step that falls due on the way.

    A job's first run is one interval after the first time the clock is advanced to (the live
    daemon's first runs find an empty store, so they are skipped here without changing anything).
    """

    def __init__(self, jobs: Jobs, clock: VirtualClock) -> None:
        self.jobs = jobs
        self.clock = clock
        self._jobs: dict[str, tuple[float, Step]] = {}
        self._next: dict[str, float] = {}
        self.last_run: dict[str, float] = {}

    def add(self, name: str, every: float, step: Step) -> None:
        self._jobs[name] = (every, step)

    def due_by(self, ts: float) -> bool:
        """Whether advancing to ``ts`` runs a step (the caller stores what it holds first)."""
        return any(ts >= when for when in self._next.values())

    def advance_to(self, ts: float) -> None:
        """Move the clock to ``ts``, running due steps in time order, each at its latest due time."""
        if ts <= self.clock.now():
            return
        if not self._next:
            self._next = {name: ts + every for name, (every, _) in self._jobs.items()}
        while True:
            due = [(when, name) for name, when in self._next.items() if ts >= when]
            if not due:
                break
            when, name = min(due)
            every, step = self._jobs[name]
            at = next_due(when, ts, every)
            self.clock.advance_to(at)
            self.jobs.run(name, step)
            self.last_run[name] = at
            self._next[name] = at + every
        self.clock.advance_to(ts)

    def run_now(self, name: str) -> None:
        """Run one step at the current virtual time (the end of a replay)."""
        self.jobs.run(name, self._jobs[name][1])
        self.last_run[name] = self.clock.now()
