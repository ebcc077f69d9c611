"""The bottom of the import graph: the few words every layer shares, and nothing else.

Pair keys, the whole-stream segment, field paths into records and replies, and timestamps. This
module imports nothing from the agent, so any module may import it without creating a cycle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

#: The segment value of a pair that covers the whole stream.
ALL = "*"
#: The segment that distinct values beyond ``segments.max_values`` are folded into.
OTHER_SEGMENT = "other"

#: One test of a proxy against an audit, in one segment (or ``ALL``): (proxy, audit, segment).
PairKey = tuple[str, str, str]


@dataclass(frozen=True)
class Ring:
    """A ring buffer in a detector's checkpoint state (``Detector.checkpoint_state``), which the store
    saves in chunks, only those written since the last checkpoint (agent/store/detectors.py).

    ``buf``: a float64 array (rows, size); ``pos``: the slot written next; ``count``: slots holding
    data (slots ``count..size-1`` are empty, zero, until the ring is full); ``written``: every slot
    write since the detector was built (monotone), from which the store knows which slots changed.
    The store copies what it writes at once, so ``buf`` may be the detector's own array.
    """

    buf: Any
    pos: int
    count: int
    written: int


def path_parts(path: str) -> list[str]:
    """The steps of a field path: a JSON Pointer (RFC 6901, starts with ``/``) or a dotted path.

    >>> path_parts("proxy.thumbs_up")
    ['proxy', 'thumbs_up']
    >>> path_parts("/attributes/gen_ai.usage.output_tokens")
    ['attributes', 'gen_ai.usage.output_tokens']
    >>> path_parts("/a~1b/c~0d")
    ['a/b', 'c~d']
    >>> path_parts("")
    []
    """
    if path == "":
        return []
    if path.startswith("/"):
        return [raw.replace("~1", "/").replace("~0", "~") for raw in path[1:].split("/")]
    return path.split(".")


def resolve(document: Any, path: str) -> Any:
    """Follow a field path through objects and arrays; :class:`LookupError` when a step is missing.

    Array steps are decimal indices (``/choices/0/message``, ``choices.0.message``).

    >>> resolve({"a": [{"b/c": 3}]}, "/a/0/b~1c")
    3
    >>> resolve({"a": {"b": 1}}, "a.b")
    1
    >>> resolve(4.5, "")
    4.5
    """
    node = document
    for token in path_parts(path):
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node) and (
                token == "0" or not token.startswith("0")):
            node = node[int(token)]
        else:
            raise LookupError(path)
    return node


def lookup(document: Any, path: str) -> Any:
    """Like :func:`resolve`, but None when the path does not exist (a record's optional field).

    >>> lookup({"proxy": {"thumbs_up": 1}}, "proxy.thumbs_up"), lookup({}, "proxy.thumbs_up")
    (1, None)
    """
    try:
        return resolve(document, path)
    except LookupError:
        return None


def parse_timestamp(value: Any) -> float:
    """Epoch seconds or an RFC 3339 string to epoch seconds; ValueError otherwise.

    >>> parse_timestamp("1970-01-01T00:01:00Z"), parse_timestamp(60)
    (60.0, 60.0)
    """
    if isinstance(value, bool):
        raise ValueError("boolean is not a timestamp")
    if isinstance(value, int | float):
        ts = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            raise ValueError("RFC 3339 timestamps need a UTC offset")
        ts = parsed.timestamp()
    else:
        raise ValueError("timestamp must be a number or a string")
    if not math.isfinite(ts) or ts < 0:
        raise ValueError("timestamp out of range")
    return ts
