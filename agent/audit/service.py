"""Audits by judges and graders, wired into one pipeline: the ingest hook, the job, health, metrics.

:func:`build_audits` returns None when every audit is a record field (the pipeline joins those
itself). Otherwise the service registers a hook that runs for each new output *inside* the ingest
transaction: the sampler decides, the budget is charged and the queue row written atomically
with the output, so an output is queued exactly when it is stored. The daemon schedules
:meth:`AuditService.step` as the ``audit`` job; ``replay`` calls it after every ingest flush.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping

from prometheus_client.core import Metric

from agent.audit.budget import Budget
from agent.audit.grader import HttpGrader
from agent.audit.judge import LlmJudge
from agent.audit.metrics import AuditState, Counts, LatencyHistograms, add_counts, audit_families, count
from agent.audit.producer import Producer
from agent.audit.resilience import CircuitBreaker
from agent.audit.sampler import Sampler
from agent.audit.worker import AuditSlot, AuditWorker
from agent.config import AuditCallConfig, AuditConfig, Config, ConfigError
from agent.http.secrets import env_or_file
from agent.pipeline import Pipeline
from agent.records import Record
from agent.store import AuditQueue, OutputRow, load_budget, save_budget

log = logging.getLogger(__name__)

MAX_QUEUE_PER_AUDIT = 100_000  # unfinished rows per audit before sampled outputs are skipped


def _call_config(audit: AuditConfig) -> tuple[str, AuditCallConfig] | None:
    if audit.llm_judge is not None:
        return "llm_judge", audit.llm_judge
    if audit.http_grader is not None:
        return "http_grader", audit.http_grader
    return None


def _api_key(index: int, kind: str, call: AuditCallConfig, environ: Mapping[str, str]) -> str | None:
    """The bearer key from ``api_key_env`` or ``api_key_file``; ConfigError naming the key path."""
    return env_or_file(f"audits.{index}.{kind}", "api_key_env", call.api_key_env, "api_key_file", call.api_key_file,
                       environ)


def key_problems(config: Config, environ: Mapping[str, str] | None = None) -> list[str]:
    """One line per judge or grader whose key variable is unset or empty, or whose key file is unreadable."""
    env = os.environ if environ is None else environ
    problems = []
    for index, audit in enumerate(config.audits):
        found = _call_config(audit)
        if found is not None:
            try:
                _api_key(index, found[0], found[1], env)
            except ConfigError as err:
                problems += err.problems
    return problems


class AuditService:
    def __init__(self, config: Config, pipeline: Pipeline, slots: list[AuditSlot],
                 should_stop: Callable[[], bool], rng: random.Random) -> None:
        self.config = config
        self.pipeline = pipeline
        self.slots = slots
        self.queue = AuditQueue(pipeline.store)
        sampling = config.audit_sampling
        direction = 1.0
        if sampling.stratify is not None:
            direction = pipeline.directions.get(sampling.stratify.proxy, 1.0)
        self.sampler = Sampler(sampling.rate, sampling.salt, sampling.stratify, direction)
        self.latency = LatencyHistograms(s.name for s in slots)
        self.worker = AuditWorker(pipeline, self.queue, slots, self.latency, should_stop, rng,
                                  keep_finished_seconds=config.retention.label_ttl_seconds)
        self._warm_sampler()
        for slot in slots:
            slot.budget.restore(load_budget(pipeline.store, slot.name))
        self.depth = self.queue.depth()
        pipeline.output_hooks.append(self.on_output)

    def _warm_sampler(self) -> None:
        stratify = self.config.audit_sampling.stratify
        if stratify is None:
            return
        store = self.pipeline.store
        rows = store.outputs_since(max(0, store.max_seq("outputs") - stratify.window), limit=stratify.window)
        self.sampler.warm(r.proxies[stratify.proxy] for r in rows if stratify.proxy in r.proxies)

    # -- ingest hook (inside the ingest transaction, under pipeline.lock) ------------------------------------
    def on_output(self, output: OutputRow, record: Record) -> None:
        counts: Counts = {}
        try:
            decision = self.sampler.offer(output.id, output.proxies)
            if not decision.selected:
                return
            now = self.pipeline.clock.now()
            for slot in self.slots:
                if self.depth.get(slot.name, 0) >= MAX_QUEUE_PER_AUDIT:
                    count(counts, "audits_skipped_total", audit=slot.name, reason="queue_full")
                elif not slot.budget.take(now):
                    count(counts, "audits_skipped_total", audit=slot.name, reason="budget")
                elif self.queue.enqueue(slot.name, output, record.body, decision.weight, now,
                                        now + slot.retry.expire_after_seconds):
                    save_budget(self.pipeline.store, slot.name, slot.budget.levels())
                    self.depth[slot.name] = self.depth.get(slot.name, 0) + 1
                    count(counts, "audits_requested_total", audit=slot.name)
        except Exception:  # never break ingest over an audit
            log.exception("queueing an audit failed", extra={"fields": {"id": output.id}})
            for slot in self.slots:
                count(counts, "audits_skipped_total", audit=slot.name, reason="error")
        add_counts(self.pipeline.counters, counts)

    # -- the job, health, metrics ------------------------------------------------------------------------------
    def step(self) -> int:
        """The ``audit`` job: one worker step, then a fresh queue depth for the exporter."""
        try:
            return self.worker.step()
        finally:
            self.depth = self.queue.depth()

    def components(self) -> dict[str, Callable[[], bool]]:
        """``goodhart_up`` checks: ``judge`` (every LLM judge) and ``grader:<name>`` per grader."""
        judges = [s for s in self.slots if s.producer.kind == "judge"]
        checks: dict[str, Callable[[], bool]] = {}
        if judges:
            checks["judge"] = lambda: all(s.up and not s.breaker.is_open for s in judges)
        for slot in self.slots:
            if slot.producer.kind == "grader":
                checks[slot.producer.component] = lambda s=slot: s.up and not s.breaker.is_open  # type: ignore[misc]
        return checks

    def states(self) -> list[AuditState]:
        """Each audit's budget, queue depth and circuit as of now, for the scrape."""
        now = self.pipeline.clock.now()
        return [AuditState(s.name, s.producer.kind, s.budget.remaining(now), s.budget.capacity(),
                           self.depth.get(s.name, 0), s.breaker.is_open) for s in self.slots]

    def collect(self) -> Iterator[Metric]:
        yield from audit_families(self.states(), self.pipeline.counters.value, self.latency)

    def close(self) -> None:
        self.worker.close()


