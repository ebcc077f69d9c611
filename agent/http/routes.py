"""The endpoints every agent listener has: ``/metrics``, ``/healthz``, ``/readyz`` and the index page."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder
from prometheus_client.metrics_core import Metric

from agent.http.server import DROP_REASONS, HttpServer, Request, Response

INDEX_PAGE = """<!doctype html><html><head><title>goodhart-agent</title></head><body>
<h1>goodhart-agent {version}</h1>
<ul><li><a href="/metrics">/metrics</a></li><li><a href="/healthz">/healthz</a></li>
<li><a href="/readyz">/readyz</a></li><li><a href="/v1/events">/v1/events</a> (recent alarm events)</li></ul>
</body></html>
"""


#: The error answers the listeners give (docs/hardening.md), each exported from 0.
ERROR_STATUSES = (400, 401, 403, 404, 405, 408, 411, 413, 414, 415, 429, 431, 500, 503)


class Prerendered(Protocol):
    """Series rendered ahead of the scrape (agent/exposition.py), appended to the live ones."""

    def body(self, openmetrics: bool) -> bytes: ...


OPENMETRICS_EOF = b"# EOF\n"


class ListenerCollector:
    """Error answers by status and dropped connections by reason, per listener (``main``, or the
    name of a push source with its own listener)."""

    def __init__(self, listeners: Mapping[str, HttpServer]) -> None:
        self.listeners = dict(listeners)

    def collect(self) -> Iterator[Metric]:
        errors = CounterMetricFamily("goodhart_http_errors", "HTTP error answers, by listener and status.",
                                     labels=["listener", "status"])
        dropped = CounterMetricFamily("goodhart_http_connections_dropped",
                                      "Connections dropped without an answer from a handler, by reason.",
                                      labels=["listener", "reason"])
        open_ = GaugeMetricFamily("goodhart_http_connections_open", "Open connections.", labels=["listener"])
        for name, server in sorted(self.listeners.items()):
            counts = {status: 0 for status in ERROR_STATUSES}  # exported from 0, so rate() works at once
            counts.update(dict(server.httpd.errors))
            for status, count in sorted(counts.items()):
                errors.add_metric([name, str(status)], float(count))
            for reason in DROP_REASONS:
                dropped.add_metric([name, reason], float(server.httpd.dropped[reason]))
            open_.add_metric([name], float(server.httpd.open_connections))
        yield from (errors, dropped, open_)


def add_standard_routes(server: HttpServer, registry: CollectorRegistry, ready: Callable[[], tuple[bool, str]],
                        version: str, listeners: Mapping[str, HttpServer] | None = None,
                        prerendered: Prerendered | None = None) -> None:
    """Metrics from ``registry`` (then ``prerendered``'s bytes), liveness, readiness from ``ready()``
    (ok, reason), and a status page. The error counts of ``server`` (as ``main``) and of
    ``listeners`` join ``registry``."""
    registry.register(ListenerCollector({"main": server, **(listeners or {})}))  # type: ignore[arg-type]

    def metrics(request: Request) -> Response:
        accept = request.headers.get("accept", "")
        # The classic text format, which every Prometheus 2.x understands, unless OpenMetrics is asked for.
        encoder, content_type = (choose_encoder(accept) if "application/openmetrics-text" in accept
                                 else (generate_latest, CONTENT_TYPE_PLAIN_0_0_4))
        body = encoder(registry)
        if prerendered is not None:
            if body.endswith(OPENMETRICS_EOF):  # OpenMetrics: one EOF, at the very end
                body = body[:-len(OPENMETRICS_EOF)] + prerendered.body(True) + OPENMETRICS_EOF
            else:
                body += prerendered.body(False)
        return Response(200, body, content_type)

    def healthz(_: Request) -> Response:
        return Response.text("ok\n")

    def readyz(_: Request) -> Response:
        ok, reason = ready()
        return Response.text(("ready" if ok else f"not ready: {reason}") + "\n", 200 if ok else 503)

    def index(_: Request) -> Response:
        return Response(200, INDEX_PAGE.format(version=version).encode(), "text/html; charset=utf-8")

    server.route("GET", "/metrics", metrics)
    server.route("GET", "/healthz", healthz)
    server.route("GET", "/readyz", readyz)
    server.route("GET", "/", index)
