"""``match``: 1 when a regular expression, or any of a list of keywords, occurs in a text, else 0.

Apologies, refusals, "anything else I can help with?": a rate of such phrases is a common proxy
(and a common thing to game). Keywords match as whole words or phrases; a ``regex`` is searched
anywhere in the text. Both are case-insensitive unless ``case_insensitive: false``.

Patterns run on the third-party ``regex`` engine (re-compatible syntax) because it takes a
``timeout``: Python's ``re`` cannot be interrupted, and a pattern with catastrophic backtracking
such as ``(a|aa)+$`` would otherwise hang the ingest step on one unlucky record. A timeout makes
that record's value fail with reason ``regex_timeout``; the stream goes on.

>>> from agent.config import MatchCompute
>>> sorry = build(MatchCompute(kind="match", field="output", keywords=["sorry", "I apologize"]))
>>> sorry({"output": "I apologize for the wait."}), sorry({"output": "Sorrynotsorry"})
(1.0, 0.0)
"""

from __future__ import annotations

from typing import Any

from agent.compute.base import BuildError, ComputeFailure, Computer, text_at
from agent.config import MatchCompute


def compile_pattern(regex: str | None, keywords: list[str] | None, case_insensitive: bool) -> Any:
    """The compiled pattern; ValueError with a readable reason when it does not compile."""
    try:
        import regex as engine
    except ImportError:  # pragma: no cover - a declared dependency
        raise ValueError("the match kind needs the 'regex' package (pip install regex)") from None
    if regex is None:
        if not keywords or not all(k.strip() for k in keywords):
            raise ValueError("keywords must be non-blank words or phrases")
        regex = "|".join(_whole(engine.escape(k.strip()), k.strip()) for k in keywords)
    flags = engine.IGNORECASE if case_insensitive else 0
    try:
        return engine.compile(regex, flags)
    except engine.error as err:
        raise ValueError(f"not a valid regular expression: {err}") from None


def _whole(escaped: str, keyword: str) -> str:
    """A keyword matched as a whole word or phrase: no word character may touch its word ends."""
    def word(c: str) -> bool:
        return c.isalnum() or c == "_"

    return (r"(?<!\w)" if word(keyword[0]) else "") + escaped + (r"(?!\w)" if word(keyword[-1]) else "")


class MatchComputer(Computer):
    reasons = ("missing_field", "not_text", "regex_timeout")

    def __init__(self, field: str, pattern: Any, timeout: float) -> None:
        self.field = field
        self.pattern = pattern
        self.timeout = timeout

    def __call__(self, record: dict[str, Any]) -> float:
        text = text_at(record, self.field)
        try:
            found = self.pattern.search(text, timeout=self.timeout)
        except TimeoutError:
            raise ComputeFailure("regex_timeout", self.field) from None
        return 1.0 if found is not None else 0.0


def build(spec: MatchCompute) -> MatchComputer:
    """Compile once at start; a pattern that does not compile is a :class:`BuildError` at its key."""
    try:
        pattern = compile_pattern(spec.regex, spec.keywords, spec.case_insensitive)
    except ValueError as err:
        raise BuildError("regex" if spec.regex is not None else "keywords", str(err)) from None
    return MatchComputer(spec.field, pattern, spec.timeout_seconds)
