"""The content types the agent reads and writes, named once for the push and pull sources."""

from __future__ import annotations

#: JSON bodies: one object, or an array of objects
JSON_TYPES = frozenset({"application/json"})
#: newline-delimited JSON (one record per line) under the names found in the wild
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl",
                          "application/x-jsonlines"})


def media_type(content_type: str) -> str:
    """The media type without parameters, lower case, so it can be looked up in the sets above.

    >>> media_type("Application/JSON; charset=utf-8")
    'application/json'
    """
    return content_type.split(";", 1)[0].strip().lower()
