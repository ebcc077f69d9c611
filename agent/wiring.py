"""The one wiring point: ``run``, ``replay`` and ``demo`` assemble the pipeline here, and only here.

:func:`wire` takes what differs between them (the clock, the scheduler, how the source is made)
and builds the same parts in the same order: the pipeline, the audits (their ingest hook is in
place before anything can ingest), the source (a push source gets the pipeline's ingest callable,
never the pipeline), the scheduled steps, and the metrics registry the exporter serves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric

from agent.audit import AuditService, build_audits
from agent.clock import Clock
from agent.config import Config
from agent.exporter import AgentCollector, HealthCheck
from agent.pipeline import Pipeline
from agent.scheduler import Jobs, Step
from agent.sources.base import Ingest, Source
from agent.store import Store

INGEST_BATCHES_PER_RUN = 20  # bounds one ingest step so shutdown and detect are never starved


class Scheduler(Protocol):
    jobs: Jobs

    def add(self, name: str, every: float, step: Step) -> None: ...


SourceFactory = Callable[[Ingest], Source]


@dataclass
class Wired:
    """The assembled parts; the caller starts and stops them."""

    config: Config
    store: Store
    pipeline: Pipeline
    audits: AuditService | None
    source: Source
    jobs: Jobs
    components: dict[str, HealthCheck] = field(default_factory=dict)

    def ingest_step(self) -> int:
        """One bounded read of the source (the daemon's ``ingest`` job)."""
        return self.pipeline.ingest(self.source, max_batches=INGEST_BATCHES_PER_RUN)

    def registry(self, config_attempts: int = 1) -> CollectorRegistry:
        """A registry with the agent's collector: what ``/metrics`` serves (``config_attempts``: how
        often never-down mode tried the config before this one ran)."""
        registry = CollectorRegistry(auto_describe=True)
        extra: list[Callable[[], Iterator[Metric]]] = [self._source_metrics]
        if self.audits is not None:
            extra.append(self.audits.collect)
        registry.register(AgentCollector(self.pipeline.view, self.jobs.stats, self.components, extra=extra,
                                         config_attempts=config_attempts))
        return registry

    def close(self) -> None:
        if self.audits is not None:
            self.audits.close()
        self.source.close()

    def _source_metrics(self) -> Iterator[Metric]:
        errors = CounterMetricFamily("goodhart_source_errors", "Source errors, by reason.", labels=["reason"])
        for reason, count in sorted(self.source.errors.items()):
            errors.add_metric([reason], float(count))
        yield errors


def wire(config: Config, store: Store, clock: Clock, scheduler: Scheduler, make_source: SourceFactory,
         should_stop: Callable[[], bool] = lambda: False) -> Wired:
    """Build the pipeline around a source and schedule its steps on ``scheduler``."""
    pipeline = Pipeline(config, store, clock)
    audits = build_audits(config, pipeline, should_stop=should_stop)
    try:
        source = make_source(pipeline.ingest_items)
    except BaseException:  # the caller may try again (never-down mode): no audit threads left behind
        if audits is not None:
            audits.close()
        raise
    s = config.schedule
    scheduler.add("detect", s.detect_seconds, pipeline.detect)
    scheduler.add("retention", s.retention_seconds, pipeline.retention)
    if audits is not None:
        scheduler.add("audit", s.audit_seconds, audits.step)
    components: dict[str, HealthCheck] = {"source": lambda: source.up, "store": lambda: store.is_open}
    if audits is not None:
        components.update(audits.components())
    return Wired(config, store, pipeline, audits, source, scheduler.jobs, components)
