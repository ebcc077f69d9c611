"""The agent's configuration: one YAML file, validated at start, every problem named by key path.

Only ``proxies`` and ``audits`` are required; everything else has a documented default so the
CONTRACT's minimal config runs ``replay`` unchanged. Unknown keys are errors: a typo such as
``proxys:`` must fail loudly instead of silently leaving a default in place. Deployments override
any scalar key through the environment: ``GOODHART__SCHEDULE__DETECT_SECONDS=5`` (double
underscores separate the path; the value is parsed as YAML), plus the shorthands
``GOODHART_STATE_DIR``, ``GOODHART_LISTEN`` and ``GOODHART_LOG_LEVEL``.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
DOTTED_PATH_PATTERN = r"^[^.\s]+(\.[^.\s]+)*$"
DEFAULT_LISTEN = "0.0.0.0:10100"
DEFAULT_PUSH_LISTEN = "127.0.0.1:10101"
ENV_PREFIX = "GOODHART__"
ENV_SHORTHANDS = {
    "GOODHART_STATE_DIR": ("state_dir",),
    "GOODHART_LISTEN": ("listen",),
    "GOODHART_LOG_LEVEL": ("log", "level"),
}

Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)]
DottedPath = Annotated[str, Field(pattern=DOTTED_PATH_PATTERN, max_length=256)]
PositiveSeconds = Annotated[float, Field(gt=0)]


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


def _check_listen(value: str) -> str:
    parse_listen(value)
    return value


PUSH_SHARED_LISTENER = "shared"
EnvVarName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=256)]
_PUSH, _PULL = ("http_push",), ("http_pull",)
#: source keys that only mean something for some types; setting one for another type is an error
SOURCE_KEY_TYPES: dict[str, tuple[str, ...]] = {
    "path": ("jsonl",), "start_at": ("jsonl",), "rotation_grace_seconds": ("jsonl",),
    "listen": _PUSH, "max_body_bytes": _PUSH, "max_in_flight": _PUSH, "retry_after_seconds": _PUSH,
    "token_env": (*_PUSH, *_PULL), "token_file": (*_PUSH, *_PULL),
    **dict.fromkeys(("url", "params", "headers", "headers_env", "headers_file", "cursor_param", "cursor_start",
                     "cursor_field", "cursor_record_field", "records_field", "poll_seconds", "timeout_seconds",
                     "backoff_initial_seconds", "backoff_max_seconds", "max_reply_bytes", "verify_tls",
                     "ca_bundle"), _PULL),
}


class SourceConfig(Strict):
    """Where live records come from in ``run`` mode."""

    type: Literal["jsonl", "http_push", "http_pull"] = Field("jsonl", description="which kind of source")
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
    # http_push
    listen: str = Field(default=DEFAULT_PUSH_LISTEN,
                        description="HOST:PORT of the push listener, or 'shared' for the agent's main listener")
    max_body_bytes: int = Field(default=1 << 20, ge=1024, le=256 << 20, description="largest push body (413 above)")
    max_in_flight: int = Field(default=4, ge=1, le=256, description="pushes read and stored at once (429 above)")
    retry_after_seconds: int = Field(default=1, ge=1, le=3600, description="Retry-After sent with a 429 or 503")
    # http_pull
    url: str | None = Field(default=None, description="the URL polled (type http_pull)")
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
    def _listen_or_shared(cls, value: str) -> str:
        return value if value == PUSH_SHARED_LISTENER else _check_listen(value)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/?#\s]+", value):
            raise ValueError("expected an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _required_per_type(self) -> SourceConfig:
        if self.type == "jsonl" and not self.path:
            raise ValueError("path is required when type is jsonl")
        if self.type == "http_pull" and not self.url:
            raise ValueError("url is required when type is http_pull")
        if self.token_env and self.token_file:
            raise ValueError("set at most one of token_env, token_file")
        if self.backoff_initial_seconds > self.backoff_max_seconds:
            raise ValueError("backoff_initial_seconds must not exceed backoff_max_seconds")
        return self


class _KeyedValueError(ValueError):
    """A model-level check that belongs to one key: the error is reported at ``compute.<key>``."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


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
    _pattern: Any = PrivateAttr(None)

    @model_validator(mode="after")
    def _compiles(self) -> MatchCompute:
        if (self.regex is None) == (self.keywords is None):
            raise ValueError("set exactly one of regex, keywords")
        from agent.compute.match import compile_pattern

        try:
            self._pattern = compile_pattern(self.regex, self.keywords, self.case_insensitive)
        except ValueError as err:
            raise _KeyedValueError("regex" if self.regex is not None else "keywords", str(err)) from None
        return self

    @property
    def pattern(self) -> Any:
        return self._pattern


