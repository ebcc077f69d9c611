"""What every part of the config schema shares: the error type, the strict base model, name types.

Kept free of any model so that the per-concern modules (sources, compute, audits, schema) and the
loader can all import it without import cycles.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
#: a field path: a dotted path (``proxy.thumbs_up``, ``choices.0.text``) or a JSON Pointer (RFC 6901, starts
#: with ``/``: ``/attributes/gen_ai.usage.output_tokens``); :func:`agent.core.resolve` reads both
DOTTED_PATH_PATTERN = r"^(?:(?:/(?:[^/~]|~[01])*)+|[^.\s/][^.\s]*(?:\.[^.\s]+)*)$"
DEFAULT_LISTEN = "0.0.0.0:10100"

Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)]
DottedPath = Annotated[str, Field(pattern=DOTTED_PATH_PATTERN, max_length=256)]
PositiveSeconds = Annotated[float, Field(gt=0)]
EnvVarName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=256)]


class ConfigError(Exception):
    """A config that cannot be used; ``problems`` holds one ``key.path: reason`` line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) into a tuple; raises ValueError with a reason."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def check_listen(value: str) -> str:
    """A field validator: the value unchanged when it parses as ``HOST:PORT``."""
    parse_listen(value)
    return value


def validate_name(value: str) -> bool:
    return re.fullmatch(NAME_PATTERN, value) is not None
