"""The one wiring point: ``run``, ``replay`` and ``demo`` assemble the pipeline here, and only here.

:func:`wire` takes what differs between them (the clock, the scheduler, how the source is made)
and builds the same parts in the same order: the pipeline, the audits (their ingest hook is in
place before anything can ingest), the source (a push source gets the pipeline's ingest callable,
never the pipeline), the scheduled steps, and the metrics registry the exporter serves.

:func:`wire_forwarder` is its sibling for a config with ``forward:`` (fleet mode's sidecar, run by
the daemon only): the same source and the same record parsing, but the records go into a durable
buffer and on to the gateway; no detectors, no audits. Both return an assembly with the same
surface the daemon drives (:class:`Assembly`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric

from agent.audit import AuditService, build_audits
from agent.clock import Clock
from agent.config import Config
from agent.exporter import AgentCollector, Block, HealthCheck, RecordsCollector
from agent.exposition import CachedExposition
from agent.forward import Forwarder, ForwarderView, GatewayClient, identity_from_env
from agent.http.routes import Prerendered
from agent.pair_metrics import PairCollector
from agent.pipeline import Pipeline
from agent.scheduler import Jobs, Step
from agent.sources.base import Ingest, Source
from agent.store import Store

INGEST_BATCHES_PER_RUN = 20  # bounds one ingest step so shutdown and detect are never starved


class Scheduler(Protocol):
    jobs: Jobs

    def add(self, name: str, every: float, step: Step) -> None: ...


#: makes the source (or several, ``sources:``) around the pipeline's ingest callable
SourceFactory = Callable[[Ingest], Source | Sequence[Source]]


class Assembly(Protocol):
    """What the daemon drives, whichever mode: the source, the scheduled jobs, a registry, the last steps."""

    config: Config
    store: Store
    sources: list[Source]
    jobs: Jobs

    @property
    def source(self) -> Source: ...

    def ingest_step(self) -> int: ...

    def registry(self, config_attempts: int = 1) -> CollectorRegistry: ...

    def metrics(self, config_attempts: int = 1) -> tuple[CollectorRegistry, Prerendered | None]: ...

    def final_steps(self) -> None: ...

    def close(self) -> None: ...


def _metric_names(config: Config) -> dict[str, list[str]]:
    return {"proxy": [p.name for p in config.proxies], "audit": [a.name for a in config.audits]}


def _source_metrics(sources: Sequence[Source]) -> Iterator[Metric]:
    """Errors summed over the sources (one label set, as with one source), and each source's own series."""
    errors = CounterMetricFamily("goodhart_source_errors", "Source errors, by reason.", labels=["reason"])
    totals: dict[str, int] = {}
    for source in sources:
        for reason, count in source.errors.items():
            totals[reason] = totals.get(reason, 0) + count
    for reason, count in sorted(totals.items()):
        errors.add_metric([reason], float(count))
    yield errors
    families: dict[str, Metric] = {}
    for source in sources:  # one family per name, whichever sources add samples to it
        for metric in source.collect():
            if metric.name in families:
                families[metric.name].samples.extend(metric.samples)
            else:
                families[metric.name] = metric
    yield from families.values()


@dataclass
class Wired:
    """The assembled parts; the caller starts and stops them."""

    config: Config
    store: Store
    pipeline: Pipeline
    audits: AuditService | None
    sources: list[Source]
    jobs: Jobs
    components: dict[str, HealthCheck] = field(default_factory=dict)

    @property
    def source(self) -> Source:
        """The first (with ``source:``, the only) source."""
        return self.sources[0]

    def ingest_step(self) -> int:
        """One bounded read of each source (the daemon's ``ingest`` job)."""
        return sum(self.pipeline.ingest(s, max_batches=INGEST_BATCHES_PER_RUN) for s in self.sources)

    def registry(self, config_attempts: int = 1) -> CollectorRegistry:
        """A registry with every series, each collected afresh when asked (``replay --metrics-out``)."""
        registry = self._live(config_attempts)
        registry.register(self._pairs())
        return registry

    def metrics(self, config_attempts: int = 1) -> tuple[CollectorRegistry, Prerendered | None]:
        """What ``/metrics`` serves: the live series (``config_attempts``: how often never-down mode
        tried the config before this one ran), then the per-pair series as built after the last
        detect step (rebuilt by the pipeline's snapshot hooks)."""
        cached = CachedExposition(self._pairs())
        self.pipeline.snapshot_hooks.append(cached.rebuild)
        return self._live(config_attempts), cached

    def _live(self, config_attempts: int) -> CollectorRegistry:
        registry = CollectorRegistry(auto_describe=True)
        extra: list[Block] = [lambda: _source_metrics(self.sources)]
        if self.audits is not None:
            extra.append(self.audits.collect)
        registry.register(AgentCollector(self.pipeline.view, self.jobs.stats, self.components, extra=extra,
                                         config_attempts=config_attempts, metric_names=_metric_names(self.config)))
        return registry

    def _pairs(self) -> PairCollector:
        segments = self.config.segments
        return PairCollector(self.pipeline.view, segments.max_exported if segments is not None else None)

    def final_steps(self) -> None:
        """At shutdown: stop buying audits, then one last detect step and a checkpoint."""
        if self.audits is not None:
            self.audits.close()
        self.jobs.run("detect", self.pipeline.detect)
        self.jobs.run("checkpoint", self.pipeline.checkpoint)

    def close(self) -> None:
        if self.audits is not None:
            self.audits.close()
        for source in self.sources:
            source.close()