class JsonValidCompute(Strict):
    """1 when the text parses as JSON (and satisfies ``schema``, inline or a file path), else 0."""

    kind: Literal["json_valid"]
    field: DottedPath = "output"
    schema_: dict[str, Any] | str | None = Field(
        default=None, alias="schema", description="json_valid: a JSON Schema the value must satisfy, inline or a file")
    _validator: Any = PrivateAttr(None)

    @model_validator(mode="after")
    def _schema_usable(self) -> JsonValidCompute:
        if self.schema_ is not None:
            from agent.compute.json_valid import load_schema

            try:
                self._validator = load_schema(self.schema_)
            except ValueError as err:
                raise _KeyedValueError("schema", str(err)) from None
        return self

    @property
    def validator(self) -> Any:
        return self._validator


class ModelCompute(Strict):
    """A scikit-learn pipeline saved with skops, applied to a text; loaded and checked here."""

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
    _loaded: Any = PrivateAttr(None)

    @model_validator(mode="after")
    def _loads(self) -> ModelCompute:
        from agent.compute.model import load_model

        try:
            self._loaded = load_model(self.path, self.trusted, self.output, self.positive_class, self.version)
        except ValueError as err:
            raise _KeyedValueError("path", str(err)) from None
        return self

    @property
    def loaded(self) -> Any:
        return self._loaded


ComputeConfig = Annotated[LengthCompute | DurationCompute | MatchCompute | JsonValidCompute | ModelCompute,
                          Field(discriminator="kind")]
COMPUTE_KINDS = ("length", "duration", "match", "json_valid", "model")


