"""Langfuse scores as late labels: the ``http_pull`` source with ``flavour: langfuse``.

It reads Langfuse's public Scores API v3 (``GET /api/public/v3/scores``, Basic auth with the
project's public key as user and secret key as password), as documented at
https://langfuse.com/docs/api-and-data-platform/features/scores-api and in Langfuse's API
definition (``fern/apis/server/definition/scores-v3.yml``): a reply ``{"data": [score, ...],
"meta": {"limit": N, "cursor": "..."}}`` whose opaque ``meta.cursor`` is absent on the last page;
pages run from the newest score to the oldest (``timestamp`` then ``id``, descending); filters
``name``, ``environment`` and ``source`` take comma-separated lists, ``fromTimestamp`` is inclusive,
``limit`` is at most 100; ``fields=subject`` adds ``subject: {kind, id, traceId?}`` (kind ``trace``,
``observation``, ``session`` or ``experiment``); ``value`` is a number (``NUMERIC``), a boolean
(``BOOLEAN``) or a string (``CATEGORICAL``, ``TEXT``, ``CORRECTION``).

Because pages run backwards in time, polling goes in *sweeps*: a sweep asks for every score at or
after ``watermark - lookback_seconds`` and follows ``meta.cursor`` to its end; the newest score
timestamp it saw becomes the next watermark. The overlap catches scores that reach the API late;
scores already read are skipped by their id. The sweep's state (watermark, ``fromTimestamp``, the
page cursor, the newest timestamp so far) is the source's offset, stored with each page's labels, so
a restart resumes mid-sweep.

Each numeric or boolean score becomes one label record::

    {<id_field>: <trace id or observation id>, <ts_field>: <score timestamp>,
     "scores": {<score name>: <value>}, "langfuse": {"score_id": ..., "source": ..., "data_type": ...}}

so an audit reads it with ``field: /scores/<score name>`` (or ``scores.<name>`` for names without
dots). Other scores are counted by reason in ``goodhart_langfuse_scores_skipped_total`` and skipped.
"""

from __future__ import annotations

import base64
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from prometheus_client.core import CounterMetricFamily, Metric

from agent.config import Config, ConfigError, LangfuseConfig, SourceConfig
from agent.core import parse_timestamp, path_parts
from agent.http.secrets import env_or_file
from agent.sources.http_pull import HttpPullSource, Page, PullError

SCORES_PATH = "/api/public/v3/scores"
#: why a score read from Langfuse did not become a label; declared at zero
SKIP_REASONS = (
    "categorical",  # a CATEGORICAL score: a category is not a number an audit can compare
    "text",         # a TEXT or CORRECTION score
    "no_join_id",   # no trace (or observation) id to join on: a session or experiment score, say
    "other_name",   # a name not asked for (the server filters by name; this is a second guard)
    "bad_score",    # not an object, or without a name, a timestamp or a usable value
)
_TEXT_TYPES = ("TEXT", "CORRECTION")


def scores_url(base: str) -> str:
    """The scores endpoint under a Langfuse base URL (given whole, it is kept).

    >>> scores_url("https://cloud.langfuse.com/"), scores_url("http://h:3000/api/public/v3/scores")
    ('https://cloud.langfuse.com/api/public/v3/scores', 'http://h:3000/api/public/v3/scores')
    """
    base = base.rstrip("/")
    return base if base.endswith(SCORES_PATH) else base + SCORES_PATH


