"""An HTTP grader: POST the record as JSON, read the score at a JSON pointer in the reply.

For checks that are code rather than a model: a unit-test runner, a policy checker, a retrieval
verifier. The reply must be JSON; the value at ``pointer`` must be a finite number (``true`` and
``false`` count as 1 and 0). A reply that is not JSON is a transient ``bad_response`` (a proxy's
error page, most likely); JSON without a number there fails the audit for good (``unparseable``).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from agent.audit.producer import Outcome, Producer, Reply, as_number, excerpt
from agent.config import HttpGraderConfig
from agent.core import resolve


class HttpGrader(Producer):
    kind = "grader"

    def __init__(self, audit: str, config: HttpGraderConfig, api_key: str | None) -> None:
        super().__init__(audit, config, api_key)
        self.config = config

    def request(self, body: dict[str, Any], key: str) -> Outcome:
        reply = self.post(self.config.url, body, key)
        if isinstance(reply, Outcome):
            return reply
        return self.interpret(reply)

    def interpret(self, reply: Reply) -> Outcome:
        try:
            doc = json.loads(reply.body)
        except (ValueError, RecursionError):
            return Outcome(reason="bad_response", transient=True, status=reply.status, latency=reply.latency,
                           detail=excerpt(reply.body, self._api_key))
        try:
            score = as_number(resolve(doc, self.config.pointer))
        except LookupError:
            score = None
        paid = Outcome(status=reply.status, latency=reply.latency, cost=self.config.price_per_request)
        if score is None:
            return replace(paid, reason="unparseable", detail=excerpt(reply.body, self._api_key))
        return replace(paid, score=score)
