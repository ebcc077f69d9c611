"""The daemon: build the pipeline around a live source, schedule its steps, serve HTTP, stop cleanly.

:class:`Agent` is also what ``demo`` runs, so the demo exercises exactly the deployed code.
Shutdown on SIGTERM/SIGINT: stop the scheduler (the running step finishes, no new one starts),
run one last detect step so detector state is flushed, stop HTTP, close the source and the store.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric

from agent import __version__
from agent.audit import build_audits
from agent.clock import WallClock
from agent.config import Config, ConfigError, parse_listen
from agent.exporter import AgentCollector
from agent.http.routes import add_standard_routes
from agent.http.server import HttpServer, Request, Response
from agent.pipeline import Event, Pipeline
from agent.sources.base import Source
from agent.sources.jsonl import JsonlSource
from agent.statelock import StateDirBusy, StateLock
from agent.store import Store

log = logging.getLogger(__name__)
events_log = logging.getLogger("agent.events")

INGEST_BATCHES_PER_RUN = 20  # bounds one ingest step so shutdown and detect are never starved


def build_source(config: Config, store: Store, pipeline: Pipeline, server: HttpServer | None = None) -> Source:
    """The configured source; a push source serves on ``server`` (the agent's listener) when so configured."""
    if config.source is None:
        raise ConfigError(["source: required for run (type jsonl, http_push or http_pull)"])
    if config.source.type == "jsonl":
        assert config.source.path is not None
        return JsonlSource(config.source.path, config.limits.max_record_bytes, store.get_offset(JsonlSource.name),
                           config.source.start_at, config.source.rotation_grace_seconds)
    if config.source.type == "http_push":
        from agent.sources.http_push import HttpPushSource

        return HttpPushSource.from_config(config, pipeline.ingest_items, server)
    if config.source.type == "http_pull":
        from agent.sources.http_pull import HttpPullSource

        return HttpPullSource.from_config(config, store.get_offset(HttpPullSource.name))
    raise ConfigError([f"source.type: {config.source.type} is not available in this build"])


class Agent:
    def __init__(self, config: Config, listen: str | None = None) -> None:
        self.config = config
        state_dir = Path(config.state_dir)
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError([f"state_dir: cannot create {state_dir}: {err.strerror}"]) from None
        try:
            self.state_lock = StateLock(state_dir).acquire()
        except StateDirBusy as err:
            raise ConfigError([f"state_dir: {err}"]) from None
        self.store = Store(state_dir)
        self.pipeline = Pipeline(config, self.store, WallClock())
        self.pipeline.event_sinks.append(self._log_event)
        # judges and graders hook into ingest, so they are wired before anything can ingest
        self.audits = build_audits(config, self.pipeline, should_stop=lambda: self._stopping.is_set())
        host, port = parse_listen(listen or config.listen)
        self.server = HttpServer(host, port)
        self.source = build_source(config, self.store, self.pipeline, self.server)
        self.registry = CollectorRegistry(auto_describe=True)
        self.components: dict[str, Callable[[], bool]] = {"source": lambda: self.source.up,
                                                          "store": lambda: self.store.is_open}
        extra: list[Callable[[], Iterator[Metric]]] = [self._source_metrics]
        if self.audits is not None:
            self.components.update(self.audits.components())
            extra.append(self.audits.collect)
        self.registry.register(AgentCollector(self.pipeline, self.components, extra=extra))
        add_standard_routes(self.server, self.registry, self._ready, __version__)
        self.server.route("POST", "/v1/rebaseline", self._rebaseline, max_body=4096)
        self.server.route("GET", "/v1/events", self._events)
        self._stopping = threading.Event()
        from agent.scheduler import build_scheduler

        s = config.schedule
        jobs: dict[str, tuple[float, Callable[[], object]]] = {
            "ingest": (s.ingest_seconds, self._ingest),
            "detect": (s.detect_seconds, self.pipeline.detect),
            "retention": (s.retention_seconds, self.pipeline.retention),
        }
        if self.audits is not None:
            jobs["audit"] = (s.audit_seconds, self.audits.step)
        self.scheduler = build_scheduler(self.pipeline, jobs)

    @property
    def port(self) -> int:
        return self.server.port

    # -- steps and handlers --------------------------------------------------------------------------
    def _ingest(self) -> None:
        if not self._stopping.is_set():
            self.pipeline.ingest(self.source, max_batches=INGEST_BATCHES_PER_RUN)

    def _ready(self) -> tuple[bool, str]:
        if not self.store.is_open:
            return False, "store closed"
        if not self.scheduler.running or self._stopping.is_set():
            return False, "scheduler not running"
        return True, ""

    def _log_event(self, event: Event) -> None:
        level = logging.WARNING if event.get("state") == "alarm" else logging.INFO
        events_log.log(level, "state change", extra={"fields": {"event": event}})

    def _rebaseline(self, request: Request) -> Response:
        if not request.is_loopback and not self.config.api.allow_remote_rebaseline:
            return Response.json({"error": "rebaseline is accepted from localhost only"}, 403)
        try:
            selector: Any = json.loads(request.body) if request.body.strip() else {}
        except (ValueError, UnicodeDecodeError):
            return Response.json({"error": "body must be a JSON object"}, 400)
        if not isinstance(selector, dict) or set(selector) - {"proxy", "audit", "segment"}:
            return Response.json({"error": "allowed keys: proxy, audit, segment"}, 400)
        events = self.pipeline.rebaseline(selector.get("proxy"), selector.get("audit"), selector.get("segment"))
        return Response.json({"rebaselined": True, "events": events})

    def _source_metrics(self) -> Iterator[Metric]:
        errors = CounterMetricFamily("goodhart_source_errors", "Source errors, by reason.", labels=["reason"])
        for reason, count in sorted(self.source.errors.items()):
            errors.add_metric([reason], float(count))
        yield errors

    def _events(self, _: Request) -> Response:
        return Response.json({"events": self.store.recent_events(200)})

    # -- lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> None:
        self.server.start()
        self.source.start()
        self.scheduler.start()
        log.info("agent started", extra={"fields": {"listen": f"{self.server.httpd.server_address}",
                                                     "version": __version__, "state_dir": self.config.state_dir}})

    def stop(self) -> None:
        self._stopping.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        if self.audits is not None:
            self.audits.close()
        self.pipeline.run_job("detect", self.pipeline.detect)
        self.pipeline.run_job("checkpoint", self.pipeline.checkpoint)
        self.server.stop()
        self.source.close()
        self.store.close()
        self.state_lock.release()
        log.info("agent stopped")

    def run_until_signal(self) -> None:
        """Serve until SIGTERM or SIGINT, then shut down cleanly."""
        done = threading.Event()

        def handle(signum: int, _frame: object) -> None:
            log.info("signal received, shutting down", extra={"fields": {"signal": signal.Signals(signum).name}})
            done.set()

        previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            done.wait()
        finally:
            self.stop()
            for sig, old in previous.items():
                signal.signal(sig, old)
