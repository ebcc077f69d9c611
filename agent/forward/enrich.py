"""What a forwarder adds to a record before buffering it: the pod's identity, the computed proxies
and, when the record has none, the time it was read.

- identity: each ``forward.labels_from_env`` label whose variable is set goes into the record's
  ``labels`` object, unless the record already has that label (the app knows better);
- computed proxies: their values go under ``_goodhart.computed`` (``agent.records.FORWARDED_KEY``),
  which the gateway's parser takes instead of computing again;
- time: a record without ``ts`` means "now when ingested live", and the forwarder is where it is
  ingested live; the gateway may see it minutes later, after an outage.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from agent.config import Config
from agent.core import path_parts
from agent.records import COMPUTED_KEY, FORWARDED_KEY, Record

LABELS_KEY = "labels"


def identity_from_env(labels_from_env: Mapping[str, str], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The labels whose variables are set and not empty (outside Kubernetes there may be none).

    >>> identity_from_env({"pod": "POD_NAME", "namespace": "POD_NAMESPACE"}, {"POD_NAME": "bot-7f9c"})
    {'pod': 'bot-7f9c'}
    """
    env = os.environ if environ is None else environ
    return {label: env[var].strip() for label, var in labels_from_env.items() if env.get(var, "").strip()}


def assign(document: dict[str, Any], path: str, value: Any) -> bool:
    """Set ``value`` at a field path through objects, creating missing ones; False when a step is not an object.

    >>> doc = {"a": 1}
    >>> assign(doc, "meta.ts", 5.0), doc
    (True, {'a': 1, 'meta': {'ts': 5.0}})
    >>> assign(doc, "a.b", 1)
    False
    """
    parts = path_parts(path)
    node: Any = document
    for part in parts[:-1]:
        child = node.setdefault(part, {}) if isinstance(node, dict) else None
        if not isinstance(child, dict):
            return False
        node = child
    if not parts or not isinstance(node, dict):
        return False
    node[parts[-1]] = value
    return True


class Enricher:
    """Turns a validated record into the bytes a forwarder buffers and sends."""

    def __init__(self, config: Config, computed: list[str], identity: dict[str, str]) -> None:
        self.ts_field = config.ts_field
        self.computed = computed
        self.identity = identity

    def encode(self, record: Record, now: float) -> bytes:
        body = dict(record.body)
        if self.identity:
            labels = body.get(LABELS_KEY)
            if labels is None:
                body[LABELS_KEY] = dict(self.identity)
            elif isinstance(labels, dict):
                body[LABELS_KEY] = {**self.identity, **labels}  # the record's own labels win
        values = {name: record.proxies[name] for name in self.computed if name in record.proxies}
        if values:
            section = body.get(FORWARDED_KEY)
            section = dict(section) if isinstance(section, dict) else {}
            section[COMPUTED_KEY] = values
            body[FORWARDED_KEY] = section
        if record.ts is None:
            assign(body, self.ts_field, now)
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")
