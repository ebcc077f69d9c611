"""A local stand-in for Langfuse's Scores API v3 on 127.0.0.1, for the langfuse flavour's tests.

Langfuse itself (a web app with Postgres, ClickHouse, Redis and S3) cannot run here, so this server
follows its documented read API instead (https://langfuse.com/docs/api-and-data-platform/features/
scores-api; Langfuse's ``fern/apis/server/definition/scores-v3.yml`` and
``web/src/features/public-api/server/scores-api-v3.ts``):

- ``GET /api/public/v3/scores``, Basic auth (public key : secret key), 401 otherwise;
- ``limit`` (default 50, above 100 is a 400), ``name``/``environment``/``source`` as comma-separated
  lists, ``fromTimestamp`` inclusive, ``fields=subject`` adds ``subject``;
- newest first (``timestamp`` then ``id`` descending); ``meta.cursor`` is an opaque base64url token
  of the last row's (timestamp, id), absent on the last page;
- ``value`` a number (NUMERIC), a boolean (BOOLEAN) or a string (CATEGORICAL, TEXT, CORRECTION).

``script`` holds replies given instead of the next requests' (``(status, headers)``), e.g. one 429
with ``Retry-After``.
"""

from __future__ import annotations

import base64
import json
import threading
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from agent.core import parse_timestamp
from agent.http.server import HttpServer, Request, Response

PUBLIC_KEY, SECRET_KEY = "pk-lf-test", "sk-lf-test"


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def score(sid: str, name: str, value: Any, ts: float, trace: str | None = None, observation: str | None = None,
          data_type: str = "NUMERIC", session: str | None = None, source: str = "API") -> dict[str, Any]:
    """One stored score, as the server keeps it (``subject`` is derived when asked for)."""
    return {"id": sid, "name": name, "value": value, "ts": ts, "traceId": trace, "observationId": observation,
            "sessionId": session, "dataType": data_type, "source": source, "environment": "default"}


class FakeLangfuse:
    def __init__(self) -> None:
        self.scores: list[dict[str, Any]] = []
        self.script: list[tuple[int, dict[str, str]]] = []
        self.requests: list[dict[str, str]] = []
        self.authorized: list[bool] = []
        self.lock = threading.Lock()
        self.server = HttpServer("127.0.0.1", 0)
        self.server.route("GET", "/api/public/v3/scores", self.handle)
        self.url = f"http://127.0.0.1:{self.server.port}"

    def start(self) -> FakeLangfuse:
        self.server.start(poll_interval=0.05)
        return self

    def stop(self) -> None:
        self.server.stop()

    def handle(self, request: Request) -> Response:
        query = {k: v[-1] for k, v in parse_qs(request.query).items()}
        expected = "Basic " + base64.b64encode(f"{PUBLIC_KEY}:{SECRET_KEY}".encode()).decode()
        with self.lock:
            self.requests.append(query)
            self.authorized.append(request.headers.get("authorization") == expected)
            if not self.authorized[-1]:
                return Response.json({"message": "Invalid credentials"}, 401)
            if self.script:
                status, headers = self.script.pop(0)
                return Response.json({"message": "scripted"}, status, headers)
            return self.page(query)

    def page(self, query: dict[str, str]) -> Response:
        limit = int(query.get("limit", "50"))
        if not 1 <= limit <= 100:
            return Response.json({"message": "limit must be at most 100"}, 400)
        rows = sorted(self.scores, key=lambda s: (s["ts"], s["id"]), reverse=True)
        for key, field in (("name", "name"), ("environment", "environment"), ("source", "source")):
            if key in query:
                rows = [s for s in rows if s[field] in query[key].split(",")]
        if "fromTimestamp" in query:
            since = parse_timestamp(query["fromTimestamp"])
            rows = [s for s in rows if s["ts"] >= since - 1e-9]
        if "cursor" in query:
            last = json.loads(base64.urlsafe_b64decode(query["cursor"] + "=" * (-len(query["cursor"]) % 4)))
            rows = [s for s in rows if (s["ts"], s["id"]) < (last["lastTimestamp"], last["lastId"])]
        page, more = rows[:limit], len(rows) > limit
        meta: dict[str, Any] = {"limit": limit}
        if more:
            token = json.dumps({"lastTimestamp": page[-1]["ts"], "lastId": page[-1]["id"]}).encode()
            meta["cursor"] = base64.urlsafe_b64encode(token).decode().rstrip("=")
        fields = query.get("fields", "").split(",")
        return Response.json({"data": [self.v3(s, "subject" in fields) for s in page], "meta": meta})

    @staticmethod
    def v3(s: dict[str, Any], subject: bool) -> dict[str, Any]:
        out = {"id": s["id"], "projectId": "project-1", "name": s["name"], "dataType": s["dataType"],
               "value": s["value"], "source": s["source"], "timestamp": rfc3339(s["ts"]),
               "environment": s["environment"], "createdAt": rfc3339(s["ts"]), "updatedAt": rfc3339(s["ts"])}
        if subject:
            if s["observationId"]:
                out["subject"] = {"kind": "observation", "id": s["observationId"],
                                  **({"traceId": s["traceId"]} if s["traceId"] else {})}
            elif s["sessionId"]:
                out["subject"] = {"kind": "session", "id": s["sessionId"]}
            else:
                out["subject"] = {"kind": "trace", "id": s["traceId"]}
        return out
