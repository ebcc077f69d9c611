"""The ``forward:`` section: this agent is a forwarder (a sidecar) that ships its records to a gateway.

A forwarder reads its source, validates records and computes the ``compute:`` proxies like any
agent, adds the pod's identity, keeps what it read in a durable buffer in its ``state_dir`` and
POSTs it in batches to the gateway's ``http_push`` endpoint. It runs no detectors and buys no
audits; see docs/fleet.md for the keys it ignores.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from agent.config.base import NAME_PATTERN, EnvVarName, PositiveSeconds, Strict, validate_name

#: where a forwarder takes its pod's identity from by default: the downward-API variables the chart sets
DEFAULT_LABELS_FROM_ENV: dict[str, str] = {"pod": "POD_NAME", "namespace": "POD_NAMESPACE"}


class ForwardConfig(Strict):
    """Forward records to a gateway instead of detecting here."""

    url: str = Field(description="the gateway's push endpoint, e.g. http://goodhart-gateway:10101/v1/records")
    token_env: EnvVarName | None = Field(default=None, description="environment variable holding the bearer token")
    token_file: str | None = Field(default=None, description="file holding the bearer token (e.g. a mounted Secret)")
    ca_file: str | None = Field(default=None, description="CA bundle to verify an https gateway with")
    verify_tls: bool = Field(default=True, description="verify the gateway's TLS certificate")
    compression: Literal["gzip", "none"] = Field(default="gzip", description="Content-Encoding of the batches")
    batch_records: int = Field(default=500, ge=1, le=50_000, description="records per POST at most")
    batch_bytes: int = Field(
        default=512 << 10, ge=1024, le=256 << 20,
        description="uncompressed bytes per POST at most; keep it below the gateway's source.max_body_bytes")
    max_buffer_bytes: int = Field(
        default=256 << 20, ge=4096,
        description="buffered records (bytes) at most; beyond, the oldest are dropped (reason buffer_full)")
    max_buffer_age_seconds: PositiveSeconds = Field(
        default=7 * 86400, description="records buffered longer are dropped (reason too_old)")
    flush_seconds: PositiveSeconds = Field(default=1.0, description="how often the buffer is sent to the gateway")
    timeout_seconds: PositiveSeconds = Field(default=10.0, description="whole time allowed for one POST")
    backoff_initial_seconds: PositiveSeconds = Field(default=1.0, description="first wait after a failed POST")
    backoff_max_seconds: PositiveSeconds = Field(default=60.0, description="longest wait between failed POSTs")
    labels_from_env: dict[str, EnvVarName] = Field(
        default_factory=lambda: dict(DEFAULT_LABELS_FROM_ENV),
        description="label → environment variable (downward API) added to each record's labels when set and"
                    " the record has no such label")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/?#\s]+", value):
            raise ValueError("expected an http:// or https:// URL")
        return value

    @field_validator("labels_from_env")
    @classmethod
    def _label_names(cls, value: dict[str, str]) -> dict[str, str]:
        bad = sorted(k for k in value if not validate_name(k))
        if bad:
            raise ValueError(f"label names must match {NAME_PATTERN}: {', '.join(bad)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ForwardConfig:
        if self.token_env and self.token_file:
            raise ValueError("set at most one of token_env, token_file")
        if self.backoff_initial_seconds > self.backoff_max_seconds:
            raise ValueError("backoff_initial_seconds must not exceed backoff_max_seconds")
        if self.batch_bytes > self.max_buffer_bytes:
            raise ValueError("batch_bytes must not exceed max_buffer_bytes")
        return self
