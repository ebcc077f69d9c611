"""The ``audit`` job: send due queue items to their judge or grader, store and join what comes back.

One step: join scores obtained earlier but not yet joined (after a crash), fail items past their
deadline, then rounds of requests (each producer gets as many due items as its concurrency and
circuit breaker allow) until nothing is due, the step has run long enough, or the agent stops.
A score is stored in its queue row the moment it arrives, then joined to its output as an
audited pair with its sampling weight, each under ``pipeline.lock`` then the store transaction
(the lock order ingest uses). A step never raises for a failing server.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

from agent.audit.budget import Budget
from agent.audit.metrics import Counts, LatencyHistograms, add_counts, count
from agent.audit.producer import UNHEALTHY_REASONS, Outcome, Producer, idempotency_key
from agent.audit.resilience import CircuitBreaker
from agent.config import AuditRetryConfig
from agent.http.client import backoff_delay
from agent.pipeline import Pipeline
from agent.store import AuditQueue, QueueItem

log = logging.getLogger(__name__)

MAX_STEP_SECONDS = 10.0   # a step stops starting requests after this, so shutdown and other jobs are never starved
PURGE_EVERY_SECONDS = 60.0


@dataclass
class AuditSlot:
    """One judge or grader audit with its budget, breaker and retry policy."""

    producer: Producer
    budget: Budget
    breaker: CircuitBreaker
    retry: AuditRetryConfig
    concurrency: int
    up: bool = True  # last request reached a healthy server (or none was made yet)

    @property
    def name(self) -> str:
        return self.producer.audit


class AuditWorker:
    def __init__(self, pipeline: Pipeline, queue: AuditQueue, slots: list[AuditSlot], latency: LatencyHistograms,
                 should_stop: Callable[[], bool], rng: random.Random, keep_finished_seconds: float) -> None:
        self.pipeline = pipeline
        self.queue = queue
        self.slots = slots
        self.latency = latency
        self.should_stop = should_stop
        self.rng = rng
        self.keep_finished_seconds = keep_finished_seconds
        self.pool = ThreadPoolExecutor(max_workers=sum(s.concurrency for s in slots), thread_name_prefix="audit")
        self._last_purge = -PURGE_EVERY_SECONDS

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    # -- the step ------------------------------------------------------------------------------------
    def step(self) -> int:
        """One run of the job; returns how many audits finished (joined or failed)."""
        started = time.monotonic()
        finished = self.join_obtained()
        finished += self._expire()
        if started - self._last_purge >= PURGE_EVERY_SECONDS:
            self._last_purge = started
            self.queue.purge(self.pipeline.clock.now() - self.keep_finished_seconds)
        while not self.should_stop() and time.monotonic() - started < MAX_STEP_SECONDS:
            now = self.pipeline.clock.now()
            batch: list[tuple[AuditSlot, QueueItem]] = []
            for slot in self.slots:
                wanted = slot.breaker.permits(slot.concurrency)
                if wanted:
                    batch += [(slot, item) for item in self.queue.claim_due(slot.name, now, wanted, self._lease(slot))]
            if not batch:
                break
            futures = {self.pool.submit(self._call, slot, item): (slot, item) for slot, item in batch}
            for future in as_completed(futures):
                slot, item = futures[future]
                finished += self._settle(slot, item, future.result())
        return finished

    def _lease(self, slot: AuditSlot) -> Callable[[int], float]:
        r = slot.retry
        return lambda attempts: backoff_delay(attempts, r.initial_backoff_seconds, r.max_backoff_seconds, self.rng)

    def _call(self, slot: AuditSlot, item: QueueItem) -> Outcome:
        try:
            return slot.producer.request(item.body, idempotency_key(item.audit, item.id))
        except Exception:  # a bug here must not kill the step; the item is retried
            log.exception("audit request raised", extra={"fields": {"audit": slot.name}})
            return Outcome(reason="bad_response", transient=True)

    # -- outcomes -----------------------------------------------------------------------------------------
    def _settle(self, slot: AuditSlot, item: QueueItem, outcome: Outcome) -> int:
        name = slot.name
        now = self.pipeline.clock.now()
        self.latency.observe(name, outcome.latency)
        counts: Counts = {}
        if outcome.prompt_tokens:
            count(counts, "judge_tokens_total", outcome.prompt_tokens, audit=name, kind="prompt")
        if outcome.completion_tokens:
            count(counts, "judge_tokens_total", outcome.completion_tokens, audit=name, kind="completion")
        if outcome.cost:
            count(counts, "audit_cost_total", outcome.cost, audit=name)
        fields = {"audit": name, "id": item.id, "attempt": item.attempts, "status": outcome.status,
                  **({"detail": outcome.detail} if outcome.detail else {})}
        if outcome.score is not None:
            slot.breaker.success()
            slot.up = True
            count(counts, "audits_succeeded_total", audit=name)
            with self.pipeline.lock, self.pipeline.store.transaction():
                self.queue.store_result(item.id, name, outcome.score)
                self._add_counts(counts)
            self._join(item, outcome.score)
            return 1
        if not outcome.transient or item.attempts >= slot.retry.max_attempts:
            reason = outcome.reason if not outcome.transient else "attempts_exhausted"
            if outcome.transient:
                self._unhealthy(slot, outcome)
            else:
                slot.breaker.success()  # the server answered; it is the request that cannot succeed
                slot.up = True
            count(counts, "audits_failed_total", audit=name, reason=reason)
            with self.pipeline.lock, self.pipeline.store.transaction():
                self.queue.fail(item.id, name, reason, now)
                self._add_counts(counts)
            log.warning("audit failed", extra={"fields": {**fields, "reason": reason, "last_error": outcome.reason}})
            return 1
        self._unhealthy(slot, outcome)
        r = slot.retry
        wait = max(backoff_delay(item.attempts, r.initial_backoff_seconds, r.max_backoff_seconds, self.rng),
                   outcome.retry_after or 0.0)
        count(counts, "audit_retries_total", audit=name, reason=outcome.reason)
        with self.pipeline.lock, self.pipeline.store.transaction():
            self.queue.retry_at(item.id, name, now + wait, outcome.reason)
            self._add_counts(counts)
        log.info("audit will be retried", extra={"fields": {**fields, "reason": outcome.reason,
                                                            "retry_in_seconds": round(wait, 3)}})
        return 0

    def _add_counts(self, counts: Counts) -> None:
        """Inside the caller's transaction: persisted with the queue change they count."""
        add_counts(self.pipeline.counters, counts)

    def _unhealthy(self, slot: AuditSlot, outcome: Outcome) -> None:
        if outcome.reason == "rate_limited":  # reachable, just busy: pause everyone's requests to it
            slot.up = True
            r = slot.retry
            slot.breaker.hold(outcome.retry_after if outcome.retry_after is not None
                              else backoff_delay(1, r.initial_backoff_seconds, r.max_backoff_seconds, self.rng))
        elif outcome.reason in UNHEALTHY_REASONS:
            slot.up = False
            if slot.breaker.failure():
                log.warning("circuit open: requests paused", extra={"fields": {
                    "audit": slot.name, "component": slot.producer.component,
                    "open_seconds": slot.breaker.open_seconds, "reason": outcome.reason}})

    def _join(self, item: QueueItem, value: float) -> bool:
        """Join a stored score to its output; a failure keeps it stored for the next step."""
        try:
            with self.pipeline.lock, self.pipeline.store.transaction():
                self.pipeline.add_audit(item.output, {item.audit: value}, item.weight)
                self.queue.mark_joined(item.id, item.audit, self.pipeline.clock.now())
        except Exception:
            log.exception("joining an audit failed; the score is kept and joined later",
                          extra={"fields": {"audit": item.audit, "id": item.id}})
            return False
        return True

    def join_obtained(self) -> int:
        """Join scores that were stored but not joined (a crash or a failed join in between)."""
        return sum(self._join(item, item.result) for item in self.queue.obtained() if item.result is not None)

    def _expire(self) -> int:
        with self.pipeline.lock, self.pipeline.store.transaction():
            expired = self.queue.expire(self.pipeline.clock.now())
            counts: Counts = {}
            for audit, n in expired.items():
                count(counts, "audits_failed_total", n, audit=audit, reason="expired")
            self._add_counts(counts)
        if not expired:
            return 0
        log.warning("audits expired before a score was obtained", extra={"fields": {"by_audit": expired}})
        return sum(expired.values())
