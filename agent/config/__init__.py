"""The agent's configuration: one YAML file, validated at start, every problem named by key path.

Only ``proxies`` and ``audits`` are required; everything else has a documented default so the
CONTRACT's minimal config runs ``replay`` unchanged. Unknown keys are errors: a typo such as
``proxys:`` must fail loudly instead of silently leaving a default in place. Deployments override
any scalar key through the environment: ``GOODHART__SCHEDULE__DETECT_SECONDS=5`` (double
underscores separate the path; the value is parsed as YAML), plus the shorthands
``GOODHART_STATE_DIR``, ``GOODHART_LISTEN`` and ``GOODHART_LOG_LEVEL``.

One module per concern: ``base`` (ConfigError, the strict base model, name types), ``sources``,
``forward``, ``compute``, ``audits``, ``schema`` (the top level and its small sections) and ``loading`` (YAML,
environment overrides, error lines). Import from ``agent.config``; the split is an inside detail.

This package checks shape only and imports nothing above ``agent.core``: what needs building (a
regex, a JSON Schema, a model) is built, and its problems reported, by ``agent.compute``.
"""

from agent.config.audits import (
    AuditBudgetConfig,
    AuditCallConfig,
    AuditRetryConfig,
    AuditSamplingConfig,
    CircuitBreakerConfig,
    HttpGraderConfig,
    LlmJudgeConfig,
    StratifyConfig,
)
from agent.config.base import (
    DEFAULT_LISTEN,
    DOTTED_PATH_PATTERN,
    NAME_PATTERN,
    ConfigError,
    DottedPath,
    EnvVarName,
    Name,
    PositiveSeconds,
    Strict,
    parse_listen,
    validate_name,
)
from agent.config.compute import (
    COMPUTE_KINDS,
    ComputeConfig,
    DurationCompute,
    JsonValidCompute,
    LengthCompute,
    MatchCompute,
    ModelCompute,
)
from agent.config.forward import DEFAULT_LABELS_FROM_ENV, ForwardConfig
from agent.config.loading import (
    ENV_PREFIX,
    ENV_SHORTHANDS,
    apply_env_overrides,
    compute_specs,
    config_from_mapping,
    load_config,
    read_config_tree,
)
from agent.config.schema import (
    ApiConfig,
    AuditConfig,
    Config,
    DetectionConfig,
    EvidenceConfig,
    LimitsConfig,
    LogConfig,
    ProxyConfig,
    RetentionConfig,
    ScheduleConfig,
    SegmentsConfig,
)
from agent.config.sources import (
    DEFAULT_PUSH_LISTEN,
    PUSH_SHARED_LISTENER,
    SOURCE_KEY_TYPES,
    LangfuseConfig,
    SourceConfig,
)

__all__ = [
    "COMPUTE_KINDS",
    "DEFAULT_LABELS_FROM_ENV",
    "DEFAULT_LISTEN",
    "DEFAULT_PUSH_LISTEN",
    "DOTTED_PATH_PATTERN",
    "ENV_PREFIX",
    "ENV_SHORTHANDS",
    "NAME_PATTERN",
    "PUSH_SHARED_LISTENER",
    "SOURCE_KEY_TYPES",
    "ApiConfig",
    "AuditBudgetConfig",
    "AuditCallConfig",
    "AuditConfig",
    "AuditRetryConfig",
    "AuditSamplingConfig",
    "CircuitBreakerConfig",
    "ComputeConfig",
    "Config",
    "ConfigError",
    "DetectionConfig",
    "DottedPath",
    "DurationCompute",
    "EnvVarName",
    "EvidenceConfig",
    "ForwardConfig",
    "HttpGraderConfig",
    "JsonValidCompute",
    "LangfuseConfig",
    "LengthCompute",
    "LimitsConfig",
    "LlmJudgeConfig",
    "LogConfig",
    "MatchCompute",
    "ModelCompute",
    "Name",
    "PositiveSeconds",
    "ProxyConfig",
    "RetentionConfig",
    "ScheduleConfig",
    "SegmentsConfig",
    "SourceConfig",
    "StratifyConfig",
    "Strict",
    "apply_env_overrides",
    "compute_specs",
    "config_from_mapping",
    "load_config",
    "parse_listen",
    "read_config_tree",
    "validate_name",
]