@dataclass
class WiredForwarder:
    """A forwarder's parts: source → parse and enrich → durable buffer → gateway."""

    config: Config
    store: Store
    forwarder: Forwarder
    sources: list[Source]
    jobs: Jobs
    components: dict[str, HealthCheck] = field(default_factory=dict)

    @property
    def source(self) -> Source:
        return self.sources[0]

    def ingest_step(self) -> int:
        """One bounded read of each source into the buffer (the daemon's ``ingest`` job)."""
        return sum(self.forwarder.ingest(s, max_batches=INGEST_BATCHES_PER_RUN) for s in self.sources)

    def registry(self, config_attempts: int = 1) -> CollectorRegistry:
        registry = CollectorRegistry(auto_describe=True)
        view = ForwarderView(self.forwarder, self.forwarder.clock)
        registry.register(RecordsCollector(view, self.jobs.stats, self.components,
                                           extra=[lambda: _source_metrics(self.sources), view.collect],
                                           config_attempts=config_attempts, metric_names=_metric_names(self.config)))
        return registry

    def metrics(self, config_attempts: int = 1) -> tuple[CollectorRegistry, Prerendered | None]:
        """A forwarder's series are all live (no detectors)."""
        return self.registry(config_attempts), None

    def final_steps(self) -> None:
        """Nothing to flush: the buffer is on disk and the next start sends what is left."""

    def close(self) -> None:
        for source in self.sources:
            source.close()
        self.forwarder.close()


def wire(config: Config, store: Store, clock: Clock, scheduler: Scheduler, make_source: SourceFactory,
         should_stop: Callable[[], bool] = lambda: False) -> Wired:
    """Build the pipeline around a source and schedule its steps on ``scheduler``."""
    pipeline = Pipeline(config, store, clock)
    audits = build_audits(config, pipeline, should_stop=should_stop)
    try:
        made = make_source(pipeline.ingest_items)
    except BaseException:  # the caller may try again (never-down mode): no audit threads left behind
        if audits is not None:
            audits.close()
        raise
    sources = [made] if isinstance(made, Source) else list(made)
    s = config.schedule
    scheduler.add("detect", s.detect_seconds, pipeline.detect)
    scheduler.add("retention", s.retention_seconds, pipeline.retention)
    if audits is not None:
        scheduler.add("audit", s.audit_seconds, audits.step)
    components: dict[str, HealthCheck] = {"source": lambda: all(s.up for s in sources),
                                          "store": lambda: store.is_open}
    if len(sources) > 1:  # each by name too; "source" stays, up only when all are
        components.update({f"source:{s.name}": (lambda s=s: s.up) for s in sources})  # type: ignore[misc]
    if audits is not None:
        components.update(audits.components())
    return Wired(config, store, pipeline, audits, sources, scheduler.jobs, components)


def wire_forwarder(config: Config, store: Store, clock: Clock, scheduler: Scheduler, make_source: SourceFactory,
                   should_stop: Callable[[], bool] = lambda: False) -> WiredForwarder:
    """Build a forwarder around a source (``config.forward`` set) and schedule its send step.

    Reads the bearer token now, so a missing one fails the start with its key path.
    """
    if config.forward is None:
        raise ValueError("wire_forwarder needs config.forward")
    client = GatewayClient.from_config(config.forward)
    forwarder = Forwarder(config, store, clock, client, identity_from_env(config.forward.labels_from_env),
                          should_stop=should_stop)
    made = make_source(forwarder.ingest_items)
    sources = [made] if isinstance(made, Source) else list(made)
    scheduler.add("forward", config.forward.flush_seconds, forwarder.send_step)
    components: dict[str, HealthCheck] = {"source": lambda: all(s.up for s in sources),
                                          "store": lambda: store.is_open, "gateway": lambda: forwarder.gateway_up}
    return WiredForwarder(config, store, forwarder, sources, scheduler.jobs, components)
