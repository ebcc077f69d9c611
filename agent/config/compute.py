"""Computed proxies (``compute:`` under a proxy): one model per kind, a discriminated union of them.

These models check shape only. Compiling a pattern, checking a JSON Schema and loading a model is
building, which ``agent.compute`` does from the validated config (``build_computers``) and reports
as config errors at the same key paths (``proxies.N.compute.regex: ...``), so a bad regex or an
unreadable file still fails ``check-config`` and the start, never a record.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, ValidatorFunctionWrapHandler, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from agent.config.base import DottedPath, Strict


class LengthCompute(Strict):
    """Length of a text: characters, words, or an approximate token count."""

    kind: Literal["length"] = Field(description="length, duration, match, json_valid or model (docs/cookbook.md)")
    field: DottedPath = Field(default="output", description="length, match, json_valid, model: the text's path")
    unit: Literal["chars", "words", "tokens"] = Field(
        default="words", description="length: characters, words, or an approximate token count")


class DurationCompute(Strict):
    """Seconds from ``start`` to ``end``, two timestamps (epoch seconds or RFC 3339) in the record."""

    kind: Literal["duration"]
    start: DottedPath = Field(description="duration: path of the start time (epoch seconds or RFC 3339)")
    end: DottedPath = Field(description="duration: path of the end time; the proxy is end - start in seconds")


class MatchCompute(Strict):
    """1 when ``regex`` (or any of ``keywords``, as whole words) occurs in the text, else 0."""

    kind: Literal["match"]
    field: DottedPath = "output"
    regex: str | None = Field(default=None, min_length=1, max_length=4096,
                              description="match: a regular expression searched anywhere in the text")
    keywords: list[Annotated[str, Field(min_length=1, max_length=256)]] | None = Field(
        default=None, min_length=1, max_length=1000, description="match: or: words or phrases, matched whole")
    case_insensitive: bool = Field(default=True, description="match: ignore case")
    timeout_seconds: float = Field(default=0.05, gt=0, le=5,
                                   description="match: per record; a slower match fails as regex_timeout")

    @model_validator(mode="after")
    def _regex_or_keywords(self) -> MatchCompute:
        if (self.regex is None) == (self.keywords is None):
            raise ValueError("set exactly one of regex, keywords")
        return self


class JsonValidCompute(Strict):
    """1 when the text parses as JSON (and satisfies ``schema``, inline or a file path), else 0."""

    kind: Literal["json_valid"]
    field: DottedPath = "output"
    schema_: dict[str, Any] | str | None = Field(
        default=None, alias="schema", description="json_valid: a JSON Schema the value must satisfy, inline or a file")


class ModelCompute(Strict):
    """A scikit-learn pipeline saved with skops, applied to a text (loaded and checked when built)."""

    kind: Literal["model"]
    path: str = Field(min_length=1, description="model: a skops file (relative to the working directory)")
    field: DottedPath = "output"
    output: Literal["auto", "proba", "predict"] = Field(
        default="auto", description="model: proba (classifiers; auto when available) or predict")
    positive_class: bool | int | str | None = Field(
        default=None, description="model: the class whose probability is the proxy (default: the last)")
    trusted: list[str] = Field(default_factory=list,
                               description="model: types beyond skops' defaults that you trust the file with")
    version: str | None = Field(default=None, min_length=1, max_length=64,
                                description="model: shown in goodhart_proxy_model_info (default: the file's hash)")


ComputeConfig = Annotated[LengthCompute | DurationCompute | MatchCompute | JsonValidCompute | ModelCompute,
                          Field(discriminator="kind")]
COMPUTE_KINDS = ("length", "duration", "match", "json_valid", "model")


def compute_errors_at_their_keys(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """Report ``compute`` problems at ``compute.<key>``: pydantic puts the union's tag in the path
    (``compute.match.regex``), which users never wrote."""
    try:
        return handler(value)
    except ValidationError as err:
        kind = value.get("kind") if isinstance(value, dict) else None
        details: list[InitErrorDetails] = []
        for e in err.errors():
            loc = tuple(e["loc"])
            if kind is not None and loc[:1] == (kind,):
                loc = loc[1:]
            ctx = e.get("ctx") or {}
            if e["type"] in ("union_tag_invalid", "union_tag_not_found"):
                details.append(InitErrorDetails(type=PydanticCustomError(
                    "compute_kind", f"expected one of {', '.join(COMPUTE_KINDS)}"), loc=("kind",), input=kind))
                continue
            details.append(InitErrorDetails(type=e["type"], loc=loc, input=e["input"], ctx=ctx))
        raise ValidationError.from_exception_data(err.title, details) from None
