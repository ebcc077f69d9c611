"""prometheus_client Collectors for the live series, built from current state at every scrape.

Values come from a read-only view of the pipeline (agent/view.py: counters mirrored from the
store, so they survive restarts and count what was ingested since the last detect step), the
scheduler's job statistics and the components' health checks; none of it waits for the store or
the pipeline's lock. The per-pair series are agent/pair_metrics.py's, built once per detect step
(agent/exposition.py). Each block catches its own errors, so one broken part never fails the whole
scrape.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from agent import __version__
from agent.compute import Computer
from agent.counters import CounterKey
from agent.records import REJECT_REASONS
from agent.scheduler import JobStats
from agent.view import PipelineView

log = logging.getLogger(__name__)

HealthCheck = Callable[[], bool]


class RecordsView(Protocol):
    """What the blocks every agent exports read: a pipeline's view, or a forwarder's (agent/forward/metrics.py)."""

    def counters(self) -> dict[CounterKey, float]: ...

    def counter(self, name: str, **labels: str) -> float: ...

    def last_record_ts(self) -> dict[str, float]: ...

    def computers(self) -> Mapping[str, Computer]: ...

    def store_size_bytes(self) -> int: ...


Block = Callable[[], Iterator[Metric]]


def config_state(valid: bool, problems: int, attempts: int) -> Iterator[Metric]:
    """``goodhart_config_valid``, ``goodhart_config_problems`` and ``goodhart_config_attempts_total``:
    whether the agent runs its config, and how often it tried to load it since the process started."""
    ok = GaugeMetricFamily("goodhart_config_valid", "1 when the config loaded and the agent runs it; 0 while"
                           " never-down mode serves without it (the log names the key path).")
    ok.add_metric([], 1.0 if valid else 0.0)
    yield ok
    count = GaugeMetricFamily("goodhart_config_problems",
                              "Problems found in the config at the last attempt to load it.")
    count.add_metric([], float(problems))
    yield count
    tried = CounterMetricFamily("goodhart_config_attempts", "Attempts to load the config and assemble the agent"
                                " since the process started (more than 1: never-down mode retried).")
    tried.add_metric([], float(attempts))
    yield tried


class RecordsCollector(Collector):
    """The series every agent exports, a forwarder included: build, records and rejections, health,
    computed proxies, jobs, store; ``components`` maps a component name to its health check."""

    def __init__(self, view: RecordsView, jobs: dict[str, JobStats] | None = None,
                 components: dict[str, HealthCheck] | None = None, extra: list[Block] | None = None,
                 config_attempts: int = 1, metric_names: Mapping[str, Sequence[str]] | None = None) -> None:
        self.records_view = view
        self.config_attempts = config_attempts
        #: the configured metrics by kind ("proxy", "audit"): their counters are exported from 0
        self.metric_names = metric_names if metric_names is not None else {}
        self.jobs = jobs if jobs is not None else {}
        self.components = components if components is not None else {}
        self.extra = extra if extra is not None else []

    def blocks(self) -> tuple[Block, ...]:
        return (self._build, self._records, self._health, self._computed, self._jobs, self._store, *self.extra)

    def collect(self) -> Iterator[Metric]:
        for block in self.blocks():
            try:
                yield from block()
            except Exception:  # a scrape never fails as a whole
                log.exception("collector block failed", extra={"fields": {"block": block.__name__}})

    def _build(self) -> Iterator[Metric]:
        info = InfoMetricFamily("goodhart_build", "Agent version.", labels=["version"])
        info.add_metric([__version__], {})
        # InfoMetricFamily names its sample goodhart_build_info with value 1, as the CONTRACT fixes.
        yield info
        # This collector exists only once a config loaded; never-down mode (agent/guard.py) says 0.
        yield from config_state(valid=True, problems=0, attempts=self.config_attempts)

    def _records(self) -> Iterator[Metric]:
        p = self.records_view
        total = CounterMetricFamily("goodhart_records", "Records received, by source.", labels=["source"])
        rejected = CounterMetricFamily("goodhart_records_rejected", "Records rejected, by reason.",
                                       labels=["reason"])
        seen_reasons = set()
        for (name, labels), value in sorted(p.counters().items()):
            d = dict(labels)
            if name == "records_total":
                total.add_metric([d.get("source", "")], value)
            elif name == "records_rejected_total":
                seen_reasons.add(d.get("reason", ""))
                rejected.add_metric([d.get("reason", "")], value)
        for reason in REJECT_REASONS:
            if reason not in seen_reasons:
                rejected.add_metric([reason], 0.0)
        yield total
        yield rejected
        implausible = CounterMetricFamily(
            "goodhart_implausible_values", "Proxy and audit values kept out of the detectors as implausible "
            "(far outside the metric's recent values), by kind and metric.", labels=["kind", "metric"])
        counts = {(kind, metric): 0.0 for kind, names in self.metric_names.items() for metric in names}
        for (name, labels), value in p.counters().items():
            if name == "implausible_values_total":
                d = dict(labels)
                counts[(d.get("kind", ""), d.get("metric", ""))] = value
        for (kind, metric), value in sorted(counts.items()):
            implausible.add_metric([kind, metric], value)
        yield implausible
        joined = CounterMetricFamily("goodhart_labels_joined", "Late labels joined to their outputs.")
        joined.add_metric([], p.counter("labels_joined_total"))
        yield joined
        expired = CounterMetricFamily("goodhart_labels_expired",
                                      "Outputs that never got a label, and labels that never found their output,"
                                      " dropped after the TTL.", labels=["kind"])
        for kind in ("output", "label"):
            expired.add_metric([kind], p.counter("labels_expired_total", kind=kind))
        yield expired
        last = GaugeMetricFamily("goodhart_last_record_timestamp_seconds",
                                 "Time of the newest accepted record, by source.", labels=["source"])
        for source, ts in sorted(p.last_record_ts().items()):
            last.add_metric([source], ts)
        yield last

    def _health(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("goodhart_up", "1 when a component is reachable, else 0.", labels=["component"])
        for name, check in sorted(self.components.items()):
            try:
                ok = bool(check())
            except Exception:
                ok = False
            up.add_metric([name], 1.0 if ok else 0.0)
        yield up

    def _computed(self) -> Iterator[Metric]:
        """Computed proxies (agent/compute/): failures per proxy and reason, and the models' versions."""
        computers = self.records_view.computers()
        failures = CounterMetricFamily("goodhart_metric_failures", "Records whose computed proxy could not be"
                                       " computed (the record went on without it), by proxy and reason.",
                                       labels=["proxy", "reason"])
        counts: dict[tuple[str, str], float] = {}
        for (name, labels), value in self.records_view.counters().items():
            if name == "metric_failures_total":
                d = dict(labels)
                counts[(d.get("proxy", ""), d.get("reason", ""))] = value
        for name, computer in computers.items():  # the reasons a proxy's kind can fail for, at 0
            for reason in computer.reasons:
                counts.setdefault((name, reason), 0.0)
        for (proxy, reason), value in sorted(counts.items()):
            failures.add_metric([proxy, reason], value)
        yield failures
        models = InfoMetricFamily("goodhart_proxy_model", "The model that computes a proxy: its version (from the"
                                  " config, else the file's hash) and the SHA-256 of its file.",
                                  labels=["proxy"])
        for name, computer in computers.items():
            info = computer.info()
            if info is not None:
                models.add_metric([name], info)
        yield models

    def _jobs(self) -> Iterator[Metric]:
        # The label is `task`, not `job`: Prometheus owns `job` (the scrape target's name).
        last = GaugeMetricFamily("goodhart_job_last_duration_seconds", "Duration of the job's last run.",
                                 labels=["task"])
        runs = CounterMetricFamily("goodhart_job_runs", "Job runs.", labels=["task"])
        errors = CounterMetricFamily("goodhart_job_errors", "Job runs that raised.", labels=["task"])
        for name, stats in sorted(dict(self.jobs).items()):
            last.add_metric([name], stats.last_duration)
            runs.add_metric([name], float(stats.runs))
            errors.add_metric([name], float(stats.errors))
        yield from (last, runs, errors)

    def _store(self) -> Iterator[Metric]:
        size = GaugeMetricFamily("goodhart_store_size_bytes", "Size of the SQLite database file.")
        size.add_metric([], float(self.records_view.store_size_bytes()))
        yield size


