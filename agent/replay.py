"""``replay``: the daemon's own pipeline over a recorded stream, on a virtual clock.

Wired by the daemon's own function (agent/wiring.py) with two differences: the source is the JSONL
source reading the file from its start, and the scheduler is the virtual one (agent/scheduler.py).
Time is the records' ``ts``: before storing a record, the clock advances to its time (never
backwards), running on the way every step that falls due, at the time the live scheduler would
have run it, coalesced like the live jobs (a long quiet gap runs one detect step, not thousands).
Records are stored in the batches the source reads, split where a step falls due. Same input, same
events.

LLM judges and HTTP graders configured as audits are *called for real*: the audit step runs at its
interval of virtual time (same sampler, budget and durable queue as the daemon; the budget,
backoffs and expiry count virtual time). Judges make such a replay slower, costly and no
longer exactly repeatable; retries still waiting when the stream ends are dropped with the
replay's temporary store. A recorded stream that already carries the audit values needs none.

With ``state_dir`` the store is kept there (a new or empty directory, locked like the daemon's)
and checkpointed at the end, so ``reference export`` can read the references the replay fitted.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from prometheus_client import generate_latest

from agent.bank import Event
from agent.clock import VirtualClock
from agent.config import Config, ConfigError
from agent.ingest import tune_collector
from agent.records import Record, Rejection
from agent.scheduler import Jobs, VirtualScheduler
from agent.sources.base import Batch
from agent.sources.jsonl import JsonlSource
from agent.statelock import StateDirBusy, StateLock
from agent.store import DB_FILENAME, Store
from agent.wiring import Wired, wire

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


@contextmanager
def _state_dir(keep: str | Path | None) -> Iterator[Path]:
    """A temporary directory, or ``keep`` (new or without a store; held with the daemon's lock)."""
    if keep is None:
        with tempfile.TemporaryDirectory(prefix="goodhart-replay-") as tmp:
            yield Path(tmp)
        return
    path = Path(keep)
    try:
        path.mkdir(parents=True, exist_ok=True)
        lock = StateLock(path).acquire()
    except (OSError, StateDirBusy) as err:
        raise ConfigError([f"--state-dir: {path}: {getattr(err, 'strerror', None) or err}"]) from None
    try:
        if (path / DB_FILENAME).exists():
            raise ConfigError([f"--state-dir: {path} already holds a store; replay starts from an empty one"])
        yield path
    finally:
        lock.release()


def replay(config: Config, input_path: str | Path, events_out: IO[str],
           progress: IO[str] | None = None, metrics_out: str | Path | None = None,
           state_dir: str | Path | None = None) -> ReplaySummary:
    started = time.perf_counter()
    path = Path(input_path)
    if not path.is_file():
        raise FileNotFoundError(2, "no such file", str(path))
    with _state_dir(state_dir) as directory:
        store = Store(directory, durable=False)  # a new store that acknowledges nothing: no syncs
        clock = VirtualClock()
        scheduler = VirtualScheduler(Jobs(reraise=True), clock)
        wired = wire(config, store, clock, scheduler, lambda _ingest: JsonlSource(
            path, config.limits.max_record_bytes, None, "beginning", name=SOURCE_NAME))
        written: list[Event] = []

        def sink(event: Event) -> None:
            events_out.write(json.dumps(event, sort_keys=True) + "\n")
            written.append(event)

        wired.pipeline.event_sinks.append(sink)
        try:
            _run(wired, scheduler, _Progress(path.stat().st_size, progress or sys.stderr))
            wired.pipeline.checkpoint()  # what a kept store's next reader (reference export) sees
        finally:
            wired.close()
        view = wired.pipeline.view
        alarms = sorted(k for k, state in view.snapshot.states.items() if state == "alarm")
        rejected = int(sum(v for (name, _), v in view.counters().items() if name == "records_rejected_total"))
        records = int(view.counter("records_total", source=SOURCE_NAME))
        if metrics_out is not None:  # what the daemon's /metrics would show at the end of the stream
            Path(metrics_out).write_bytes(generate_latest(wired.registry()))
        store.close()
    return ReplaySummary(records, rejected, len(written), alarms, time.perf_counter() - started)


def _run(wired: Wired, scheduler: VirtualScheduler, progress: _Progress) -> None:
    source = wired.source
    assert isinstance(source, JsonlSource)
    max_items = wired.config.source.max_batch_records if wired.config.source else 5000
    records = 0
    tune_collector()
    while True:
        batch = source.read(max_items)
        if not batch.items and not batch.too_large and batch.offset is None:
            batch = source.read_tail()
            if not batch.items and not batch.too_large:
                break
        _store_in_time(wired, scheduler, batch)
        source.commit(batch.offset)
        records += len(batch.items) + batch.too_large
        progress.update(source.position, records)
    if wired.audits is not None:
        scheduler.run_now("audit")  # what the last records made due
    if scheduler.last_run.get("detect") != scheduler.clock.now() or records == 0:
        scheduler.run_now("detect")
    progress.close()


def _store_in_time(wired: Wired, scheduler: VirtualScheduler, batch: Batch) -> None:
    """Store a batch in order of arrival, letting the virtual clock run the steps that fall due on the way."""
    pipeline = wired.pipeline
    pending: list[Record | Rejection] = []
    for item in batch.items:
        parsed = pipeline.parse(item)
        ts = parsed.ts if isinstance(parsed, Record) else None
        if ts is not None and ts > scheduler.clock.now():
            if scheduler.due_by(ts) and pending:
                pipeline.store_items(SOURCE_NAME, pending)
                pending = []
            scheduler.advance_to(ts)
        pending.append(parsed)
    pipeline.store_items(SOURCE_NAME, pending, batch.too_large, batch.offset)
