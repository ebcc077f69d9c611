"""The daemon: build the pipeline around a live source, schedule its steps, serve HTTP, stop cleanly.

:class:`Agent` is also what ``demo`` runs, so the demo exercises exactly the deployed code. With a
``forward:`` section it runs a forwarder instead (agent/wiring.py ``wire_forwarder``): the same
lifecycle, HTTP endpoints and signals, without detection's routes (rebaseline, events).
Shutdown on SIGTERM/SIGINT: stop the scheduler (the running step finishes, no new one starts),
run the last steps (one detect step so detector state is flushed; nothing for a forwarder, whose
buffer is on disk), stop HTTP, close the source and the store.
"""

from __future__ import annotations

import json
import logging
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agent import __version__
from agent.bank import Event, UnknownPair
from agent.clock import WallClock
from agent.config import Config, ConfigError, LimitsConfig, SourceConfig, parse_listen
from agent.explain import sentence
from agent.http.media import JSON_TYPES, media_type
from agent.http.routes import add_standard_routes
from agent.http.server import HttpServer, Request, Response
from agent.http.wire import ServerLimits
from agent.ingest import tune_collector
from agent.pipeline import Pipeline
from agent.report.routes import add_report_routes
from agent.scheduler import Jobs, LiveScheduler
from agent.sources.base import Ingest, Source
from agent.sources.http_pull import HttpPullSource
from agent.sources.http_push import HttpPushSource
from agent.sources.jsonl import JsonlSource
from agent.sources.langfuse import LangfuseScoresSource
from agent.sources.otlp import OtlpSource
from agent.statelock import StateDirBusy, StateLock
from agent.store import Store
from agent.wiring import Assembly, wire, wire_forwarder

log = logging.getLogger(__name__)
events_log = logging.getLogger("agent.events")
#: how often the store's write probe runs (one tiny row rewritten); /readyz reports its last result
STORE_PROBE_SECONDS = 5.0
#: how often the ingest job runs when every source is pushed to (their records are stored as they arrive,
#: so it finds nothing to read; every second, it was about half of an idle agent's CPU)
PUSH_ONLY_INGEST_SECONDS = 60.0


def server_limits(limits: LimitsConfig) -> ServerLimits:
    """What one connection may cost a listener, from ``limits:``."""
    return ServerLimits(header_timeout=limits.header_timeout_seconds, body_timeout=limits.body_timeout_seconds,
                        max_header_bytes=limits.max_header_bytes, max_connections=limits.max_connections,
                        idle_timeout=limits.idle_timeout_seconds)


def ingest_every(config: Config, sources: list[Source]) -> float:
    """Seconds between ingest steps: ``schedule.ingest_seconds``, or at least a minute when every
    source is pushed to (HTTP or OTLP): those never have anything to read."""
    every = config.schedule.ingest_seconds
    return max(every, PUSH_ONLY_INGEST_SECONDS) if all(isinstance(s, HttpPushSource) for s in sources) else every


def build_source(config: Config, store: Store, ingest: Ingest, server: HttpServer | None = None,
                 settings: SourceConfig | None = None, key: str = "source") -> Source:
    """One configured source (``settings``, default ``config.source``); a push source serves on ``server``
    (the agent's listener) when so configured. ``key`` names it in errors (``sources.1``)."""
    s = settings or config.source
    if s is None:
        raise ConfigError(["source: required for run (type jsonl, http_push, http_pull or otlp)"])
    name = s.source_name
    if s.type == "jsonl":
        if s.path is None:
            raise ConfigError([f"{key}.path: required when type is jsonl"])
        made: Source = JsonlSource(s.path, config.limits.max_record_bytes, store.get_offset(name),
                                   s.start_at, s.rotation_grace_seconds)
    elif s.type == "http_push":
        made = HttpPushSource.from_config(s, ingest, server, key, server_limits(config.limits))
    elif s.type == "otlp":
        made = OtlpSource.from_config(s, ingest, server, key, server_limits(config.limits))
    elif s.type == "http_pull":
        pull = LangfuseScoresSource if s.flavour == "langfuse" else HttpPullSource
        made = pull.from_config(config, store.get_offset(name), s, key)
    else:
        raise ConfigError([f"{key}.type: {s.type} is not available in this build"])
    made.name = name
    return made


