"""``check-config --sample``: how often each configured field path is present in a real log.

A config can be valid and still read nothing: a misspelled ``field:`` path is absent from every
record, and the pair it feeds warms up forever. Reading the first records of a real JSONL log and
counting, per configured path, how often it is present (and, for proxies and audits, a finite
number) shows such a path at 0% before the daemon runs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from agent.config import Config
from agent.core import lookup

DEFAULT_SAMPLE_RECORDS = 1000


@dataclass
class FieldCount:
    key: str  # the setting's key path, e.g. proxies.0.field
    path: str  # the field path it names
    metric: bool  # a proxy or audit value: also counted when it is a finite number
    present: int = 0
    numeric: int = 0


@dataclass
class SampleReport:
    fields: list[FieldCount]
    records: int = 0  # JSON objects read
    unusable: int = 0  # lines that are not JSON objects

    def lines(self) -> Iterator[str]:
        yield f"sample: {self.records} records ({self.unusable} other lines skipped)"
        yield f"  {'present':>8} {'numeric':>8}  key: path"
        for f in self.fields:
            numeric = _percent(f.numeric, self.records) if f.metric else ""
            flag = "  <- never present" if self.records and not f.present else ""
            yield f"  {_percent(f.present, self.records):>8} {numeric:>8}  {f.key}: {f.path}{flag}"


def _percent(count: int, total: int) -> str:
    return f"{100.0 * count / total:.1f}%" if total else "-"


def configured_fields(config: Config) -> list[FieldCount]:
    """Every field path the config reads from a record, with the key that names it."""
    fields = [FieldCount("id_field", config.id_field, False), FieldCount("ts_field", config.ts_field, False)]
    for i, proxy in enumerate(config.proxies):
        if proxy.field is not None:
            fields.append(FieldCount(f"proxies.{i}.field", proxy.field, True))
        elif proxy.compute is not None:
            for name in ("field", "start", "end"):
                path = getattr(proxy.compute, name, None)
                if isinstance(path, str):
                    fields.append(FieldCount(f"proxies.{i}.compute.{name}", path, False))
    fields += [FieldCount(f"audits.{i}.field", a.field, True) for i, a in enumerate(config.audits) if a.field]
    if config.segments is not None:
        fields.append(FieldCount("segments.field", config.segments.field, False))
    return fields


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return True  # booleans are 1 and 0, as records read them
    try:
        return isinstance(value, int | float) and math.isfinite(float(value))
    except OverflowError:
        return False


def sample_fields(config: Config, lines: Iterable[bytes], limit: int = DEFAULT_SAMPLE_RECORDS) -> SampleReport:
    """Count, over the first ``limit`` JSON objects of ``lines``, how often each configured path is present."""
    report = SampleReport(configured_fields(config))
    for raw in lines:
        if report.records >= limit:
            break
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError):
            obj = None
        if not isinstance(obj, dict):
            report.unusable += 1
            continue
        report.records += 1
        for f in report.fields:
            value = lookup(obj, f.path)
            if value is not None:
                f.present += 1
                f.numeric += f.metric and _is_number(value)
    return report


def sample_file(config: Config, stream: IO[bytes], limit: int = DEFAULT_SAMPLE_RECORDS) -> SampleReport:
    return sample_fields(config, iter(stream), limit)
