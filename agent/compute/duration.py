"""``duration``: seconds between two timestamps of the record (opened → closed, asked → answered).

Timestamps are epoch seconds or RFC 3339 strings with an offset, as the record's own ``ts``.

>>> from agent.config import DurationCompute
>>> seconds = build(DurationCompute(kind="duration", start="opened_at", end="closed_at"))
>>> seconds({"opened_at": "2026-01-05T10:00:00Z", "closed_at": "2026-01-05T10:02:30Z"})
150.0
"""

from __future__ import annotations

from typing import Any

from agent.compute.base import ComputeFailure, Computer, field_value
from agent.config import DurationCompute
from agent.core import parse_timestamp


class DurationComputer(Computer):
    reasons = ("missing_field", "bad_timestamp", "negative_duration")

    def __init__(self, start: str, end: str) -> None:
        self.start = start
        self.end = end

    def _time(self, record: dict[str, Any], path: str) -> float:
        try:
            return parse_timestamp(field_value(record, path))
        except (ValueError, OverflowError) as err:
            raise ComputeFailure("bad_timestamp", path) from err

    def __call__(self, record: dict[str, Any]) -> float:
        seconds = self._time(record, self.end) - self._time(record, self.start)
        if seconds < 0:
            raise ComputeFailure("negative_duration")
        return seconds


def build(spec: DurationCompute) -> DurationComputer:
    """Never fails: timestamps are checked per record."""
    return DurationComputer(spec.start, spec.end)