def build_sources(config: Config, store: Store, ingest: Ingest, server: HttpServer | None = None) -> list[Source]:
    """Every configured source: ``source:``, or each item of ``sources:`` (closing those already made
    when a later one fails, so their ports are free again)."""
    if config.sources is None:
        return [build_source(config, store, ingest, server)]
    made: list[Source] = []
    try:
        for index, settings in enumerate(config.sources):
            made.append(build_source(config, store, ingest, server, settings, f"sources.{index}"))
    except BaseException:
        for source in made:
            source.close()
        raise
    return made


class Agent:
    """The assembled daemon. ``server``: a listener already serving (never-down mode, agent/guard.py)
    that the agent takes over with its routes, so the probes never go unanswered in between."""

    def __init__(self, config: Config, listen: str | None = None, server: HttpServer | None = None,
                 config_attempts: int = 1) -> None:
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
        except OSError as err:  # read-only or foreign-owned directory
            raise ConfigError([f"state_dir: cannot lock {state_dir}: {err.strerror}"]) from None
        try:
            self.store = Store(state_dir)
            corrupt = self.store.quick_check()
        except sqlite3.Error as err:
            self.state_lock.release()
            raise ConfigError([f"state_dir: cannot open the store in {state_dir}: {err}"]) from None
        if corrupt is not None:
            self.store.close()
            self.state_lock.release()
            raise ConfigError([f"state_dir: the store {self.store.path} is corrupt: {corrupt}"])
        try:  # a failed assembly leaves nothing open: never-down mode tries again in the same process
            self._assemble(config, listen, server, config_attempts)
        except BaseException:
            if server is None and hasattr(self, "server"):  # its own listener; a lent one stays up
                self.server.stop()
            self.store.close()
            self.state_lock.release()
            raise

    def _assemble(self, config: Config, listen: str | None, server: HttpServer | None, config_attempts: int) -> None:
        self._stopping = threading.Event()
        if server is None:
            host, port = parse_listen(listen or config.listen)
            try:
                server = HttpServer(host, port, limits=server_limits(config.limits))
            except OSError as err:
                raise ConfigError([f"listen: cannot listen on {host}:{port}: {err.strerror}"]) from None
        server.limits = server_limits(config.limits)  # also a listener lent by never-down mode
        self.server = server
        self.scheduler = LiveScheduler(Jobs())

        def make_sources(ingest: Ingest) -> list[Source]:
            return build_sources(config, self.store, ingest, self.server)

        self.wired: Assembly
        self.pipeline: Pipeline | None = None
        if config.forward is not None:
            self.wired = wire_forwarder(config, self.store, WallClock(), self.scheduler, make_sources,
                                        should_stop=self._stopping.is_set)
        else:
            wired = wire(config, self.store, WallClock(), self.scheduler, make_sources,
                         should_stop=self._stopping.is_set)
            self.wired = wired
            self.pipeline = wired.pipeline
            self.pipeline.event_sinks.append(self._log_event)
        self.sources = self.wired.sources
        self.source = self.wired.source
        self.scheduler.add("ingest", ingest_every(config, self.sources), self._ingest)
        self._store_problem = self.store.probe_write(time.time())
        self.scheduler.add("store_probe", STORE_PROBE_SECONDS, self._probe_store)
        own = {s.name: s.server for s in self.sources if isinstance(s, HttpPushSource) and s.server is not server}
        registry, prerendered = self.wired.metrics(config_attempts)
        add_standard_routes(self.server, registry, self._ready, __version__, own, prerendered)
        if self.pipeline is not None:
            add_report_routes(self.server, config, self.pipeline.view, self.store, self.wired.components, __version__)
            self.server.route("POST", "/v1/rebaseline", self._rebaseline, max_body=4096)
            self.server.route("GET", "/v1/events", self._events)

    @property
    def port(self) -> int:
        return self.server.port

    # -- steps and handlers --------------------------------------------------------------------------
    def _ingest(self) -> None:
        """Bounded steps, one after the other while a backlog lasts (a step that stopped at its cap):
        catching up never idles until the next interval; a shutdown is seen between steps."""
        while not self._stopping.is_set() and self.wired.ingest_step().more:
            pass

    def _probe_store(self) -> None:
        problem = self.store.probe_write(time.time())
        if problem != self._store_problem:
            log.log(logging.INFO if problem is None else logging.ERROR,
                    "store writable again" if problem is None else "store refuses writes",
                    extra={"fields": {"store": self.store.path, "problem": problem}})
        self._store_problem = problem

    def _ready(self) -> tuple[bool, str]:
        if not self.store.is_open:
            return False, "store closed"
        if self._store_problem is not None:
            return False, self._store_problem
        if not self.scheduler.running or self._stopping.is_set():
            return False, "scheduler not running"
        return True, ""

    def _log_event(self, event: Event) -> None:
        level = logging.WARNING if event.get("state") == "alarm" else logging.INFO
        events_log.log(level, sentence(event), extra={"fields": {"event": event}})

    def _rebaseline(self, request: Request) -> Response:
        if not request.is_loopback and not self.config.api.allow_remote_rebaseline:
            return Response.json({"error": "rebaseline is accepted from localhost only"}, 403)
        if media_type(request.headers.get("content-type", "")) not in JSON_TYPES:
            # a form or text/plain POST is what a browser sends cross-site without a preflight
            return Response.json({"error": "Content-Type must be application/json"}, 415)
        try:
            selector: Any = json.loads(request.body) if request.body.strip() else {}
        except (ValueError, UnicodeDecodeError):
            return Response.json({"error": "body must be a JSON object"}, 400)
        if not isinstance(selector, dict) or set(selector) - {"proxy", "audit", "segment"}:
            return Response.json({"error": "allowed keys: proxy, audit, segment"}, 400)
        assert self.pipeline is not None  # routed only when there is one
        try:
            events = self.pipeline.rebaseline(selector.get("proxy"), selector.get("audit"), selector.get("segment"))
        except UnknownPair as err:
            return Response.json({"error": str(err)}, 404)
        return Response.json({"rebaselined": True, "events": events})

    def _events(self, _: Request) -> Response:
        return Response.json({"events": self.store.recent_events(200)})

    # -- lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> None:
        tune_collector()
        self.server.start()
        for source in self.sources:
            source.start()
        self.scheduler.start()
        mode = "forwarder" if self.config.forward is not None else "agent"
        log.info(f"{mode} started", extra={"fields": {"listen": f"{self.server.httpd.server_address}",
                                                       "version": __version__, "state_dir": self.config.state_dir}})

    def stop(self) -> None:
        self._stopping.set()
        self.scheduler.shutdown()
        self.wired.final_steps()
        self.server.stop()
        self.wired.close()
        self.store.close()
        self.state_lock.release()
        log.info("agent stopped")

    def run_until_signal(self) -> None:
        """Serve until SIGTERM or SIGINT, then shut down cleanly."""
        done = threading.Event()
        with stop_on_signal(done):
            self.run_until(done)

    def run_until(self, done: threading.Event) -> None:
        """Start, serve until ``done`` is set, then shut down cleanly."""
        try:
            self.start()
            done.wait()
        finally:
            self.stop()


@contextmanager
def stop_on_signal(done: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set ``done`` while inside; the previous handlers come back after."""

    def handle(signum: int, _frame: object) -> None:
        log.info("signal received, shutting down", extra={"fields": {"signal": signal.Signals(signum).name}})
        done.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
