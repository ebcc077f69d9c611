"""Real HTTP servers on 127.0.0.1 for the audit tests: a Chat Completions judge and a grader.

The judge reads the output id from the prompt (``id=<id>``) and behaves by the id's prefix, so
one server plays every scenario: ``ok``/default (a bare number), ``json`` (a fenced JSON object),
``r429`` (429 with Retry-After once), ``e500`` (500 twice), ``echo`` (a 500 quoting the key,
once), ``slow`` (first reply after ``slow_seconds``), ``garbage`` (a non-JSON 200 once),
``words`` (prose: unparseable), ``big`` (9, off the 1-5 scale), ``down`` (always 503), ``delay``
(every reply after ``delay_seconds``).
It counts calls per id and the distinct Idempotency-Keys it was asked for, and answers 401 to a
wrong bearer key.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from typing import Any

from agent.http.server import HttpServer, Response

PROMPT_TOKENS = 20
COMPLETION_TOKENS = 2


def score_for(rid: str) -> int:
    """The judge's deterministic score for an id, 1..5."""
    return 1 + sum(rid.encode()) % 5


class _Base:
    """One POST route on the agent's own HTTP server; subclasses answer in :meth:`handle`."""

    path = "/"

    def __init__(self) -> None:
        self.server = HttpServer("127.0.0.1", 0)
        self.server.route("POST", self.path, lambda request: self.handle(request.headers, request.body))
        self.port = self.server.port
        self.lock = threading.Lock()

    def start(self) -> _Base:
        self.server.start(poll_interval=0.05)
        return self

    def stop(self) -> None:
        self.server.stop()

    def handle(self, headers: dict[str, str], body: bytes) -> Response:
        """``headers`` have lower-case names."""
        raise NotImplementedError


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(status, json.dumps(payload).encode(), "application/json", headers or {})


class FakeJudge(_Base):
    path = "/v1/chat/completions"

    def __init__(self, api_key: str | None = None, slow_seconds: float = 1.0, delay_seconds: float = 0.0) -> None:
        super().__init__()
        self.api_key = api_key
        self.slow_seconds = slow_seconds
        self.delay_seconds = delay_seconds
        self.calls: Counter[str] = Counter()
        self.replied: Counter[str] = Counter()
        self.keys_by_id: dict[str, set[str]] = {}
        self.requests: list[dict[str, Any]] = []
        self.unauthorized = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def in_flight(self) -> int:
        with self.lock:
            return sum(self.calls.values()) - sum(self.replied.values())

    def handle(self, headers: dict[str, str], body: bytes) -> Response:
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            with self.lock:
                self.unauthorized += 1
            return _json(401, {"error": {"message": "bad key"}})
        request = json.loads(body)
        prompt = request["messages"][-1]["content"]
        match = re.search(r"id=(\S+)", prompt)
        rid = match.group(1) if match else "?"
        with self.lock:
            self.calls[rid] += 1
            n = self.calls[rid]
            self.keys_by_id.setdefault(rid, set()).add(headers.get("idempotency-key", ""))
            self.requests.append(request)
        try:
            return self._answer(rid, n)
        finally:
            with self.lock:
                self.replied[rid] += 1

    def _answer(self, rid: str, n: int) -> Response:
        kind = rid.split("-", 1)[0]
        content = str(score_for(rid))
        if kind == "r429" and n == 1:
            return _json(429, {"error": "slow down"}, {"Retry-After": "7"})
        if kind == "e500" and n <= 2:
            return _json(500, {"error": "boom"})
        if kind == "down":
            return _json(503, {"error": "unavailable"})
        if kind == "echo" and n == 1:  # a careless server quoting the credentials it was sent
            return _json(500, {"error": {"message": f"upstream rejected Bearer {self.api_key}"}})
        if kind == "garbage" and n == 1:
            return Response(200, b"<html>bad gateway</html>", "text/html")
        if kind == "slow" and n == 1:
            time.sleep(self.slow_seconds)
        if kind == "delay":
            time.sleep(self.delay_seconds)
        if kind == "json":
            content = "```json\n" + json.dumps({"score": score_for(rid), "reason": "clear and correct"}) + "\n```"
        elif kind == "words":
            content = "I would rate this reply as quite good."
        elif kind == "big":
            content = "9"
        return _json(200, {
            "id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()), "model": "judge-test",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS,
                      "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS}})


class FakeGrader(_Base):
    """Grades ``record["output"]``: replies ``{"result": {"score": len(output) % 3}}``; ``nan-*`` ids get a string."""

    path = "/grade"

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/grade"

    def handle(self, headers: dict[str, str], body: bytes) -> Response:
        record = json.loads(body)
        rid = str(record.get("id"))
        with self.lock:
            self.calls[rid] += 1
        if rid.startswith("html-"):
            return Response(200, b"<html>oops</html>", "text/html")
        if rid.startswith("nan-"):
            return _json(200, {"result": {"score": "high"}})
        if rid.startswith("bool-"):
            return _json(200, {"result": {"score": True}})
        return _json(200, {"result": {"score": len(str(record.get("output", ""))) % 3}})
