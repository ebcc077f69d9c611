"""``replay``: the daemon's own pipeline over a recorded stream, on a virtual clock.

Time is the records' ``ts``: the clock advances to each record's time (never backwards), records
are ingested in batches exactly as the daemon's ingest job would store them, and the detect and
retention steps run at their configured intervals of *virtual* time, coalesced like the
scheduler's jobs (a long quiet gap runs one detect step, not thousands). Same input, same events.

LLM judges and HTTP graders configured as audits are *called for real*: after every ingest flush
the audit step sends the due requests (same sampler, budget and durable queue as the daemon; the
budget, backoffs and expiry count virtual time). Judges make such a replay slower, costly and no
longer exactly repeatable; retries still waiting when the stream ends are dropped with the
replay's temporary store. A recorded stream that already carries the audit values needs none.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from prometheus_client.core import Metric

from agent.audit import build_audits
from agent.clock import VirtualClock
from agent.config import Config
from agent.core import parse_timestamp
from agent.pipeline import Event, Pipeline
from agent.sources.base import Batch
from agent.store import Store

SOURCE_NAME = "replay"


@dataclass
class ReplaySummary:
    records: int
    rejected: int
    events: int
    alarms: list[tuple[str, str, str]]
    seconds: float

    def line(self) -> str:
        pairs = ", ".join(f"{p}/{a}[{s}]" for p, a, s in self.alarms) or "none"
        return (f"replayed {self.records} records ({self.rejected} rejected) in {self.seconds:.1f}s: "
                f"{self.events} state changes; in alarm at the end: {pairs}")


def _peek_ts(line: bytes, ts_field: str) -> float | None:
    """The record's time, if it has a usable one; the pipeline does the real validation."""
    try:
        obj: Any = json.loads(line)
        for part in ts_field.split("."):
            obj = obj[part]
        return parse_timestamp(obj)
    except (ValueError, KeyError, TypeError, IndexError, OverflowError, UnicodeDecodeError):
        return None


class _Progress:
    def __init__(self, total: int, stream: IO[str]) -> None:
        self.total = max(total, 1)
        self.stream = stream
        self.enabled = stream.isatty()
        self._last = 0.0

    def update(self, done: int, records: int) -> None:
        now = time.monotonic()
        if self.enabled and now - self._last > 0.2:
            self._last = now
            frac = min(done / self.total, 1.0)
            bar = "#" * int(frac * 30)
            self.stream.write(f"\r[{bar:<30}] {frac:6.1%} {records} records")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * 60 + "\r")
            self.stream.flush()


def replay(config: Config, input_path: str | Path, events_out: IO[str],
           progress: IO[str] | None = None, metrics_out: str | Path | None = None) -> ReplaySummary:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="goodhart-replay-") as tmp:
        store = Store(Path(tmp))
        clock = VirtualClock()
        pipeline = Pipeline(config, store, clock)
        audits = build_audits(config, pipeline)  # judges and graders are called for real during replay
        written: list[Event] = []

        def sink(event: Event) -> None:
            events_out.write(json.dumps(event, sort_keys=True) + "\n")
            written.append(event)

        pipeline.event_sinks.append(sink)
        try:
            summary = _run(pipeline, clock, config, Path(input_path), progress, audits.step if audits else None)
        finally:
            if audits is not None:
                audits.close()
        alarms = sorted(k for k, state in pipeline.snapshot.states.items() if state == "alarm")
        rejected = int(sum(v for (name, _), v in pipeline.counters.items() if name == "records_rejected_total"))
        if metrics_out is not None:
            _write_metrics(pipeline, Path(metrics_out), [audits.collect] if audits else [])
        store.close()
    return ReplaySummary(summary, rejected, len(written), alarms, time.perf_counter() - started)


def _write_metrics(pipeline: Pipeline, path: Path, extra: list[Callable[[], Iterator[Metric]]]) -> None:
    """What the daemon's /metrics would show at the end of the stream (Prometheus text format)."""
    from prometheus_client import CollectorRegistry, generate_latest

    from agent.exporter import AgentCollector

    registry = CollectorRegistry(auto_describe=True)
    registry.register(AgentCollector(pipeline, extra=extra))
    path.write_bytes(generate_latest(registry))


def _run(pipeline: Pipeline, clock: VirtualClock, config: Config, path: Path, progress_stream: IO[str] | None,
         after_flush: Callable[[], object] | None = None) -> int:
    detect_every = config.schedule.detect_seconds
    retention_every = config.schedule.retention_seconds
    max_batch = config.source.max_batch_records if config.source else 5000
    max_bytes = config.limits.max_record_bytes
    progress = _Progress(path.stat().st_size, progress_stream or sys.stderr)
    buffer: list[bytes | dict[str, Any]] = []
    next_detect: float | None = None
    next_retention: float | None = None
    records = too_large = done_bytes = 0
    last_detect: float | None = None

    def flush() -> None:
        nonlocal too_large
        if buffer or too_large:
            pipeline.ingest_batch(SOURCE_NAME, Batch(items=list(buffer), too_large=too_large))
            buffer.clear()
            too_large = 0
            if after_flush is not None:  # the audit step: due judge/grader requests, on the virtual clock
                after_flush()

    with open(path, "rb") as handle:
        for line in handle:
            done_bytes += len(line)
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            records += 1
            if len(line) > max_bytes:
                too_large += 1
                continue
            ts = _peek_ts(line, config.ts_field)
            if ts is not None and ts > clock.now():
                if next_detect is None or next_retention is None:
                    next_detect, next_retention = ts + detect_every, ts + retention_every
                if ts >= next_detect or ts >= next_retention:
                    flush()
                    if ts >= next_detect:  # coalesced: one step at the latest due time
                        due = next_detect + ((ts - next_detect) // detect_every) * detect_every
                        clock.advance_to(due)
                        pipeline.detect()
                        last_detect = due
                        next_detect = due + detect_every
                    if ts >= next_retention:
                        due = next_retention + ((ts - next_retention) // retention_every) * retention_every
                        clock.advance_to(due)
                        pipeline.retention()
                        next_retention = due + retention_every
                clock.advance_to(ts)
            buffer.append(line)
            if len(buffer) >= max_batch:
                flush()
            progress.update(done_bytes, records)
    flush()
    if last_detect != clock.now() or records == 0:
        pipeline.detect()
    progress.close()
    return records

