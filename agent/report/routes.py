"""The daemon's "why did it alarm" endpoints: ``/`` (status page), ``/v1/evidence`` and ``/report``.

All three read the pipeline's read-only view and the store; none takes the pipeline's lock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from urllib.parse import parse_qs

from agent.config import Config
from agent.http.server import HttpServer, Request, Response
from agent.report import INSTALL_HINT, build_report, report_available
from agent.report.status import render_status
from agent.store import Store
from agent.view import PipelineView

HTML = "text/html; charset=utf-8"


def add_report_routes(server: HttpServer, config: Config, view: PipelineView, store: Store,
                      components: Mapping[str, Callable[[], bool]], version: str) -> None:
    def status(_: Request) -> Response:
        return Response(200, render_status(view, components, version, report_available()).encode(), HTML)

    def evidence(request: Request) -> Response:
        query = {k: v[-1] for k, v in parse_qs(request.query).items()}
        if "proxy" not in query or "audit" not in query:
            return Response.json({"error": "proxy and audit are required (segment defaults to '*')"}, 400)
        limit = query.get("limit")
        if limit is not None and not (limit.isdigit() and int(limit) > 0):
            return Response.json({"error": "limit must be a positive integer"}, 400)
        key = (query["proxy"], query["audit"], query.get("segment", "*"))
        doc = view.evidence(key, int(limit) if limit else None)
        if doc is None:
            return Response.json({"error": f"no pair {key[0]} vs {key[1]} in segment {key[2]!r}",
                                  "pairs": [list(k) for k in sorted(view.snapshot.states)]}, 404)
        return Response.json(doc)

    def report(_: Request) -> Response:
        if not report_available():
            return Response.json({"error": INSTALL_HINT}, 501)
        page = build_report(config, store, view.snapshot, f"the running daemon (state dir {config.state_dir})")
        return Response(200, page.encode(), HTML)

    server.route("GET", "/", status)
    server.route("GET", "/v1/evidence", evidence)
    server.route("GET", "/report", report)
