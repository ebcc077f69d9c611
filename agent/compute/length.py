"""``length``: how long a text is, in characters, words or approximate tokens.

The most famous Goodhart proxy: reward models and LLM judges prefer longer answers, so a length
that keeps growing while the audit stays flat is the classic verbosity hack.

>>> from agent.config import LengthCompute
>>> count = build(LengthCompute(kind="length", field="output", unit="words"))
>>> count({"output": "Happy to help: restart the router."})
6.0
>>> approximate_tokens("Please restart your router, then try again.")
9
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from agent.compute.base import Computer, text_at
from agent.config import LengthCompute

_PIECES = re.compile(r"[^\W_]+|[^\w\s]|_", re.UNICODE)
_WORD_PIECE = 8  # characters per sub-word piece: common English words up to this length are one BPE token


def approximate_tokens(text: str) -> int:
    """A tokenizer-free token count: one per punctuation mark, one per word plus one per further
    eight characters. Not any model's tokenizer; monotone in length, which is what a proxy needs."""
    return sum(1 + (len(p) - 1) // _WORD_PIECE for p in _PIECES.findall(text))


_UNITS: dict[str, Callable[[str], int]] = {
    "chars": len,
    "words": lambda text: len(text.split()),
    "tokens": approximate_tokens,
}


class LengthComputer(Computer):
    reasons = ("missing_field", "not_text")

    def __init__(self, field: str, unit: str) -> None:
        self.field = field
        self.measure = _UNITS[unit]

    def __call__(self, record: dict[str, Any]) -> float:
        return float(self.measure(text_at(record, self.field)))


def build(spec: LengthCompute) -> LengthComputer:
    """Never fails: a valid spec is all a length needs."""
    return LengthComputer(spec.field, spec.unit)