def _compute_errors_at_their_keys(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """Report ``compute`` problems at ``compute.<key>``: pydantic puts the union's tag in the path
    (``compute.match.regex``), and model-level checks at ``compute`` itself."""
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
            if isinstance(ctx.get("error"), _KeyedValueError):
                loc = (*loc, ctx["error"].key)
            if e["type"] in ("union_tag_invalid", "union_tag_not_found"):
                details.append(InitErrorDetails(type=PydanticCustomError(
                    "compute_kind", f"expected one of {', '.join(COMPUTE_KINDS)}"), loc=("kind",), input=kind))
                continue
            details.append(InitErrorDetails(type=e["type"], loc=loc, input=e["input"], ctx=ctx))
        raise ValidationError.from_exception_data(err.title, details) from None


class ProxyConfig(Strict):
    name: Name = Field(description="the proxy's name, used as a label value")
    field: DottedPath | None = Field(default=None, description="dotted path to a number in the record")
    compute: ComputeConfig | None = Field(default=None, description="or: computed from the record (see the cookbook)")
    direction: Literal["higher", "lower"] = Field("higher", description="which way the proxy calls better")

    _compute_keys = field_validator("compute", mode="wrap")(_compute_errors_at_their_keys)

    @model_validator(mode="after")
    def _field_or_compute(self) -> ProxyConfig:
        if (self.field is None) == (self.compute is None):
            raise ValueError("set exactly one of field, compute")
        return self


class AuditBudgetConfig(Strict):
    """Caps on audits requested from one judge or grader; token buckets, unset means no cap."""

    per_minute: float | None = Field(default=None, gt=0, description="audits per minute at most (token bucket)")
    per_hour: float | None = Field(default=None, gt=0, description="audits per hour at most (token bucket)")
    per_day: float | None = Field(default=None, gt=0, description="audits per day at most (token bucket)")


class AuditRetryConfig(Strict):
    """How long a sampled output keeps being attempted before it counts as failed."""

    max_attempts: int = Field(default=8, ge=1, le=100, description="requests per audit before giving up")
    initial_backoff_seconds: PositiveSeconds = Field(
        default=1.0, description="backoff before the 2nd request; doubles per attempt, with jitter")
    max_backoff_seconds: PositiveSeconds = Field(default=300.0,
                                                 description="longest backoff (a Retry-After may ask for more)")
    expire_after_seconds: PositiveSeconds = Field(default=86400.0, description="an audit not obtained by then fails")


class CircuitBreakerConfig(Strict):
    failure_threshold: int = Field(default=5, ge=1, description="consecutive failed requests that open the circuit")
    open_seconds: PositiveSeconds = Field(default=30.0, description="pause before one trial request")


class AuditCallConfig(Strict):
    """What judges and graders share: a bearer key from the environment, timeouts, budget, retries."""

    api_key_env: EnvVarName | None = Field(default=None, description="environment variable holding the bearer key")
    api_key_file: str | None = Field(default=None, description="or: file holding the bearer key (a mounted Secret)")
    timeout_seconds: PositiveSeconds = Field(default=30.0, description="whole time allowed for one request")
    concurrency: int = Field(default=2, ge=1, le=64, description="requests in flight at once")
    budget: AuditBudgetConfig = Field(default_factory=AuditBudgetConfig)
    retry: AuditRetryConfig = Field(default_factory=AuditRetryConfig)
    circuit_breaker: CircuitBreakerConfig = Field(default_factory=CircuitBreakerConfig)

    @model_validator(mode="after")
    def _one_key_source(self) -> AuditCallConfig:
        if self.api_key_env and self.api_key_file:
            raise ValueError("set at most one of api_key_env, api_key_file")
        if self.retry.initial_backoff_seconds > self.retry.max_backoff_seconds:
            raise ValueError("retry.initial_backoff_seconds must not exceed retry.max_backoff_seconds")
        return self


class LlmJudgeConfig(AuditCallConfig):
    base_url: str = Field(description="OpenAI-compatible API root; requests go to {base_url}/chat/completions")
    model: str = Field(description="model name sent with each request")
    prompt: str = Field(min_length=1, description="template over the record: {input}, {output}, {a.b}, {id}, {record}")
    scale: tuple[float, float] = Field(default=(1.0, 5.0), description="[low, high]; a score outside fails the audit")
    system: str | None = Field(default=None, description="optional system message sent before the prompt")
    temperature: float = Field(default=0.0, ge=0, le=2, description="sampling temperature sent to the judge")
    max_tokens: int | None = Field(default=None, ge=1, description="completion token limit sent to the judge")
    json_mode: bool = Field(default=False, description="ask for response_format json_object")
    reply_pointer: str = Field(default="/score", description="JSON pointer to the score when the reply is JSON")
    price_per_1k_prompt_tokens: float = Field(default=0.0, ge=0, description="for goodhart_audit_cost_total")
    price_per_1k_completion_tokens: float = Field(default=0.0, ge=0, description="for goodhart_audit_cost_total")

    @field_validator("scale")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not value[0] < value[1]:
            raise ValueError("scale must be [low, high] with low < high")
        return value

    _base_url_ok = field_validator("base_url")(lambda v: _check_http_url(v))
    _reply_pointer_ok = field_validator("reply_pointer")(lambda v: _check_pointer(v))


class HttpGraderConfig(AuditCallConfig):
    url: str = Field(description="POSTed each sampled record as JSON")
    pointer: str = Field(default="", description="JSON pointer to the number in the reply ('' = the whole reply)")
    price_per_request: float = Field(default=0.0, ge=0, description="estimated cost of one graded output")

    _url_ok = field_validator("url")(lambda v: _check_http_url(v))
    _pointer_ok = field_validator("pointer")(lambda v: _check_pointer(v))


def _check_pointer(value: str) -> str:
    if value and not value.startswith("/"):
        raise ValueError("a JSON pointer is empty or starts with '/'")
    return value


def _check_http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value


class AuditConfig(Strict):
    name: Name
    field: DottedPath | None = None
    llm_judge: LlmJudgeConfig | None = None
    http_grader: HttpGraderConfig | None = None

    @model_validator(mode="after")
    def _exactly_one_producer(self) -> AuditConfig:
        given = [k for k in ("field", "llm_judge", "http_grader") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("set exactly one of field, llm_judge, http_grader")
        return self


class SegmentsConfig(Strict):
    field: DottedPath = Field(description="dotted path of the segment label")
    max_values: int = Field(20, ge=1, le=1000, description="distinct values before folding into 'other'")


class StratifyConfig(Strict):
    """Oversample where the proxy looks best; inverse-probability weights keep estimates unbiased."""

    proxy: Name = Field(description="the proxy whose recent quantiles define the strata")
    weights: list[Annotated[float, Field(gt=0)]] = Field(
        default=[1.0, 1.0, 1.0, 3.0], min_length=2, max_length=20,
        description="relative sampling intensity per proxy-quantile stratum, worst to best")
    window: int = Field(default=2000, ge=20, le=100_000, description="recent outputs the quantiles come from")


class AuditSamplingConfig(Strict):
    rate: float = Field(0.05, gt=0, le=1, description="fraction of outputs sent to judges and graders")
    salt: str = Field(default="", max_length=256, description="hash salt; replicas must share it to agree")
    stratify: StratifyConfig | None = None


class ScheduleConfig(Strict):
    ingest_seconds: PositiveSeconds = Field(1.0, description="how often the source is read")
    detect_seconds: PositiveSeconds = Field(15.0, description="how often detectors give verdicts")
    retention_seconds: PositiveSeconds = Field(300.0, description="how often expired state is dropped")
    checkpoint_seconds: PositiveSeconds = Field(
        300.0, description="how often detector state is saved; after a crash, at most this much is re-fed")
    audit_seconds: PositiveSeconds = Field(default=1.0, description="how often due judge/grader audits are sent")


class RetentionConfig(Strict):
    label_ttl_seconds: PositiveSeconds = Field(
        7 * 86400, description="how long an output waits for its label, and a label for its output")
    pairs_max_age_seconds: PositiveSeconds = Field(
        30 * 86400, description="audited pairs older than this are dropped")
    max_pending: int = Field(1_000_000, ge=100, description="outputs waiting for labels, at most")
    max_pairs: int = Field(1_000_000, ge=100, description="audited pairs kept, at most")
    max_events: int = Field(10_000, ge=10, description="alarm events kept for /v1/events")
    max_seen_ids: int = Field(
        2_000_000, ge=100,
        description="ids of dropped outputs remembered (so a late re-delivery is a duplicate), at most")


class LimitsConfig(Strict):
    max_record_bytes: int = Field(65536, ge=256, le=16 * 1024 * 1024,
                                  description="larger records are rejected as too_large")


class DetectionConfig(Strict):
    detector: Literal["decoupling", "placeholder"] = Field(
        "decoupling", description="decoupling: the real detector; placeholder: for testing the pipeline")
    audits_between_false_alarms: float = Field(
        100_000, ge=100, description="expected audits between false alarms, whole deployment")
    reference_pairs: int = Field(200, ge=20, description="audited pairs that form the reference")
    shift: float = Field(1.0, gt=0, le=5, description="design shift of the CUSUMs, in residual standard deviations")
    warn_ratio: float = Field(0.01, gt=0, lt=1, description="warn fires at this fraction of the alarm's run length")
    window: int = Field(200, ge=20, le=100_000, description="recent audited pairs behind gap and rank correlation")
    window_seconds: PositiveSeconds = Field(3600, description="window of the exported proxy/audit means")
    validity_pairs: int = Field(default=1000, ge=20, le=100_000,
                                description="newest audited pairs per pair that goodhart_proxy_validity uses")


class LogConfig(Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level")
    format: Literal["json", "text"] = Field(
        "json", description="json: one object per line on stdout; text: for a terminal")

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class ApiConfig(Strict):
    allow_remote_rebaseline: bool = Field(False, description="accept POST /v1/rebaseline from non-loopback")


class Config(Strict):
    source: SourceConfig | None = None
    id_field: DottedPath = Field("id", description="dotted path of the record id")
    ts_field: DottedPath = Field("ts", description="dotted path of the record time")
    proxies: list[ProxyConfig] = Field(min_length=1)
    audits: list[AuditConfig] = Field(min_length=1)
    segments: SegmentsConfig | None = None
    audit_sampling: AuditSamplingConfig = AuditSamplingConfig()
    state_dir: str = Field("/var/lib/goodhart-agent", description="directory of the SQLite store")
    listen: str = Field(DEFAULT_LISTEN, description="HOST:PORT of /metrics, /healthz, /readyz and /")
    schedule: ScheduleConfig = ScheduleConfig()
    retention: RetentionConfig = RetentionConfig()
    limits: LimitsConfig = LimitsConfig()
    detection: DetectionConfig = DetectionConfig()
    log: LogConfig = LogConfig()
    api: ApiConfig = ApiConfig()

    _listen_ok = field_validator("listen")(_check_listen)

    @model_validator(mode="after")
    def _unique_names(self) -> Config:
        names = [p.name for p in self.proxies] + [a.name for a in self.audits]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"metric names must be unique across proxies and audits: {', '.join(dupes)}")
        return self

    @model_validator(mode="after")
    def _stratify_proxy_known(self) -> Config:
        strat = self.audit_sampling.stratify
        if strat is not None and strat.proxy not in {p.name for p in self.proxies}:
            raise ValueError(f"audit_sampling.stratify.proxy: no proxy named {strat.proxy}")
        return self

    @property
    def pair_count(self) -> int:
        return len(self.proxies) * len(self.audits)


def _format_errors(err: ValidationError) -> list[str]:
    problems = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        if not e["loc"] and re.match(r"^[\w.]+: ", msg):  # a cross-key check that names its own key path
            problems.append(msg)
            continue
        problems.append(f"{loc}: {msg}")
    return problems


def _set_path(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


def apply_env_overrides(tree: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Overlay ``GOODHART__A__B=value`` and the shorthands onto the parsed YAML tree."""
    for key, raw in sorted(environ.items()):
        if key in ENV_SHORTHANDS:
            _set_path(tree, ENV_SHORTHANDS[key], raw)
        elif key.startswith(ENV_PREFIX) and len(key) > len(ENV_PREFIX):
            path = tuple(p.lower() for p in key[len(ENV_PREFIX):].split("__"))
            if any(part.isdigit() for part in path):
                raise ConfigError([f"{key}: list entries (proxies, audits) cannot be overridden from the environment"])
            value = yaml.safe_load(raw) if raw.strip() else raw
            _set_path(tree, path, value)
    return tree


def config_from_mapping(tree: Any, environ: Mapping[str, str] | None = None) -> Config:
    if not isinstance(tree, dict):
        raise ConfigError(["(top level): expected a mapping of keys"])
    tree = apply_env_overrides(copy.deepcopy(tree), os.environ if environ is None else environ)
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_errors(err)) from None


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file; every problem is reported, not just the first."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError([f"(file): cannot read {path}: {err.strerror}"]) from None
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError([f"(file): not valid YAML{where}"]) from None
    return config_from_mapping(tree if tree is not None else {}, environ)


def validate_name(value: str) -> bool:
    return re.fullmatch(NAME_PATTERN, value) is not None
