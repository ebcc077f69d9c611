"""End to end with the real thing: Prometheus and Alertmanager scrape and alert on the agent's demo.

One scenario, run once for this module (a few minutes at most), then checked claim by claim:

1. ``goodhart-agent demo`` (sped up) is the scrape target of a real ``prometheus`` (Debian package)
   with ``rules/goodhart-rules.yml`` loaded, alerting to a real ``prometheus-alertmanager``
   configured from ``examples/alertmanager.yml``, whose webhooks point at a small HTTP server in
   this test. Everything listens on free 127.0.0.1 ports and keeps its data in temporary
   directories; every process started here is stopped at the end.
2. Healthy phase (the demo's bot behaves): Prometheus must show no firing alert and the webhook
   must receive nothing, while the detectors do pass through warn (warming up) - warn never pages.
3. The bot starts gaming its proxies: GoodhartProxyAuditDivergence must reach the ``/page``
   webhook through Alertmanager with the rule's labels and annotations, and never ``/ticket``.
4. While it fires, every PromQL expression of the dashboards must return data from this
   Prometheus, and the live ``/metrics`` must pass ``promtool check metrics`` and be catalogued.
5. ``POST /v1/rebaseline`` to the agent (the change is declared intended): the page must resolve.

Two adaptations, both to fit production timings into minutes: the rules are loaded from a test copy
whose ``for:`` durations are divided by the demo's speedup (so each alert still waits as many
detect ticks as in production; the expressions are unchanged), and Alertmanager's group timers
are cut to a second. Prometheus runs with ``--rules.alert.resend-delay=1s`` (by default it would
wait a minute to resend the first notification that it drops while discovering Alertmanager).

Without the binaries the tests skip locally and fail under ``CI=true``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "rules" / "goodhart-rules.yml"
AM_EXAMPLE = ROOT / "examples" / "alertmanager.yml"
DASHBOARDS = ROOT / "dashboards"
CATALOGUE = ROOT / "docs" / "metrics.md"
PAGE = "GoodhartProxyAuditDivergence"

SPEEDUP = 20.0  # demo seconds per wall second; the demo's detect tick becomes 0.75 s
CHANGE_AFTER = 900.0  # demo seconds of healthy bot: 45 s of wall time
SCRAPE = "1s"
RATE_INTERVAL = "10s"  # what Grafana's $__rate_interval would be for 1 s scrapes, with margin
PAGE_TIMEOUT = 90.0  # wall seconds from the change to the page at the webhook
RESOLVE_TIMEOUT = 90.0
DASHBOARD_TIMEOUT = 30.0
JOB = "goodhart-demo"


# -- tools and processes ----------------------------------------------------------------------------
def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} not found (apt-get install prometheus prometheus-alertmanager)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Process:
    """A child process with its output in a log file; stopped by its own pid only."""

    def __init__(self, name: str, args: list[str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log: IO[bytes] = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.started = time.monotonic()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self, tail: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


class Webhook:
    """Alertmanager's webhook receiver: records (monotonic time, path, payload) of every POST."""

    def __init__(self) -> None:
        received: list[tuple[float, str, dict[str, Any]]] = []
        lock = threading.Lock()

        # A raw handler, not agent.http.server: it accepts a POST on any path (the receivers' paths
        # come from the Alertmanager config), which a route table keyed by exact path does not.
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with lock:
                    received.append((time.monotonic(), self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.received = received
        self.lock = lock
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def snapshot(self) -> list[tuple[float, str, dict[str, Any]]]:
        with self.lock:
            return list(self.received)

    def alerts(self, path: str | None = None) -> Iterator[tuple[float, str, dict[str, Any], dict[str, Any]]]:
        """(time, path, payload, alert) for every alert of every notification."""
        for when, p, payload in self.snapshot():
            if path is None or p == path:
                for alert in payload.get("alerts", []):
                    yield when, p, payload, alert

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- configs for the test -------------------------------------------------------------------------
def scaled_rules(factor: float) -> str:
    """rules/goodhart-rules.yml with every ``for:`` divided by ``factor`` (expressions unchanged)."""
    units = {"s": 1, "m": 60, "h": 3600}

    def scale(m: re.Match[str]) -> str:
        seconds = int(m.group(2)) * units[m.group(3)]
        return f"{m.group(1)}for: {max(1, round(seconds * 1000 / factor))}ms"

    text, n = re.subn(r"^(\s*)for: (\d+)([smh])\s*$", scale, RULES.read_text(), flags=re.M)
    assert n == len(rule_alerts()), "every alert's for: must have been rewritten"
    return text


def rule_alerts() -> dict[str, dict[str, Any]]:
    data = yaml.safe_load(RULES.read_text())
    return {r["alert"]: r for g in data["groups"] for r in g["rules"] if "alert" in r}


def alertmanager_config(hook_port: int) -> str:
    """examples/alertmanager.yml, webhooks pointed at the test's receiver, timers cut to 1 s."""
    data = yaml.safe_load(AM_EXAMPLE.read_text())
    for receiver in data["receivers"]:
        for hook in receiver["webhook_configs"]:
            path = "/" + hook["url"].split("/", 3)[3]
            hook["url"] = f"http://127.0.0.1:{hook_port}{path}"

    def fast(route: dict[str, Any]) -> None:
        for key in ("group_wait", "group_interval"):
            if key in route or route is data["route"]:
                route[key] = "1s"
        for child in route.get("routes", []):
            fast(child)

    fast(data["route"])
    return yaml.safe_dump(data, sort_keys=False)


def prometheus_config(agent_port: int, am_port: int, forwarder_port: int) -> str:
    targets = [f"127.0.0.1:{agent_port}", f"127.0.0.1:{forwarder_port}"]
    return yaml.safe_dump({
        "global": {"scrape_interval": SCRAPE, "scrape_timeout": SCRAPE, "evaluation_interval": SCRAPE},
        "rule_files": ["rules.yml"],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
        "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": targets}]}],
    }, sort_keys=False)


