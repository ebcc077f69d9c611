"""One record: decode, validate, and pull out its id, time, segment, proxies and audits.

A record is one JSON object (a line of a JSONL file, or an item of a pushed array). Which fields
hold proxies, audits and the segment is set by dotted paths in the config. Anything wrong with a
record becomes a :class:`Rejection` carrying a reason from :data:`REJECT_REASONS`; the caller
counts it and moves on, so one bad line never stops a stream.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from math import isfinite
from typing import Any, NamedTuple

from agent.compute import ComputeFailure, Computer, build_computers
from agent.config import Config
from agent.core import lookup, parse_timestamp, path_parts

log = logging.getLogger(__name__)

MAX_ID_LENGTH = 256
#: 2000-01-01T00:00:00Z: no AI output of interest is older; earlier stamps are unit or field mistakes
EARLIEST_TS = 946_684_800.0
#: Where a forwarder writes the computed proxies it computed (``{"_goodhart": {"computed": {name: value}}}``),
#: so the gateway uses them instead of computing again (docs/fleet.md).
FORWARDED_KEY = "_goodhart"
COMPUTED_KEY = "computed"
MAX_SEGMENT_LENGTH = 128

#: Every reason a record can be rejected for; the exporter pre-declares them all at zero.
REJECT_REASONS: tuple[str, ...] = (
    "not_json",       # not decodable as UTF-8 JSON (or an integer literal over 4,300 digits)
    "not_object",     # JSON, but not an object
    "too_large",      # above limits.max_record_bytes
    "no_id",          # id missing or empty
    "bad_id",         # id not a string, longer than 256 characters, or with a lone surrogate
    "bad_timestamp",  # ts neither epoch seconds nor RFC 3339, before 2000 or past limits.max_future_seconds
    "bad_metric",     # a proxy or audit value that is not a finite number (10**400 included)
    "bad_segment",    # segment value not a string or number, too long, or with a lone surrogate
    "no_metrics",     # neither a proxy nor an audit value present
    "duplicate",      # an output with an id already seen (harmless re-delivery)
    "unstorable",     # valid, yet the store refused it (isolated so the rest of its batch goes on)
)


@dataclass(frozen=True)
class Rejection:
    reason: str
    detail: str = ""
    problems: tuple[tuple[str, str], ...] = ()  # (proxy, reason): computed proxies that failed


class Record(NamedTuple):
    """A validated record. ``ts`` is None when the record carried none (the caller uses now).

    A named tuple (immutable, and made at a fraction of a frozen dataclass's cost: ingest makes one
    per line); ``body`` is the decoded object it was read from."""

    id: str
    ts: float | None
    segment: str | None
    proxies: dict[str, float]
    audits: dict[str, float]
    body: dict[str, Any]
    #: (proxy, reason) for each computed proxy that failed on this record and is left out of it
    problems: tuple[tuple[str, str], ...] = ()

    @property
    def is_output(self) -> bool:
        """An output carries proxies; a record with only audits is a (late) label."""
        return bool(self.proxies)


def _metric(value: Any) -> float | None:
    """A metric value as float; None when absent; ValueError when not a finite number."""
    if value is None:
        return None
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # an integer beyond float range, e.g. 10**400
            raise ValueError("not a finite number") from None
        if math.isfinite(number):
            return number
    raise ValueError("not a finite number")


def _is_text(value: str) -> bool:
    """Whether a string can be stored: JSON allows lone surrogates (``"\\ud800"``), UTF-8 does not."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


Getter = Callable[[Any], Any]
#: a configured metric: its name, the getter of its field, and its key in :attr:`FieldPresence.absent`
MetricField = tuple[str, Getter, tuple[str, str]]
_ABSENT = object()


def field_getter(path: str) -> Getter:
    """:func:`agent.core.lookup` for one path, with the path split once: walks objects directly and
    hands anything with an array on the way to ``lookup`` (same answers, a fraction of the cost)."""
    parts = path_parts(path)
    if len(parts) == 1:
        first = parts[0]
        return lambda obj: obj.get(first) if isinstance(obj, dict) else lookup(obj, path)
    if len(parts) == 2:
        first, second = parts

        def get_two(obj: Any) -> Any:
            node = obj.get(first) if isinstance(obj, dict) else lookup(obj, first)
            if isinstance(node, dict):
                return node.get(second)
            return lookup(obj, path) if isinstance(node, list) else None

        return get_two

    def get(obj: Any) -> Any:
        node = obj
        for token in parts:
            if isinstance(node, dict):
                node = node.get(token, _ABSENT)
                if node is _ABSENT:
                    return None
            elif isinstance(node, list):
                return lookup(obj, path)
            else:
                return None
        return node

    return get


