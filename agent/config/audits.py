"""Audit producers beyond record fields: LLM judges and HTTP graders, their budgets, retries and
circuit breakers, and the sampling (rate, salt, strata) that picks which outputs they see.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator, model_validator

from agent.config.base import EnvVarName, Name, PositiveSeconds, Strict


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