def fleet_configs(tmp: Path, records: Path, push_port: int) -> tuple[Path, Path]:
    """A gateway and a forwarder that tails the demo's own records file (fleet mode, docs/fleet.md), so the
    dashboard's forwarding row has a real forwarder to show."""
    proxies = [{"name": "thumbs_up", "field": "proxy.thumbs_up"},
               {"name": "answer_words", "compute": {"kind": "length", "field": "output", "unit": "words"}}]
    common = {"proxies": proxies, "audits": [{"name": "resolved", "field": "audit.resolved"}],
              "segments": {"field": "labels.segment"}, "log": {"level": "WARNING", "format": "text"}}
    gateway, forwarder = tmp / "gateway.yaml", tmp / "forwarder.yaml"
    gateway.write_text(yaml.safe_dump({**common, "state_dir": str(tmp / "gateway"),
                                       "source": {"type": "http_push", "listen": f"127.0.0.1:{push_port}"}}))
    forwarder.write_text(yaml.safe_dump({**common, "state_dir": str(tmp / "forwarder"),
                                         "source": {"type": "jsonl", "path": str(records)},
                                         "forward": {"url": f"http://127.0.0.1:{push_port}/v1/records"}}))
    return gateway, forwarder


def dashboard_queries() -> dict[str, str]:
    """Every PromQL expression in dashboards/*.json, Grafana variables replaced by "All"."""
    out: dict[str, str] = {}
    for path in sorted(DASHBOARDS.glob("*.json")):
        dash = json.loads(path.read_text())
        found: list[tuple[str, str]] = []
        for panel in dash["panels"]:
            for p in [panel, *panel.get("panels", [])]:
                found += [(f"{path.stem} / {p['title']} / {t['refId']}", t["expr"]) for t in p.get("targets", [])]
        found += [(f"{path.stem} / annotation {a['name']}", a["expr"]) for a in dash["annotations"]["list"]
                  if "expr" in a]
        for where, expr in found:
            q = expr.replace("$__rate_interval", RATE_INTERVAL)
            q = re.sub(r"\$\{?(job|namespace|pod|instance|proxy|audit|segment)\}?", ".*", q)
            assert "$" not in q, f"unsubstituted variable in {where}: {q}"
            out[where] = q
    return out


def catalogue() -> set[str]:
    return {m.group(1) for line in CATALOGUE.read_text().splitlines()
            if (m := re.match(r"\|\s*`([^`]+)`\s*\|", line))}


# -- the scenario ----------------------------------------------------------------------------------
class ScenarioError(Exception):
    pass