_DECODER = json.JSONDecoder()
_DECODE = _DECODER.decode
_SCAN: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]


def decode_line(raw: bytes) -> Any:
    """``json.loads(raw)``, skipping its encoding detection for the usual line: an ASCII first byte
    and a second that is not NUL rule out every BOM, UTF-16 and UTF-32 (``json.detect_encoding``).
    A line that is one object from its first byte to its last is scanned directly (``decode`` would
    first look for whitespace at both ends); anything else takes ``decode``'s own way."""
    if len(raw) > 1 and 0 < raw[0] < 0x80 and raw[1]:
        text = raw.decode("utf-8", "surrogatepass")
        if raw[0] == 0x7B:  # "{"
            obj, end = _SCAN(text, 0)  # a malformed object raises JSONDecodeError, as decode does
            if end == len(text):
                return obj
        return _DECODE(text)
    return json.loads(raw)


#: records after which a configured field that was never present is logged (once)
FIELD_CHECK_RECORDS = 1000


class FieldPresence:
    """How often each configured field path is absent, over the records that have an id.

    A field absent from every one of the first :data:`FIELD_CHECK_RECORDS` records is logged once
    with its key path: a typo in a ``field:`` path must not leave a pair warming up forever in
    silence. (An audit field may legitimately be rare, audited outputs being a sample; never once
    in a thousand records is still worth a line.)
    """

    def __init__(self, fields: list[tuple[str, str, str]], check_after: int = FIELD_CHECK_RECORDS) -> None:
        self.fields = fields  # (kind, name, key path of the setting)
        self.records = 0
        self.absent: dict[tuple[str, str], int] = {(kind, name): 0 for kind, name, _ in fields}
        self.check_after = check_after

    def count(self, kind: str, name: str) -> None:
        self.absent[(kind, name)] += 1

    def record_done(self) -> None:
        self.records += 1
        if self.records == self.check_after:
            self.check()

    def check(self) -> None:
        """Log each field absent from every record so far (once, after :attr:`check_after` records)."""
        for kind, name, key in self.fields:
            if self.absent[(kind, name)] == self.records:
                log.warning("configured field absent from every record so far: check its path",
                            extra={"fields": {"key": key, "records": self.records, kind: name}})


def _forwarded_values(obj: dict[str, Any]) -> dict[str, float]:
    """The computed proxies a forwarder wrote into the record; values that are not finite numbers are ignored
    (the proxy is then computed here)."""
    section = obj.get(FORWARDED_KEY)
    computed = section.get(COMPUTED_KEY) if isinstance(section, dict) else None
    if not isinstance(computed, dict):
        return {}
    values = {}
    for name, value in computed.items():
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            values[str(name)] = float(value)
    return values