def iso(ts: float) -> str:
    """Epoch seconds as the ISO 8601 UTC text Langfuse's timestamp filters take.

    >>> iso(1790000123.25)
    '2026-09-21T14:15:23.250Z'
    """
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class LangfuseScoresSource(HttpPullSource):
    name = "langfuse"

    def __init__(self, settings: SourceConfig, max_record_bytes: int, offset: dict[str, Any] | None = None,
                 *, id_field: str = "id", ts_field: str = "ts", wall: Callable[[], float] = time.time,
                 **kwargs: Any) -> None:
        """``wall`` (epoch seconds) only places the very first sweep; ``id_field``/``ts_field`` are the config's."""
        if settings.langfuse is None:
            raise ConfigError(["source.langfuse: required when flavour is langfuse"])
        super().__init__(settings.model_copy(update={"url": scores_url(settings.url or "")}), max_record_bytes,
                         offset, **kwargs)
        self.lf: LangfuseConfig = settings.langfuse
        self.id_field, self.ts_field = id_field, ts_field
        self.wall = wall
        if not isinstance(self.cursor, dict):  # nothing stored yet: the first sweep
            self.cursor = {"watermark": None, "from": None, "page": None, "newest": None}
        self.skipped: dict[str, int] = dict.fromkeys(SKIP_REASONS, 0)
        self.read_ids: OrderedDict[str, None] = OrderedDict()

    @classmethod
    def from_config(cls, config: Config, offset: dict[str, Any] | None, settings: SourceConfig | None = None,
                    key: str = "source") -> LangfuseScoresSource:
        s = settings or config.source
        if s is None or s.langfuse is None:
            raise ConfigError([f"{key}.langfuse: required when flavour is langfuse"])
        lf, where = s.langfuse, f"{key}.langfuse"
        user = env_or_file(where, "public_key_env", lf.public_key_env, "public_key_file", lf.public_key_file)
        password = env_or_file(where, "secret_key_env", lf.secret_key_env, "secret_key_file", lf.secret_key_file)
        basic = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        headers = {**s.headers, "Authorization": f"Basic {basic}", "Accept": "application/json"}
        return cls(s, config.limits.max_record_bytes, offset, id_field=config.id_field, ts_field=config.ts_field,
                   headers=headers)

    # -- the sweep --------------------------------------------------------------------------------------
    def _query(self, cursor: Any) -> dict[str, str]:
        state = dict(cursor)
        if state["page"] is None:  # a new sweep: fix its lower bound now, kept for all its pages
            state["from"] = self._sweep_from(state["watermark"])
            self.cursor = state
        params = {**self.settings.params, "name": ",".join(self.lf.scores), "limit": str(self.lf.page_size),
                  "fields": "subject"}
        if self.lf.environments:
            params["environment"] = ",".join(self.lf.environments)
        if self.lf.score_sources:
            params["source"] = ",".join(self.lf.score_sources)
        if state["from"] is not None:
            params["fromTimestamp"] = iso(state["from"])
        if state["page"] is not None:
            params["cursor"] = state["page"]
        return params

    def _sweep_from(self, watermark: float | None) -> float | None:
        if watermark is not None:
            return max(0.0, watermark - self.lf.lookback_seconds)
        if self.lf.initial_lookback_seconds is None:
            return None
        return max(0.0, self.wall() - self.lf.initial_lookback_seconds)

    def _advance(self, sent: Any, page: Page) -> tuple[dict[str, Any] | None, bool]:
        state = dict(self.cursor)  # ``sent`` plus the sweep's lower bound fixed by _query
        newest = page.cursor.get("newest") if isinstance(page.cursor, dict) else None
        if newest is not None:
            state["newest"] = max(newest, state["newest"] or newest)
        nxt = page.cursor.get("page") if isinstance(page.cursor, dict) else None
        if nxt is not None and nxt != sent["page"]:
            return {"cursor": {**state, "page": nxt}}, True
        done = {"watermark": max(state["newest"], state["watermark"] or state["newest"])
                if state["newest"] is not None else state["watermark"], "from": None, "page": None, "newest": None}
        return {"cursor": done}, False

    # -- one page ---------------------------------------------------------------------------------------
    def _decode(self, body: bytes, content_type: str) -> Page:
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):  # not UTF-8, not JSON, or an integer over 4,300 digits
            raise PullError("bad_body", "reply is not JSON") from None
        data = doc.get("data") if isinstance(doc, dict) else None
        meta = doc.get("meta") if isinstance(doc, dict) else None
        if not isinstance(data, list) or not isinstance(meta, dict):
            raise PullError("bad_body", "reply has no data list and meta object")
        cursor = meta.get("cursor")
        page = Page(cursor={"page": cursor if isinstance(cursor, str) and cursor else None, "newest": None})
        for score in data:
            label, ts = self._label(score)
            if ts is not None:
                page.cursor["newest"] = max(ts, page.cursor["newest"] or ts)
            if label is not None:
                page.items.append(label)
        return page

    def _label(self, score: Any) -> tuple[dict[str, Any] | None, float | None]:
        """The label record a score makes, or None (counted) when it makes none; and its timestamp."""
        if not isinstance(score, dict) or not isinstance(score.get("name"), str):
            return self._skip("bad_score"), None
        try:
            ts = parse_timestamp(score.get("timestamp"))
        except (ValueError, OverflowError):
            return self._skip("bad_score"), None
        sid = score.get("id")
        if isinstance(sid, str):
            if sid in self.read_ids:
                return None, ts  # re-read by the sweep's overlap: delivered (or counted) before
            self._remember(sid)
        reason = self._unusable(score)
        rid = self._join_id(score) if reason is None else None
        if reason is not None or rid is None:
            return self._skip(reason or "no_join_id"), ts
        label: dict[str, Any] = {"scores": {score["name"]: score["value"]},
                                 "langfuse": {"score_id": sid, "source": score.get("source"),
                                              "data_type": score.get("dataType")}}
        _put(label, self.id_field, rid)
        _put(label, self.ts_field, score["timestamp"])
        return label, ts

    def _unusable(self, score: dict[str, Any]) -> str | None:
        if score["name"] not in self.lf.scores:
            return "other_name"
        kind, value = score.get("dataType"), score.get("value")
        if kind == "CATEGORICAL":
            return "categorical"
        if kind in _TEXT_TYPES:
            return "text"
        if isinstance(value, bool) or (isinstance(value, int | float) and kind != "BOOLEAN"):
            return None
        return "bad_score"

    def _join_id(self, score: dict[str, Any]) -> str | None:
        found_subject = score.get("subject")
        subject: dict[str, Any] = found_subject if isinstance(found_subject, dict) else {}
        kind = subject.get("kind")
        if self.lf.join_on == "observation":
            found = subject.get("id") if kind == "observation" else score.get("observationId")
        elif kind == "trace":
            found = subject.get("id")
        else:  # an observation's score belongs to its trace; v2-style replies carry traceId at the top
            found = subject.get("traceId") or score.get("traceId")
        return found if isinstance(found, str) and found else None

    def _skip(self, reason: str) -> dict[str, Any] | None:
        """Count a score that makes no label; None, the label it does not make."""
        self.skipped[reason] += 1
        return None

    def _remember(self, sid: str) -> None:
        self.read_ids[sid] = None
        if len(self.read_ids) > self.lf.score_ids_remembered:
            self.read_ids.popitem(last=False)

    def collect(self) -> Iterator[Metric]:
        metric = CounterMetricFamily("goodhart_langfuse_scores_skipped",
                                     "Langfuse scores read but not made into labels, by reason.",
                                     labels=["source", "reason"])
        for reason, count in sorted(self.skipped.items()):
            metric.add_metric([self.name, reason], float(count))
        yield metric


def _put(document: dict[str, Any], path: str, value: Any) -> None:
    """Set ``value`` at a field path (dotted or JSON Pointer), creating the objects on the way."""
    *parents, last = path_parts(path)
    node = document
    for step in parents:
        node = node.setdefault(step, {})
    node[last] = value
