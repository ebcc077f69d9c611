"""When each pipeline step runs in the daemon: APScheduler interval jobs, coalescing, one at a time.

The scheduler decides *when*; the pipeline decides *what*. ``replay`` replaces this module with a
virtual clock and calls the same steps.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler

from agent.pipeline import Pipeline

JOB_DEFAULTS = {"coalesce": True, "max_instances": 1, "misfire_grace_time": None}


def build_scheduler(pipeline: Pipeline, jobs: dict[str, tuple[float, Callable[[], object]]]) -> BackgroundScheduler:
    """One interval job per step; ``jobs`` maps a job name to (interval seconds, step)."""
    scheduler = BackgroundScheduler(timezone=UTC, job_defaults=JOB_DEFAULTS)
    start = datetime.now(UTC)
    for name, (seconds, step) in jobs.items():
        scheduler.add_job(pipeline.run_job, "interval", seconds=seconds, args=(name, step), id=name, name=name,
                          next_run_time=start)
    return scheduler
