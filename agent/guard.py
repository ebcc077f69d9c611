"""Never-down mode (``run --on-error serve``): a monitor in someone else's pod never takes it down.

A sidecar that exits on a bad config crash-loops next to the application, and a native sidecar
that never starts keeps the application from starting at all. In this mode the listener comes up
first, before the config is read, and stays up: while the config cannot be loaded or the agent
cannot be assembled (a shape error, a missing key variable, a state dir that cannot be created, a
store that cannot be opened), ``/healthz`` answers 200, ``/readyz`` 503 with the first problem,
and ``/metrics`` says ``goodhart_config_valid 0`` with ``goodhart_up{component} 0`` for the
components the file names. The problems are logged once (again only when they change), and the
config is tried again every ``retry_seconds``, so a fixed ConfigMap heals without a restart. Once
it loads, the agent takes the listener over and runs as ``run`` would. Standalone and gateway runs
do not use this mode: there a bad config fails fast (exit 2), where a deploy notices it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from agent import __version__
from agent.compute import load_and_build
from agent.config import DEFAULT_LISTEN, Config, ConfigError, parse_listen
from agent.config.loading import read_config_tree
from agent.daemon import Agent, stop_on_signal
from agent.exporter import config_state
from agent.http.routes import add_standard_routes
from agent.http.server import HttpServer
from agent.logs import setup_logging

log = logging.getLogger(__name__)

RETRY_SECONDS_DEFAULT = 30.0  # a ConfigMap edit reaches a mounted file within about a minute


def load(path: str) -> Config:
    """What ``run`` loads: the validated config with its computed proxies built once."""
    config, _ = load_and_build(path)
    return config


@dataclass
class Early:
    """What can be told from the file before it is valid: where to listen, how to log, what it runs."""

    listen: str = DEFAULT_LISTEN
    log_level: str = "INFO"
    log_format: str = "json"
    components: list[str] = field(default_factory=lambda: ["source", "store"])


def early_settings(path: str, listen: str | None, environ: dict[str, str] | None = None) -> Early:
    """Best effort from the raw file and the environment; anything unreadable keeps its default."""
    env = dict(os.environ) if environ is None else environ
    try:
        tree: Any = read_config_tree(path)
    except ConfigError:
        tree = {}
    tree = tree if isinstance(tree, dict) else {}
    early = Early()
    candidate = listen or env.get("GOODHART_LISTEN") or tree.get("listen")
    try:
        parse_listen(str(candidate))
        early.listen = str(candidate)
    except ValueError:
        pass
    log_tree = tree.get("log") if isinstance(tree.get("log"), dict) else {}
    level = str(env.get("GOODHART_LOG_LEVEL") or log_tree.get("level") or "INFO").upper()
    early.log_level = level if level in ("DEBUG", "INFO", "WARNING", "ERROR") else "INFO"
    early.log_format = "text" if log_tree.get("format") == "text" else "json"
    if isinstance(tree.get("forward"), dict):
        early.components.append("gateway")
    audits = tree.get("audits") if isinstance(tree.get("audits"), list) else []
    for audit in (a for a in audits if isinstance(a, dict)):
        if "llm_judge" in audit and "judge" not in early.components:
            early.components.append("judge")
        if "http_grader" in audit and isinstance(audit.get("name"), str):
            early.components.append(f"grader:{audit['name']}")
    return early


class DegradedCollector(Collector):
    """The series of an agent that runs no config: its version, the config's state, components down."""

    def __init__(self, problems: Callable[[], list[str]], components: list[str],
                 attempts: Callable[[], int] = lambda: 0) -> None:
        self.problems = problems
        self.components = components
        self.attempts = attempts

    def collect(self) -> Iterator[Metric]:
        info = InfoMetricFamily("goodhart_build", "Agent version.", labels=["version"])
        info.add_metric([__version__], {})
        yield info
        yield from config_state(valid=False, problems=len(self.problems()), attempts=self.attempts())
        up = GaugeMetricFamily("goodhart_up", "1 when a component is reachable, else 0.", labels=["component"])
        for name in sorted(self.components):
            up.add_metric([name], 0.0)
        yield up


class Guard:
    """Serves the probes and ``/metrics`` from the start; assembles the agent once its config allows."""

    def __init__(self, config_path: str, listen: str | None = None, retry_seconds: float = RETRY_SECONDS_DEFAULT,
                 loader: Callable[[str], Config] = load) -> None:
        self.config_path = config_path
        self.retry_seconds = retry_seconds
        self.loader = loader
        self.early = early_settings(config_path, listen)
        self.problems: list[str] = []
        self.attempts = 0

    def run(self, done: threading.Event) -> None:
        """Until ``done``: serve degraded while the config cannot run, then run the agent."""
        setup_logging(self.early.log_level, self.early.log_format)
        host, port = parse_listen(self.early.listen)
        server = HttpServer(host, port)  # a taken port is the one start-up failure left: exit 1
        registry = CollectorRegistry(auto_describe=True)
        registry.register(DegradedCollector(lambda: self.problems, self.early.components, lambda: self.attempts))
        add_standard_routes(server, registry, self._ready, __version__)
        server.start()
        agent = None
        try:
            while not done.is_set() and agent is None:
                agent = self._attempt(server)
                if agent is None:
                    done.wait(self.retry_seconds)
        finally:
            if agent is None:
                server.stop()
        if agent is not None:
            agent.run_until(done)  # the agent stops the listener it took over

    def run_until_signal(self) -> None:
        done = threading.Event()
        with stop_on_signal(done):
            self.run(done)

    def _ready(self) -> tuple[bool, str]:
        problems = self.problems
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return False, f"config not running: {problems[0] if problems else 'loading'}{more}"

    def _attempt(self, server: HttpServer) -> Agent | None:
        try:
            config = self.loader(self.config_path)
            setup_logging(config.log.level, config.log.format)
            agent = Agent(config, server=server, config_attempts=self.attempts + 1)
        except ConfigError as err:
            self._failed(err.problems)
            return None
        except Exception as err:  # a store that cannot be opened, a source that cannot be built
            self._failed([f"(start): {type(err).__name__}: {err}"])
            return None
        if self.problems:
            log.info("config loaded, agent assembled", extra={"fields": {
                "config": self.config_path, "attempts": self.attempts + 1}})
        self.problems = []
        return agent

    def _failed(self, problems: list[str]) -> None:
        if problems != self.problems:  # logged once, and again only when something changed
            log.error("config cannot run; serving /metrics and probes without it, retrying", extra={"fields": {
                "config": self.config_path, "problems": problems, "retry_seconds": self.retry_seconds}})
        self.problems = list(problems) or ["(start): unknown problem"]
        self.attempts += 1  # counted once its problems are known: a scrape never sees one without the other