@dataclass
class Scenario:
    agent_port: int = 0
    prom_url: str = ""
    change_at: float = 0.0  # monotonic time of the demo's change, lower bound
    healthy_firing: list[dict[str, Any]] = field(default_factory=list)
    healthy_warn_pairs: set[tuple[str, str, str]] = field(default_factory=set)
    healthy_ticks: int = 0
    notifications_before_change: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)
    page_at: float | None = None
    metrics_text: str = ""
    check_metrics: subprocess.CompletedProcess[str] | None = None
    dashboard: dict[str, int | str] = field(default_factory=dict)  # query -> series returned, or the error
    rebaseline: dict[str, Any] | None = None
    notifications: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)
    firing_after_rebaseline: list[dict[str, Any]] | None = None
    errors: list[str] = field(default_factory=list)
    logs: dict[str, str] = field(default_factory=dict)

    def require(self) -> None:
        """Fail a test whose evidence was never gathered, with the reason."""
        if self.errors:
            pytest.fail("scenario incomplete: " + "; ".join(self.errors) + "\n\n" + self.log_tail())

    def log_tail(self) -> str:
        return "\n".join(f"--- {name} ---\n{text}" for name, text in self.logs.items())


def wait_until(what: str, predicate: Callable[[], Any], timeout: float, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except requests.RequestException:
            value = None
        if value:
            return value
        time.sleep(every)
    raise ScenarioError(f"timed out after {timeout:.0f}s waiting for {what}")


def query(prom_url: str, expr: str) -> list[dict[str, Any]]:
    resp = requests.get(f"{prom_url}/api/v1/query", params={"query": expr}, timeout=5)
    resp.raise_for_status()
    body = resp.json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def page_firing(hook: Webhook) -> bool:
    return any(a["labels"].get("alertname") == PAGE and a["status"] == "firing" for *_, a in hook.alerts("/page"))


def fired_groups(hook: Webhook) -> set[tuple[str, str, str]]:
    return {(a["labels"]["proxy"], a["labels"]["audit"], a["labels"]["segment"])
            for *_, a in hook.alerts("/page") if a["labels"].get("alertname") == PAGE and a["status"] == "firing"}


def resolved_groups(hook: Webhook) -> set[tuple[str, str, str]]:
    return {(a["labels"]["proxy"], a["labels"]["audit"], a["labels"]["segment"])
            for *_, a in hook.alerts("/page") if a["labels"].get("alertname") == PAGE and a["status"] == "resolved"}


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    prometheus, alertmanager, promtool = tool("prometheus"), tool("prometheus-alertmanager"), tool("promtool")
    tmp = tmp_path_factory.mktemp("e2e")
    s = Scenario()
    procs: list[Process] = []
    hook = Webhook()
    try:
        _run(s, tmp, procs, hook, prometheus, alertmanager, promtool)
    except ScenarioError as err:
        s.errors.append(str(err))
    finally:
        s.notifications = hook.snapshot()
        for p in reversed(procs):
            p.stop()
            s.logs[p.name] = p.log()
        hook.stop()
    yield s


def _run(s: Scenario, tmp: Path, procs: list[Process], hook: Webhook, prometheus: str, alertmanager: str,
         promtool: str) -> None:
    s.agent_port, am_port, prom_port = free_port(), free_port(), free_port()
    s.prom_url = f"http://127.0.0.1:{prom_port}"
    am_url = f"http://127.0.0.1:{am_port}"
    agent_url = f"http://127.0.0.1:{s.agent_port}"

    (tmp / "alertmanager.yml").write_text(alertmanager_config(hook.port))
    procs.append(Process("alertmanager", [
        alertmanager, f"--config.file={tmp / 'alertmanager.yml'}", f"--storage.path={tmp / 'am-data'}",
        f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address=", "--log.level=warn"], tmp))

    forwarder_port, push_port = free_port(), free_port()
    gateway_config, forwarder_config = fleet_configs(tmp, tmp / "demo" / "outputs.jsonl", push_port)
    for name, config, port in (("gateway", gateway_config, free_port()),
                               ("forwarder", forwarder_config, forwarder_port)):
        proc = Process(name, [sys.executable, "-m", "agent", "run", "--config", str(config), "--listen",
                              f"127.0.0.1:{port}"], tmp)
        procs.append(proc)
        ready = f"http://127.0.0.1:{port}/readyz"
        wait_until(f"the {name} ready", lambda p=proc, u=ready: p.alive() and requests.get(u, timeout=1).ok, 60)

    (tmp / "rules.yml").write_text(scaled_rules(SPEEDUP))
    (tmp / "prometheus.yml").write_text(prometheus_config(s.agent_port, am_port, forwarder_port))
    checked = subprocess.run([promtool, "check", "config", str(tmp / "prometheus.yml")], capture_output=True,
                             text=True, timeout=60)
    if checked.returncode != 0:
        raise ScenarioError(f"promtool check config: {checked.stdout}{checked.stderr}")

    wait_until("alertmanager ready", lambda: requests.get(f"{am_url}/-/ready", timeout=1).ok, 30)
    procs.append(Process("prometheus", [
        prometheus, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'prom-data'}",
        f"--web.listen-address=127.0.0.1:{prom_port}", "--rules.alert.resend-delay=1s",
        "--log.level=warn"], tmp))
    wait_until("prometheus ready", lambda: requests.get(f"{s.prom_url}/-/ready", timeout=1).ok, 30)

    # The demo starts last, with everything watching: its warm-up (all segments take their reference
    # from the one span, a few wall seconds) is scraped from its first detect step.
    demo = Process("demo", [
        sys.executable, "-m", "agent", "demo", "--listen", f"127.0.0.1:{s.agent_port}", "--speedup", str(SPEEDUP),
        "--change-after", str(CHANGE_AFTER), "--state-dir", str(tmp / "demo")], tmp)
    procs.append(demo)
    # The demo's clock starts after the process does: this is a lower bound of the change.
    s.change_at = demo.started + CHANGE_AFTER / SPEEDUP
    wait_until("the demo's agent ready", lambda: demo.alive() and requests.get(f"{agent_url}/readyz", timeout=1).ok,
               60)
    wait_until("the first scrape", lambda: query(s.prom_url, f'up{{job="{JOB}"}} == 1'), 30)

    # Healthy phase: watch every second until just before the change.
    while time.monotonic() < s.change_at - 1.0:
        if not demo.alive():
            raise ScenarioError("the demo exited during the healthy phase")
        s.healthy_ticks += 1
        s.healthy_firing += [r["metric"] for r in query(s.prom_url, 'ALERTS{alertstate="firing"}')]
        s.healthy_warn_pairs |= {(r["metric"]["proxy"], r["metric"]["audit"], r["metric"]["segment"])
                                 for r in query(s.prom_url, "max_over_time(goodhart_detector_state[5m]) == 1")}
        time.sleep(1.0)
    s.notifications_before_change = hook.snapshot()

    # The page, through Alertmanager.
    wait_until("the divergence page at the webhook", lambda: page_firing(hook), PAGE_TIMEOUT)
    s.page_at = time.monotonic()

    # While it fires: the live metrics and every dashboard query.
    s.metrics_text = requests.get(f"{agent_url}/metrics", timeout=5).text
    s.check_metrics = subprocess.run([promtool, "check", "metrics"], input=s.metrics_text, capture_output=True,
                                     text=True, timeout=60)
    queries = dashboard_queries()

    def count(q: str) -> int | str:
        resp = requests.get(f"{s.prom_url}/api/v1/query", params={"query": q}, timeout=5)
        body = resp.json()
        return len(body["data"]["result"]) if body.get("status") == "success" else f"error: {body.get('error')}"

    def all_have_data() -> bool:
        s.dashboard = {q: count(q) for q in queries.values()}
        return all(isinstance(n, int) and n > 0 for n in s.dashboard.values())

    # On timeout, test_every_dashboard_query_returns_data names the queries without data.
    with contextlib.suppress(ScenarioError):
        wait_until("data for every dashboard query", all_have_data, DASHBOARD_TIMEOUT, every=2.0)

    # The change is declared intended: rebaseline every pair, and the page resolves.
    fired = fired_groups(hook)
    resp = requests.post(f"{agent_url}/v1/rebaseline", json={}, timeout=10)
    s.rebaseline = {"status": resp.status_code, "body": resp.json()}
    wait_until("resolved notifications for every paged pair", lambda: fired_groups(hook) <= resolved_groups(hook)
               and not query(s.prom_url, f'ALERTS{{alertname="{PAGE}",alertstate="firing"}}'), RESOLVE_TIMEOUT)
    s.firing_after_rebaseline = [r["metric"] for r in
                                 query(s.prom_url, f'ALERTS{{alertname="{PAGE}",alertstate="firing"}}')]
    assert fired  # page_firing() held above


DEMO_PROXIES = {"thumbs_up", "resolution_seconds", "answer_words", "predicted_thumbs"}
DEMO_AUDITS = {"resolved", "rubric"}


# -- the claims -----------------------------------------------------------------------------------
def test_nothing_fires_during_the_healthy_phase(scenario: Scenario) -> None:
    assert scenario.healthy_ticks >= 20, scenario.errors or "healthy phase too short to mean anything"
    assert not scenario.healthy_firing, f"firing while the bot was healthy: {scenario.healthy_firing}"
    assert not scenario.notifications_before_change, scenario.notifications_before_change
    # Detectors did pass through warn (warming up their reference): warn does not page.
    assert scenario.healthy_warn_pairs, "no detector was ever in warn during the healthy phase"


def test_divergence_pages_through_alertmanager_with_labels_and_annotations(scenario: Scenario) -> None:
    scenario.require()
    rule = rule_alerts()[PAGE]
    pages = [(p, a) for _, path, p in scenario.notifications if path == "/page"
             for a in p["alerts"] if a["status"] == "firing"]
    assert pages
    for payload, alert in pages:
        assert payload["version"] == "4" and payload["receiver"] == "goodhart-page"
        labels = alert["labels"]
        assert labels["alertname"] == PAGE and labels["severity"] == "critical"
        assert labels["job"] == JOB and labels["instance"] == f"127.0.0.1:{scenario.agent_port}"
        assert labels["proxy"] in DEMO_PROXIES and labels["audit"] in DEMO_AUDITS
        assert labels["segment"] in {"*", "billing", "technical", "account"}
        ann = alert["annotations"]
        assert ann["summary"] == rule["annotations"]["summary"]
        assert ann["runbook_url"] == rule["annotations"]["runbook_url"]
        assert ann["description"].startswith(f"Proxy {labels['proxy']} no longer tracks audit {labels['audit']} "
                                              "on segment "
                                              f"\"{labels['segment']}\" ({JOB} 127.0.0.1:{scenario.agent_port})")
        # The gap comes from a query template: a number, not "an unknown amount".
        assert re.search(r"audited quality is -?[0-9.e+-]+ audit units below", ann["description"]), ann
    assert scenario.page_at is not None and scenario.page_at - scenario.change_at < PAGE_TIMEOUT


def test_the_divergence_goes_to_the_page_receiver_only(scenario: Scenario) -> None:
    scenario.require()
    elsewhere = [(path, a["labels"]) for _, path, p in scenario.notifications for a in p["alerts"]
                 if a["labels"].get("alertname") == PAGE and path != "/page"]
    assert not elsewhere
    others_paged = [a["labels"] for _, path, p in scenario.notifications for a in p["alerts"]
                    if path == "/page" and a["labels"].get("alertname") != PAGE]
    assert not others_paged


#: Series an agent exports only with a source type this scenario does not run (a demo agent, a
#: gateway and a forwarder): queried here, and checked to exist by that source's own end-to-end test.
ONLY_WITH_SOURCE = {
    "goodhart_otlp_spans_skipped_total": "otlp (tests/test_otlp.py)",
    "goodhart_otlp_log_records_skipped_total": "otlp (tests/test_otlp.py)",
    "goodhart_langfuse_scores_skipped_total": "http_pull with flavour langfuse (tests/test_langfuse.py)",
}


def test_every_dashboard_query_returns_data(scenario: Scenario) -> None:
    scenario.require()
    queries = dashboard_queries()
    assert set(scenario.dashboard) == set(queries.values()), "dashboard queries were not all run"
    conditional = {where for where, q in queries.items()
                   if set(re.findall(r"goodhart_\w+", q)) <= set(ONLY_WITH_SOURCE)}
    assert all(isinstance(scenario.dashboard[queries[w]], int) for w in conditional)  # valid PromQL all the same
    empty = [f"{where}: {scenario.dashboard[q] or 'no data'}" for where, q in queries.items()
             if where not in conditional and (not isinstance(scenario.dashboard[q], int) or not scenario.dashboard[q])]
    assert not empty, "no data from Prometheus for:\n" + "\n".join(empty)
    assert set(ONLY_WITH_SOURCE) <= catalogue()


def test_live_metrics_pass_promtool_check_metrics(scenario: Scenario) -> None:
    scenario.require()
    result = scenario.check_metrics
    assert result is not None
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), (
        result.stdout + result.stderr)


def test_every_live_series_is_catalogued(scenario: Scenario) -> None:
    scenario.require()
    live = {f.name + ("_total" if f.type == "counter" else "_info" if f.type == "info" else "")
            for f in text_string_to_metric_families(scenario.metrics_text) if f.name.startswith("goodhart_")}
    assert live
    missing = sorted(live - catalogue())
    assert not missing, f"exported by the agent but not in docs/metrics.md: {missing}"


def test_divergence_resolves_after_a_rebaseline(scenario: Scenario) -> None:
    scenario.require()
    assert scenario.rebaseline is not None and scenario.rebaseline["status"] == 200
    assert scenario.rebaseline["body"].get("rebaselined") is True
    resolved = [a for _, path, p in scenario.notifications for a in p["alerts"]
                if path == "/page" and a["status"] == "resolved" and a["labels"]["alertname"] == PAGE]
    assert resolved
    for alert in resolved:
        assert alert["endsAt"] > alert["startsAt"]
    assert scenario.firing_after_rebaseline == []
