"""A prometheus_client Collector that builds every series from current state at scrape time.

Nothing carries over between scrapes: values come from a read-only view of the pipeline
(agent/view.py: counters mirrored from the store, so they survive restarts, and the last detect
snapshot), the scheduler's job statistics and the components' health checks. Each block catches
its own errors, so one broken part never fails the whole scrape.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from agent import __version__
from agent.compute import Computer
from agent.counters import CounterKey
from agent.detect.base import STATE_CODES
from agent.records import REJECT_REASONS
from agent.scheduler import JobStats
from agent.view import PipelineView

log = logging.getLogger(__name__)

PAIR_LABELS = ["proxy", "audit", "segment"]
HealthCheck = Callable[[], bool]


def _num(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number


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
    """An agent's series: the shared ones plus detection (detectors, pairs, means, validity)."""

    def __init__(self, view: PipelineView, jobs: dict[str, JobStats] | None = None,
                 components: dict[str, HealthCheck] | None = None, extra: list[Block] | None = None,
                 config_attempts: int = 1, metric_names: Mapping[str, Sequence[str]] | None = None) -> None:
        super().__init__(view, jobs, components, extra, config_attempts, metric_names)
        self.view = view

    def blocks(self) -> tuple[Block, ...]:
        return (self._build, self._records, self._health, self._detectors, self._times, self._references,
                self._pairs, self._means, self._validity, self._computed, self._fields, self._jobs, self._store,
                *self.extra)

    def _detectors(self) -> Iterator[Metric]:
        snap = self.view.snapshot

        def family(name: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=PAIR_LABELS)

        alarm = family("goodhart_divergence_alarm", "1 while the pair is in alarm, else 0.")
        state = family("goodhart_detector_state", "Detector state: 0 ok, 1 warn, 2 alarm.")
        statistic = family("goodhart_detector_statistic", "The decision statistic.")
        threshold = family("goodhart_detector_threshold", "The alarm threshold of the decision statistic.")
        warn = family("goodhart_detector_warn_threshold", "The warn threshold of the decision statistic.")
        gap = family("goodhart_divergence_gap",
                     "Audit the reference predicts from the proxy minus audit observed, audit units.")
        gap_lo = family("goodhart_divergence_gap_lower", "Lower end of the gap's 95% interval.")
        gap_hi = family("goodhart_divergence_gap_upper", "Upper end of the gap's 95% interval.")
        samples = family("goodhart_detector_samples", "Audited outputs the detector's verdict used.")
        corr = GaugeMetricFamily("goodhart_rank_correlation", "Rank correlation of proxy and audit.",
                                 labels=[*PAIR_LABELS, "period"])
        for key, verdict in sorted(snap.verdicts.items()):
            labels = list(key)
            current = snap.states.get(key, verdict.state)
            code = STATE_CODES.get(current, 1)
            alarm.add_metric(labels, 1.0 if current == "alarm" else 0.0)
            state.add_metric(labels, float(code))
            statistic.add_metric(labels, _num(verdict.statistic))
            threshold.add_metric(labels, _num(verdict.threshold))
            e = verdict.estimates
            warn.add_metric(labels, _num(e.warn_threshold))
            gap.add_metric(labels, _num(e.gap))
            gap_lo.add_metric(labels, _num(e.gap_lower))
            gap_hi.add_metric(labels, _num(e.gap_upper))
            samples.add_metric(labels, _num(e.samples or 0))
            for period, value in (("reference", e.rank_corr_reference), ("window", e.rank_corr_window)):
                if value is not None and math.isfinite(value):  # unknown: no sample, not NaN
                    corr.add_metric([*labels, period], value)
        yield from (alarm, state, statistic, threshold, warn, gap, gap_lo, gap_hi, samples, corr)

        # Old series names still exported for one release (docs/metrics.md, "Deprecated").
        deprecated = {"audited": "pairs"}  # goodhart_pair_pairs_total: removed in 0.3.0
        families: dict[str, CounterMetricFamily] = {}
        for key, sums in sorted(snap.sufficient.items()):
            for stat, value in sorted(sums.items()):
                for name in filter(None, (stat, deprecated.get(stat))):
                    fam = families.get(name)
                    if fam is None:
                        fam = families[name] = CounterMetricFamily(
                            f"goodhart_pair_{name}", f"Per-pair sufficient statistic '{name}' for pooling replicas"
                            + (f" (deprecated: use goodhart_pair_{stat}_total)." if name != stat else "."),
                            labels=PAIR_LABELS)
                    fam.add_metric(list(key), float(value))
        yield from families.values()

    def _times(self) -> Iterator[Metric]:
        """The two times of a divergence, named apart: when it started (the detector's estimate of
        the excursion's start) and when the pair's current state was raised."""
        snap = self.view.snapshot
        started = GaugeMetricFamily("goodhart_divergence_started_timestamp_seconds",
                                    "Estimated start of the current divergence: the oldest audited output of the"
                                    " detector's current excursion; 0 while ok or unknown.", labels=PAIR_LABELS)
        raised = GaugeMetricFamily("goodhart_divergence_raised_timestamp_seconds",
                                   "When the pair entered its current warn or alarm state; 0 while ok.",
                                   labels=PAIR_LABELS)
        since = GaugeMetricFamily("goodhart_divergence_since_timestamp_seconds",
                                  "Deprecated (removed in 0.3.0): use goodhart_divergence_raised_timestamp_seconds.",
                                  labels=PAIR_LABELS)
        for key, verdict in sorted(snap.verdicts.items()):
            current = snap.states.get(key, verdict.state)
            entered = snap.since.get(key)
            at = float(entered) if current != "ok" and entered else 0.0
            raised.add_metric(list(key), at)
            since.add_metric(list(key), at)
            start = verdict.estimates.since
            known = current != "ok" and start is not None and math.isfinite(start)
            started.add_metric(list(key), float(start) if known else 0.0)  # type: ignore[arg-type]
        yield from (started, raised, since)


    def _references(self) -> Iterator[Metric]:
        """Where each fitted reference came from and the time span of the audited outputs behind it."""
        refs = self.view.snapshot.references
        info = InfoMetricFamily("goodhart_reference", "A pair's reference: origin fitted (here, after warm-up) or "
                                "imported (from a reference artifact); absent while warming up.", labels=PAIR_LABELS)
        start = GaugeMetricFamily("goodhart_reference_start_timestamp_seconds",
                                  "Time of the oldest audited output the pair's reference was fitted on.",
                                  labels=PAIR_LABELS)
        end = GaugeMetricFamily("goodhart_reference_end_timestamp_seconds",
                                "Time of the newest audited output the pair's reference was fitted on.",
                                labels=PAIR_LABELS)
        for key, ref in sorted(refs.items()):
            info.add_metric(list(key), {"origin": ref.origin})
            if ref.first_ts is not None and ref.last_ts is not None:  # not recorded by older agents
                start.add_metric(list(key), ref.first_ts)
                end.add_metric(list(key), ref.last_ts)
        yield from (info, start, end)


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


    def _pairs(self) -> Iterator[Metric]:
        snap = self.view.snapshot
        stats = self.view.store_stats()
        pairs = GaugeMetricFamily("goodhart_audited_pairs", "Audited pairs held in the store.", labels=PAIR_LABELS)
        keys = set(stats.pair_counts) | {k for k in snap.verdicts if k[2] == "*"}
        for key in sorted(keys):
            pairs.add_metric(list(key), float(stats.pair_counts.get(key, 0)))
        yield pairs
        pending = GaugeMetricFamily("goodhart_pending_outputs", "Outputs waiting for their labels.")
        pending.add_metric([], float(stats.pending_outputs))
        yield pending
        labels = GaugeMetricFamily("goodhart_pending_labels", "Labels that arrived before their outputs, waiting.")
        labels.add_metric([], float(stats.pending_labels))
        yield labels

    def _validity(self) -> Iterator[Metric]:
        """How much each proxy is still worth (agent/validity.py)."""
        validity = GaugeMetricFamily(
            "goodhart_proxy_validity", "How much the proxy is still worth for the audit over the newest audited"
            " pairs: ROC AUC (kind roc_auc, binary audits; 0.5 worthless) or Spearman (kind spearman; 0 worthless).",
            labels=[*PAIR_LABELS, "kind"])
        used = GaugeMetricFamily("goodhart_proxy_validity_pairs", "Audited pairs the validity was computed over.",
                                 labels=PAIR_LABELS)
        for key, v in sorted(self.view.proxy_validity().items()):
            validity.add_metric([*key, v.kind], v.value)
            used.add_metric(list(key), float(v.pairs))
        yield validity
        yield used

    def _means(self) -> Iterator[Metric]:
        proxy = GaugeMetricFamily("goodhart_proxy_mean", "Window mean of a proxy, in its own units.",
                                  labels=["proxy", "segment"])
        audit = GaugeMetricFamily("goodhart_audit_mean", "Window mean of an audit, in its own units.",
                                  labels=["audit", "segment"])
        for (kind, name, segment), value in sorted(self.view.window_means().items()):
            (proxy if kind == "proxy" else audit).add_metric([name, segment], value)
        yield proxy
        yield audit