class AgentCollector(RecordsCollector):
    """An agent's live series: the shared ones plus field presence. The per-pair series (detectors,
    pairs, means, validity) are :class:`agent.pair_metrics.PairCollector`'s, built once per detect step."""

    def __init__(self, view: PipelineView, jobs: dict[str, JobStats] | None = None,
                 components: dict[str, HealthCheck] | None = None, extra: list[Block] | None = None,
                 config_attempts: int = 1, metric_names: Mapping[str, Sequence[str]] | None = None) -> None:
        super().__init__(view, jobs, components, extra, config_attempts, metric_names)
        self.view = view

    def blocks(self) -> tuple[Block, ...]:
        return (self._build, self._records, self._health, self._computed, self._fields, self._jobs, self._store,
                *self.extra)

    def _fields(self) -> Iterator[Metric]:
        """Configured field paths absent from records: a typo in a path shows up here (agent/records.py)."""
        checked, absent = self.view.field_presence()
        total = CounterMetricFamily("goodhart_field_checked", "Records with an id whose configured fields were"
                                    " looked up, since start.")
        total.add_metric([], float(checked))
        missing = CounterMetricFamily("goodhart_field_absent", "Records (with an id) lacking a configured field"
                                      " path, since start, by kind (proxy, audit, segment) and name.",
                                      labels=["kind", "name"])
        for (kind, name), count in sorted(absent.items()):
            missing.add_metric([kind, name], float(count))
        yield from (total, missing)
