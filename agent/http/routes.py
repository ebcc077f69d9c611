"""The endpoints every agent listener has: ``/metrics``, ``/healthz``, ``/readyz`` and the index page."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder

from agent.http.server import HttpServer, Request, Response

INDEX_PAGE = """<!doctype html><html><head><title>goodhart-agent</title></head><body>
<h1>goodhart-agent {version}</h1>
<ul><li><a href="/metrics">/metrics</a></li><li><a href="/healthz">/healthz</a></li>
<li><a href="/readyz">/readyz</a></li><li><a href="/v1/events">/v1/events</a> (recent alarm events)</li></ul>
</body></html>
"""


def add_standard_routes(server: HttpServer, registry: CollectorRegistry, ready: Callable[[], tuple[bool, str]],
                        version: str) -> None:
    """Metrics from ``registry``, liveness, readiness from ``ready()`` (ok, reason), and a status page."""

    def metrics(request: Request) -> Response:
        accept = request.headers.get("accept", "")
        if "application/openmetrics-text" in accept:
            encoder, content_type = choose_encoder(accept)
            return Response(200, encoder(registry), content_type)
        # The classic text format, which every Prometheus 2.x understands.
        return Response(200, generate_latest(registry), CONTENT_TYPE_PLAIN_0_0_4)

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
