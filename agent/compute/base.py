"""What every compute kind shares: the :class:`Computer` contract, its failures, field access.

A computation that fails on one record raises :class:`ComputeFailure` with a reason from
:data:`COMPUTE_REASONS`. The record parser then leaves that proxy out of that record and reports
the failure; the pipeline counts it in ``goodhart_metric_failures_total{proxy,reason}``. It never
rejects the record, let alone stops the stream.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from agent.core import lookup

#: Every reason a computation can fail for on one record.
COMPUTE_REASONS: tuple[str, ...] = (
    "missing_field",      # the field (or a timestamp) is absent or null
    "not_text",           # the field is not a string
    "bad_timestamp",      # a duration end is neither epoch seconds nor RFC 3339
    "negative_duration",  # the end comes before the start
    "regex_timeout",      # the pattern took longer than timeout_seconds on this text
    "model_error",        # the model raised, or returned something that is not a finite number
    "schema_error",       # the JSON Schema itself failed on this value (e.g. an unresolvable $ref)
)


class BuildError(ValueError):
    """A valid spec that still cannot be built (a regex that does not compile, an unreadable model);
    ``key`` is the spec key at fault, so the problem is reported at ``proxies.N.compute.<key>``."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class ComputeFailure(Exception):
    """This record's value could not be computed; ``reason`` is one of :data:`COMPUTE_REASONS`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class Computer(ABC):
    """Computes one proxy from a decoded record; built once from its config at start."""

    #: the reasons this kind can fail for (pre-declared at 0 in the failure counter)
    reasons: tuple[str, ...] = ("missing_field",)

    @abstractmethod
    def __call__(self, record: dict[str, Any]) -> float:
        """The proxy value for this record; raises :class:`ComputeFailure`."""

    def info(self) -> dict[str, str] | None:
        """Labels of an info series about what computes this proxy (a model's version), if any."""
        return None


def field_value(record: dict[str, Any], path: str) -> Any:
    """The value at a dotted path; a :class:`ComputeFailure` when it is absent or null."""
    value = lookup(record, path)
    if value is None:
        raise ComputeFailure("missing_field", path)
    return value


def text_at(record: dict[str, Any], path: str) -> str:
    """The string at a dotted path; ``missing_field`` or ``not_text`` otherwise."""
    value = field_value(record, path)
    if not isinstance(value, str):
        raise ComputeFailure("not_text", path)
    return value

