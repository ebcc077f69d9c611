"""The ``source:`` section (or each item of ``sources:``): where live records come from in ``run`` mode
(jsonl, http_push, http_pull, otlp).

Keys that only mean something for some source types are listed in ``SOURCE_KEY_TYPES``; setting one
for another type is an error rather than a silently ignored value.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from agent.config.base import DottedPath, EnvVarName, Name, PositiveSeconds, Strict, check_listen

DEFAULT_PUSH_LISTEN = "127.0.0.1:10101"
#: the OTLP/HTTP port the OpenTelemetry SDKs and the Collector's ``otlphttp`` exporter use by default
DEFAULT_OTLP_LISTEN = "127.0.0.1:4318"
PUSH_SHARED_LISTENER = "shared"
_PUSH, _PULL, _OTLP = ("http_push", "otlp"), ("http_pull",), ("otlp",)
#: source keys that only mean something for some types; setting one for another type is an error
SOURCE_KEY_TYPES: dict[str, tuple[str, ...]] = {
    "path": ("jsonl",), "start_at": ("jsonl",), "rotation_grace_seconds": ("jsonl",),
    "listen": _PUSH, "allow_unauthenticated": _PUSH, "max_body_bytes": _PUSH, "max_in_flight": _PUSH,
    "retry_after_seconds": _PUSH,
    "max_decompressed_bytes": _OTLP, "span_ids_remembered": _OTLP,
    "token_env": (*_PUSH, *_PULL), "token_file": (*_PUSH, *_PULL),
    **dict.fromkeys(("flavour", "langfuse", "url", "params", "headers", "headers_env", "headers_file",
                     "cursor_param", "cursor_start", "cursor_field", "cursor_record_field", "records_field",
                     "poll_seconds", "timeout_seconds",
                     "backoff_initial_seconds", "backoff_max_seconds", "max_reply_bytes", "verify_tls",
                     "ca_bundle"), _PULL),
}


#: keys of the generic http_pull reply format that the Langfuse flavour fixes itself
_LANGFUSE_FIXED = ("cursor_param", "cursor_start", "cursor_field", "cursor_record_field", "records_field",
                   "token_env", "token_file")


class LangfuseConfig(Strict):
    """``http_pull`` with ``flavour: langfuse``: Langfuse scores (``GET /api/public/v3/scores``) as late labels."""

    scores: list[str] = Field(min_length=1, description="score names to read (Langfuse's name filter)")
    join_on: Literal["trace", "observation"] = Field(
        "trace", description="the output id a score is joined to: its trace id or its observation id")
    public_key_env: EnvVarName | None = Field(None, description="environment variable holding the public key")
    public_key_file: str | None = Field(None, description="file holding the public key")
    secret_key_env: EnvVarName | None = Field(None, description="environment variable holding the secret key")
    secret_key_file: str | None = Field(None, description="file holding the secret key (e.g. a mounted Secret)")
    environments: list[str] = Field(default_factory=list, description="only scores of these environments")
    score_sources: list[Literal["API", "EVAL", "ANNOTATION"]] = Field(
        default_factory=list, description="only scores from these Langfuse sources (default: all)")
    page_size: int = Field(100, ge=1, le=100, description="scores per page (Langfuse allows at most 100)")
    lookback_seconds: float = Field(
        900.0, ge=0, le=7 * 86400,
        description="each sweep re-reads this far behind the newest score seen, for scores that reach the "
        "API late (Langfuse documents about 10 minutes); scores already read are skipped by id")
    initial_lookback_seconds: float | None = Field(
        86400.0, ge=0, description="how far back the very first sweep reads; null: all history")
    score_ids_remembered: int = Field(100_000, ge=1000, le=10_000_000,
                                      description="score ids kept in memory to skip the re-read ones")

    @model_validator(mode="after")
    def _one_of_each_key(self) -> LangfuseConfig:
        for which in ("public_key", "secret_key"):
            env, file = getattr(self, f"{which}_env"), getattr(self, f"{which}_file")
            if bool(env) == bool(file):
                raise ValueError(f"set exactly one of {which}_env, {which}_file")
        return self


class SourceConfig(Strict):
    """Where live records come from in ``run`` mode."""

    type: Literal["jsonl", "http_push", "http_pull", "otlp"] = Field("jsonl", description="which kind of source")
    name: Name | None = Field(None, description="the source's name (label value, offset key); default: its type")
    path: str | None = Field(None, description="JSONL file to follow (type jsonl)")
    start_at: Literal["beginning", "end"] = Field(
        "beginning", description="where a jsonl source starts when no offset is stored yet")
    rotation_grace_seconds: float = Field(
        2.0, ge=0, le=3600,
        description="after a rotation, the old file is still read until it has been quiet this long (jsonl)")
    max_batch_records: int = Field(5000, ge=1, description="records per ingest step at most")
    # http_push and http_pull: a bearer token (push: required from clients; pull: sent), never inline
    token_env: EnvVarName | None = Field(default=None, description="environment variable holding the bearer token")
    token_file: str | None = Field(default=None, description="file holding the bearer token (e.g. a mounted Secret)")
    # http_push and otlp
    listen: str | None = Field(
        default=None, description="HOST:PORT of the push listener, or 'shared' for the agent's main listener "
        f"(default {DEFAULT_PUSH_LISTEN} for http_push, {DEFAULT_OTLP_LISTEN} for otlp)")
    allow_unauthenticated: bool = Field(
        default=False, description="accept pushes without a token on a listener reachable beyond localhost "
        "('shared' on a non-loopback main listener); without this, that config is refused at start")
    max_body_bytes: int = Field(default=1 << 20, ge=1024, le=256 << 20, description="largest push body (413 above)")
    max_decompressed_bytes: int = Field(default=16 << 20, ge=1024, le=1 << 30,
                                        description="largest OTLP body once gunzipped (413 above)")
    span_ids_remembered: int = Field(
        default=100_000, ge=0, le=10_000_000,
        description="span id → record id pairs kept in memory, so a later evaluation log that names only its "
        "span joins the output of a span with a gen_ai.response.id (otlp)")
    max_in_flight: int = Field(default=4, ge=1, le=256,
                               description="pushes decoded and stored at once, bodies arrived (429 above)")
    retry_after_seconds: int = Field(default=1, ge=1, le=3600, description="Retry-After sent with a 429 or 503")
    # http_pull
    flavour: Literal["generic", "langfuse"] = Field(
        "generic", description="reply format: generic (the keys below) or langfuse (Langfuse scores as labels)")
    langfuse: LangfuseConfig | None = Field(default=None, description="Langfuse settings (flavour langfuse)")
    url: str | None = Field(default=None, description="the URL polled (type http_pull; for flavour langfuse "
                            "the Langfuse base URL, e.g. https://cloud.langfuse.com)")
    params: dict[str, str] = Field(default_factory=dict, description="extra query parameters, e.g. a page size")
    headers: dict[str, str] = Field(default_factory=dict, description="request headers that are not secret")
    headers_env: dict[str, EnvVarName] = Field(default_factory=dict,
                                               description="header name → environment variable holding its value")
    headers_file: dict[str, str] = Field(default_factory=dict,
                                         description="header name → file holding its value")
    cursor_param: str = Field(default="cursor", min_length=1, description="query parameter that carries the cursor")
    cursor_start: str | int | float | None = Field(default=None, description="cursor of the very first request")
    cursor_field: str | None = Field(
        default="next_cursor", min_length=1,
        description="next cursor in an object reply (JSON pointer or dotted path); null: the last record's")
    cursor_record_field: DottedPath = Field(default="ts", description="field of the last record used as the cursor")
    records_field: str = Field(default="records", min_length=1,
                               description="the records in an object reply (JSON pointer or dotted path)")
    poll_seconds: PositiveSeconds = Field(default=10.0, description="pause after the last page before polling again")
    timeout_seconds: PositiveSeconds = Field(default=10.0, description="whole time allowed for one request")
    backoff_initial_seconds: PositiveSeconds = Field(default=1.0, description="first wait after a failed request")
    backoff_max_seconds: PositiveSeconds = Field(default=300.0, description="longest wait between failed requests")
    max_reply_bytes: int = Field(default=16 << 20, ge=1024, description="largest reply read")
    verify_tls: bool = Field(default=True, description="verify the server's TLS certificate")
    ca_bundle: str | None = Field(default=None, description="CA bundle file to verify it with instead of the system's")

    @field_validator(*SOURCE_KEY_TYPES)
    @classmethod
    def _used_by_type(cls, value: Any, info: ValidationInfo) -> Any:
        kinds = SOURCE_KEY_TYPES[str(info.field_name)]
        kind = info.data.get("type")
        if kind is not None and kind not in kinds:
            raise ValueError(f"only used when type is {' or '.join(kinds)}, not {kind}")
        return value

    @field_validator("listen")
    @classmethod
    def _listen_or_shared(cls, value: str | None) -> str | None:
        return value if value is None or value == PUSH_SHARED_LISTENER else check_listen(value)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/?#\s]+", value):
            raise ValueError("expected an http:// or https:// URL")
        return value

    @property
    def source_name(self) -> str:
        """Its name: the value of ``goodhart_records_total{source}`` and the key of its stored offset."""
        return self.name or self.type

    @property
    def listen_address(self) -> str:
        """Where a push source listens: ``listen``, or its type's default."""
        return self.listen or (DEFAULT_OTLP_LISTEN if self.type == "otlp" else DEFAULT_PUSH_LISTEN)

    @model_validator(mode="after")
    def _required_per_type(self) -> SourceConfig:
        if self.type == "jsonl" and not self.path:
            raise ValueError("path is required when type is jsonl")
        if self.type == "http_pull" and not self.url:
            raise ValueError("url is required when type is http_pull")
        if self.flavour == "langfuse":
            if self.langfuse is None:
                raise ValueError("langfuse is required when flavour is langfuse")
            fixed = sorted(set(_LANGFUSE_FIXED) & self.model_fields_set)
            if fixed:
                raise ValueError(f"{', '.join(fixed)}: not used with flavour langfuse (it follows Langfuse's API)")
        elif self.langfuse is not None:
            raise ValueError("langfuse is only used with flavour langfuse")
        if self.token_env and self.token_file:
            raise ValueError("set at most one of token_env, token_file")
        if self.backoff_initial_seconds > self.backoff_max_seconds:
            raise ValueError("backoff_initial_seconds must not exceed backoff_max_seconds")
        return self
