"""The agent's configuration: one YAML file, validated at start, every problem named by key path.

Only ``proxies`` and ``audits`` are required; everything else has a documented default so the
CONTRACT's minimal config runs ``replay`` unchanged. Unknown keys are errors: a typo such as
``proxys:`` must fail loudly instead of silently leaving a default in place. Deployments override
any scalar key through the environment: ``GOODHART__SCHEDULE__DETECT_SECONDS=5`` (double
underscores separate the path; the value is parsed as YAML), plus the shorthands
``GOODHART_STATE_DIR``, ``GOODHART_LISTEN`` and ``GOODHART_LOG_LEVEL``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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


class SourceConfig(Strict):
    """Where live records come from in ``run`` mode."""

    type: Literal["jsonl", "http_push", "http_pull"] = "jsonl"
    path: str | None = Field(None, description="JSONL file to follow (type jsonl)")
    start_at: Literal["beginning", "end"] = Field(
        "beginning", description="where a jsonl source starts when no offset is stored yet")
    max_batch_records: int = Field(5000, ge=1, description="records per ingest step at most")

    @model_validator(mode="after")
    def _required_per_type(self) -> SourceConfig:
        if self.type == "jsonl" and not self.path:
            raise ValueError("path is required when type is jsonl")
        return self


class ProxyConfig(Strict):
    name: Name
    field: DottedPath
    direction: Literal["higher", "lower"] = "higher"


class LlmJudgeConfig(Strict):
    base_url: str
    model: str
    api_key_env: str | None = None
    prompt: str
    scale: tuple[float, float] = (1.0, 5.0)
    timeout_seconds: PositiveSeconds = 30.0

    @field_validator("scale")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not value[0] < value[1]:
            raise ValueError("scale must be [low, high] with low < high")
        return value


class HttpGraderConfig(Strict):
    url: str
    pointer: str = ""
    timeout_seconds: PositiveSeconds = 30.0


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
    field: DottedPath
    max_values: int = Field(20, ge=1, le=1000, description="distinct values before folding into 'other'")


class AuditSamplingConfig(Strict):
    rate: float = Field(0.05, gt=0, le=1, description="fraction of outputs sent to judges and graders")


class ScheduleConfig(Strict):
    ingest_seconds: PositiveSeconds = 1.0
    detect_seconds: PositiveSeconds = 15.0
    retention_seconds: PositiveSeconds = 300.0


class RetentionConfig(Strict):
    label_ttl_seconds: PositiveSeconds = Field(
        7 * 86400, description="how long an output waits for its label, and a label for its output")
    pairs_max_age_seconds: PositiveSeconds = 30 * 86400
    max_pending: int = Field(1_000_000, ge=100, description="outputs waiting for labels, at most")
    max_pairs: int = Field(1_000_000, ge=100, description="audited pairs kept, at most")
    max_events: int = Field(10_000, ge=10)


class LimitsConfig(Strict):
    max_record_bytes: int = Field(65536, ge=256, le=16 * 1024 * 1024)


class DetectionConfig(Strict):
    detector: Literal["decoupling", "placeholder"] = "placeholder"
    audits_between_false_alarms: float = Field(
        100_000, ge=100, description="expected audits between false alarms, whole deployment")
    reference_pairs: int = Field(200, ge=20, description="audited pairs that form the reference")
    window_seconds: PositiveSeconds = Field(3600, description="window of the exported proxy/audit means")


class LogConfig(Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "text"] = "json"

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class ApiConfig(Strict):
    allow_remote_rebaseline: bool = Field(False, description="accept POST /v1/rebaseline from non-loopback")


class Config(Strict):
    source: SourceConfig | None = None
    id_field: DottedPath = "id"
    ts_field: DottedPath = "ts"
    proxies: list[ProxyConfig] = Field(min_length=1)
    audits: list[AuditConfig] = Field(min_length=1)
    segments: SegmentsConfig | None = None
    audit_sampling: AuditSamplingConfig = AuditSamplingConfig()
    state_dir: str = "/var/lib/goodhart-agent"
    listen: str = DEFAULT_LISTEN
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
            value = yaml.safe_load(raw) if raw.strip() else raw
            _set_path(tree, path, value)
    return tree


def config_from_mapping(tree: Any, environ: Mapping[str, str] | None = None) -> Config:
    if not isinstance(tree, dict):
        raise ConfigError(["(top level): expected a mapping of keys"])
    tree = apply_env_overrides(dict(tree), os.environ if environ is None else environ)
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
