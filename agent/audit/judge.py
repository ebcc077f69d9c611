"""An LLM judge behind any OpenAI-compatible Chat Completions endpoint (``{base_url}/chat/completions``).

The prompt is a template over the record: ``{input}``, ``{output}``, any dotted path into the
record (``{labels.segment}``), ``{id}``, and ``{record}`` for the whole record as JSON. ``{{`` and
``}}`` are literal braces; anything else in braces (a JSON example such as ``{"score": 4}``) is left
as written. The reply is a bare number, or JSON (an object read at ``reply_pointer``, or a number),
optionally in a Markdown code fence. A reply that is neither, or a number off the declared scale,
fails the audit for good and never becomes a score: asking again would pay again, usually for the
same answer. Tokens from ``usage`` are counted whatever the reply, since they are paid for.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

from agent.audit.producer import Outcome, Producer, Reply, as_number, excerpt
from agent.config import LlmJudgeConfig
from agent.core import lookup as get_path
from agent.core import resolve

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_.\-]*)\}")
_NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")
_FENCE = re.compile(r"^```[A-Za-z]*\s*(.*?)\s*```$", re.DOTALL)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def render_prompt(template: str, record: dict[str, Any]) -> str:
    """Fill the template from the record; a missing field renders as the empty string.

    >>> render_prompt('Q: {input} A: {output} ({labels.segment}) as {{"score": n}}',
    ...               {"input": "hi", "output": "hello", "labels": {"segment": "billing"}})
    'Q: hi A: hello (billing) as {"score": n}'
    >>> render_prompt('Reply with {"score": 1-5}', {})
    'Reply with {"score": 1-5}'
    """

    def fill(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        path = match.group(1)
        value = get_path(record, path)
        if value is None and path == "record":
            return _text(record)
        return _text(value)

    return _PLACEHOLDER.sub(fill, template)


def parse_score(text: str, pointer: str = "/score") -> float | None:
    """The judge's number: a bare number, or JSON (read at ``pointer`` when it is a container).

    >>> parse_score(" 4 ")
    4.0
    >>> parse_score('```json\\n{"score": 3.5, "why": "partly"}\\n```')
    3.5
    >>> parse_score("I would say 4") is None
    True
    """
    stripped = text.strip()
    fenced = _FENCE.match(stripped)
    if fenced:
        stripped = fenced.group(1).strip()
    if _NUMBER.fullmatch(stripped.rstrip(".")):
        return float(stripped.rstrip("."))
    try:
        doc = json.loads(stripped)
    except (ValueError, RecursionError):
        return None
    if isinstance(doc, dict | list):
        try:
            doc = resolve(doc, pointer)
        except LookupError:
            return None
        if isinstance(doc, str) and _NUMBER.fullmatch(doc.strip()):
            return float(doc)
    return None if isinstance(doc, bool) else as_number(doc)


def _content(message: Any) -> str | None:
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):  # content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return content if isinstance(content, str) else None


def _tokens(usage: Any, key: str) -> int:
    value = usage.get(key) if isinstance(usage, dict) else None
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


class LlmJudge(Producer):
    kind = "judge"

    def __init__(self, audit: str, config: LlmJudgeConfig, api_key: str | None) -> None:
        super().__init__(audit, config, api_key)
        self.config = config
        self.url = config.base_url.rstrip("/") + "/chat/completions"

    def build_request(self, record: dict[str, Any]) -> dict[str, Any]:
        c = self.config
        messages = [{"role": "user", "content": render_prompt(c.prompt, record)}]
        if c.system:
            messages.insert(0, {"role": "system", "content": render_prompt(c.system, record)})
        payload: dict[str, Any] = {"model": c.model, "messages": messages, "temperature": c.temperature}
        if c.max_tokens is not None:
            payload["max_tokens"] = c.max_tokens
        if c.json_mode:
            payload["response_format"] = {"type": "json_object"}
        return payload

    def request(self, body: dict[str, Any], key: str) -> Outcome:
        reply = self.post(self.url, self.build_request(body), key)
        if isinstance(reply, Outcome):
            return reply
        return self.interpret(reply)

    def interpret(self, reply: Reply) -> Outcome:
        """A 2xx Chat Completions reply to a score or a classified failure."""
        try:
            doc = json.loads(reply.body)
            message = doc["choices"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError, RecursionError):
            return Outcome(reason="bad_response", transient=True, status=reply.status, latency=reply.latency,
                           detail=excerpt(reply.body, self._api_key))
        usage = doc.get("usage") if isinstance(doc, dict) else None
        prompt_tokens, completion_tokens = _tokens(usage, "prompt_tokens"), _tokens(usage, "completion_tokens")
        c = self.config
        paid = Outcome(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, status=reply.status,
                       latency=reply.latency,
                       cost=(prompt_tokens * c.price_per_1k_prompt_tokens
                             + completion_tokens * c.price_per_1k_completion_tokens) / 1000.0)
        content = _content(message)
        score = parse_score(content, c.reply_pointer) if content is not None else None
        if score is None:
            return replace(paid, reason="unparseable", detail=excerpt(content or "", self._api_key))
        low, high = c.scale
        if not low <= score <= high:
            return replace(paid, reason="out_of_scale", detail=f"{score:g} is outside [{low:g}, {high:g}]")
        return replace(paid, score=score)