def build_audits(config: Config, pipeline: Pipeline, environ: Mapping[str, str] | None = None,
                 should_stop: Callable[[], bool] = lambda: False,
                 monotonic: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> AuditService | None:
    """The audit service for the config's judges and graders; None when there are none.

    Raises :class:`ConfigError` when a key's environment variable is not set: a judge that can
    only ever answer 401 is a configuration error, found at start rather than hours later.
    """
    env = os.environ if environ is None else environ
    problems = key_problems(config, env)
    if problems:
        raise ConfigError(problems)
    now = pipeline.clock.now()
    slots: list[AuditSlot] = []
    for index, audit in enumerate(config.audits):
        found = _call_config(audit)
        if found is None:
            continue
        kind, call = found
        key = _api_key(index, kind, call, env)
        producer: Producer
        if audit.llm_judge is not None:
            producer = LlmJudge(audit.name, audit.llm_judge, key)
        else:
            assert audit.http_grader is not None
            producer = HttpGrader(audit.name, audit.http_grader, key)
        breaker = CircuitBreaker(call.circuit_breaker.failure_threshold, call.circuit_breaker.open_seconds, monotonic)
        slots.append(AuditSlot(producer, Budget.from_config(call.budget, now), breaker, call.retry,
                               call.concurrency))
    if not slots:
        return None
    return AuditService(config, pipeline, slots, should_stop, rng or random.Random())