class RecordParser:
    """Turns raw bytes or decoded objects into :class:`Record` or :class:`Rejection`.

    Builds the config's computed proxies unless ``computers`` (already built, e.g. by
    ``agent.compute.load_and_build``) are given; raises ``ConfigError`` when one cannot be built.
    A computed proxy whose value a forwarder already wrote into the record (:data:`FORWARDED_KEY`)
    takes that value: the work is done once, on the pod that read the record.
    """

    def __init__(self, config: Config, computers: Mapping[str, Computer] | None = None) -> None:
        self.config = config
        self.max_bytes = config.limits.max_record_bytes
        self.max_future = config.limits.max_future_seconds
        self._proxies = [(p.name, field_getter(p.field), ("proxy", p.name))
                         for p in config.proxies if p.field is not None]
        self.computers = dict(computers) if computers is not None else build_computers(config)
        self._audits = [(a.name, field_getter(a.field), ("audit", a.name))
                        for a in config.audits if a.field is not None]
        self._segment_field = config.segments.field if config.segments else None
        self._latest = 0.0  # see _latest_now
        self._id = field_getter(config.id_field)
        self._ts = field_getter(config.ts_field)
        self._segment = field_getter(self._segment_field) if self._segment_field is not None else None
        self.presence = FieldPresence(
            [("proxy", p.name, f"proxies.{i}.field: {p.field}") for i, p in enumerate(config.proxies) if p.field]
            + [("audit", a.name, f"audits.{i}.field: {a.field}") for i, a in enumerate(config.audits) if a.field]
            + ([("segment", "segment", f"segments.field: {self._segment_field}")] if self._segment_field else []))

    def _latest_now(self) -> float:
        """The latest plausible timestamp now; kept, since a stamp before an earlier bound is before
        today's too (only a stamp beyond the kept bound reads the clock again)."""
        self._latest = time.time() + self.max_future
        return self._latest

    def parse_line(self, line: bytes | str) -> Record | Rejection:
        raw = line.encode("utf-8", "surrogatepass") if isinstance(line, str) else line
        if len(raw) > self.max_bytes:
            return Rejection("too_large", f"{len(raw)} bytes")
        try:
            obj = decode_line(raw)
        except (ValueError, RecursionError):  # not UTF-8, not JSON, or an integer over 4,300 digits
            return Rejection("not_json")
        return self.parse_object(obj)

    def parse_decoded(self, obj: Any) -> Record | Rejection:
        """An item already decoded (an element of a pushed array, a pulled page): the same size limit."""
        size = len(json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass"))
        if size > self.max_bytes:
            return Rejection("too_large", f"{size} bytes")
        return self.parse_object(obj)

    def parse_object(self, obj: Any) -> Record | Rejection:
        if not isinstance(obj, dict):
            return Rejection("not_object")
        rid = self._id(obj)
        if rid is None or rid == "":
            return Rejection("no_id")
        if not isinstance(rid, str) or len(rid) > MAX_ID_LENGTH or not _is_text(rid):
            return Rejection("bad_id")
        try:
            return self._parse_fields(obj, rid)
        finally:
            presence = self.presence
            presence.records += 1
            if presence.records == presence.check_after:
                presence.check()

    def _parse_fields(self, obj: dict[str, Any], rid: str) -> Record | Rejection:
        ts_value = self._ts(obj)
        ts: float | None = None
        if type(ts_value) is float and EARLIEST_TS <= ts_value <= self._latest:
            ts = ts_value  # the usual case: what parse_timestamp would return, in the window
        elif ts_value is not None:
            try:
                ts = parse_timestamp(ts_value)
            except (ValueError, OverflowError) as err:
                return Rejection("bad_timestamp", str(err))
            if not EARLIEST_TS <= ts <= self._latest and not EARLIEST_TS <= ts <= self._latest_now():
                return Rejection("bad_timestamp", "outside the plausible window")
        segment = None
        if self._segment is not None:
            seg_value = self._segment(obj)
            if type(seg_value) is str and 0 < len(seg_value) <= MAX_SEGMENT_LENGTH and seg_value.isascii():
                segment = seg_value  # the usual case: a short ASCII string
            elif seg_value is None:
                self.presence.count("segment", "segment")
            else:
                if isinstance(seg_value, bool) or not isinstance(seg_value, str | int | float):
                    return Rejection("bad_segment")
                segment = str(seg_value)
                if not segment or len(segment) > MAX_SEGMENT_LENGTH or not _is_text(segment):
                    return Rejection("bad_segment")
        proxies = self._metrics(obj, self._proxies)
        if isinstance(proxies, str):
            return Rejection("bad_metric", proxies)
        audits = self._metrics(obj, self._audits)
        if isinstance(audits, str):
            return Rejection("bad_metric", audits)
        problems = self._compute(obj, proxies) if self.computers else ()
        if not proxies and not audits:
            return Rejection("no_metrics", problems=problems)
        return Record(rid, ts, segment, proxies, audits, obj, problems)

    def _metrics(self, obj: dict[str, Any], fields: list[MetricField]) -> dict[str, float] | str:
        """The values of ``fields`` present in ``obj``, absent ones counted; the name of the first
        that is not a finite number instead (the record is rejected)."""
        values: dict[str, float] = {}
        absent = self.presence.absent
        for name, get, key in fields:
            value = get(obj)
            if type(value) is float:  # the usual cases first
                if not isfinite(value):
                    return name
            elif value is None:
                absent[key] += 1
                continue
            else:
                try:
                    value = _metric(value)
                except ValueError:
                    return name
                assert value is not None
            values[name] = value
        return values

    def _compute(self, obj: dict[str, Any], proxies: dict[str, float]) -> tuple[tuple[str, str], ...]:
        """Add the computed proxies; a failure leaves that proxy out and is reported, never raised.

        A record without any proxy is a (late) label, which has no output text or timestamps to
        compute from: its ``missing_field`` failures are expected and not reported.
        """
        problems: list[tuple[str, str]] = []
        forwarded = _forwarded_values(obj) if self.computers else {}
        for name, compute in self.computers.items():
            if name in forwarded:  # computed by the forwarder that sent this record
                proxies[name] = forwarded[name]
                continue
            try:
                proxies[name] = compute(obj)
            except ComputeFailure as failure:
                problems.append((name, failure.reason))
        if not proxies:
            problems = [p for p in problems if p[1] != "missing_field"]
        return tuple(problems)
