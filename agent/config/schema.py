"""The config's top level and its small sections: proxies, audits, segments, schedule, retention,
limits, detection, log, api, and the cross-key checks on the whole (unique names, stratify's proxy).

The bigger sections live in their own modules: ``sources``, ``compute``, ``audits``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from agent.config.audits import AuditSamplingConfig, HttpGraderConfig, LlmJudgeConfig
from agent.config.base import DEFAULT_LISTEN, DottedPath, Name, PositiveSeconds, Strict, check_listen
from agent.config.compute import ComputeConfig, compute_errors_at_their_keys
from agent.config.forward import ForwardConfig
from agent.config.sources import SourceConfig


class ProxyConfig(Strict):
    name: Name = Field(description="the proxy's name, used as a label value")
    field: DottedPath | None = Field(default=None,
                                     description="field path (dotted or JSON Pointer) to a number in the record")
    compute: ComputeConfig | None = Field(default=None, description="or: computed from the record (see the cookbook)")
    direction: Literal["higher", "lower"] = Field("higher", description="which way the proxy calls better")

    _compute_keys = field_validator("compute", mode="wrap")(compute_errors_at_their_keys)

    @model_validator(mode="after")
    def _field_or_compute(self) -> ProxyConfig:
        if (self.field is None) == (self.compute is None):
            raise ValueError("set exactly one of field, compute")
        return self


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
    field: DottedPath = Field(description="field path (dotted or JSON Pointer) of the segment label")
    max_values: int = Field(20, ge=1, le=1000, description="distinct values before folding into 'other'")
    max_exported: int | None = Field(
        50, ge=0, le=1000, description="segments whose per-pair series /metrics exports, at most (null: all); "
        "those in alarm always, then warn, then most audited pairs held; detection runs on every segment")


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
    max_future_seconds: float = Field(
        86400, gt=0, description="records stamped further ahead of the wall clock are rejected as bad_timestamp "
        "(as are those before 2000-01-01)")
    header_timeout_seconds: float = Field(
        10, gt=0, le=300, description="a client must send its request line and headers within this; else dropped")
    body_timeout_seconds: float = Field(
        30, gt=0, le=3600, description="a client must send its whole body within this; else dropped")
    idle_timeout_seconds: float = Field(
        30, gt=0, le=3600, description="a keep-alive connection waiting longer for its next request is closed")
    max_header_bytes: int = Field(
        16384, ge=1024, le=1 << 20, description="request line plus headers; larger ones are answered 431")
    max_connections: int = Field(
        64, ge=2, le=10_000, description="open connections per listener; more are answered 503 and closed at once")


class ReferenceSpanConfig(Strict):
    start: float = Field(description="output time (unix seconds) from which audited outputs form the reference")
    end: float = Field(description="output time (unix seconds) up to which they do; the reference is fitted at "
                                   "the first audited output after it")

    @model_validator(mode="after")
    def _ordered(self) -> ReferenceSpanConfig:
        if not self.end > self.start:
            raise ValueError("end must be after start")
        return self


class DetectionConfig(Strict):
    detector: Literal["decoupling", "placeholder"] = Field(
        "decoupling", description="decoupling: the real detector; placeholder: for testing the pipeline")
    audits_between_false_alarms: float = Field(
        100_000, ge=100, description="expected audits between false alarms, whole deployment")
    reference_pairs: int = Field(200, ge=20, description="audited pairs that form the reference")
    reference_span: ReferenceSpanConfig | None = Field(
        default=None, description="an explicit reference span for every pair and segment, instead of the first "
        "reference_pairs audited outputs (it needs 20 of them; a rebaseline goes back to reference_pairs)")
    shift: float = Field(1.0, gt=0, le=5, description="design shift of the CUSUMs, in residual standard deviations")
    binary_shift: float = Field(
        0.3, gt=0, le=1, description="design drop in pass rate of the level CUSUM for 0/1 (pass/fail) audits")
    warn_ratio: float = Field(0.01, gt=0, lt=1, description="warn fires at this fraction of the alarm's run length")
    window: int = Field(200, ge=20, le=100_000, description="recent audited pairs behind gap and rank correlation")
    implausible_spread_multiple: float = Field(
        50, ge=0, description="a proxy or audit value further than this many robust spreads from the metric's "
        "recent values is counted (goodhart_implausible_values_total) and kept out of the detectors; 0: off")
    window_seconds: PositiveSeconds = Field(3600, description="window of the exported proxy/audit means")
    validity_pairs: int = Field(default=1000, ge=20, le=100_000,
                                description="newest audited pairs per pair that goodhart_proxy_validity uses")
    reference_file: str | None = Field(
        default=None, description="a reference artifact (`goodhart-agent reference export`): its pairs start from "
        "it instead of warming up; applied once per file to each pair, so a rebaseline is not undone by a restart")


class LogConfig(Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level")
    format: Literal["json", "text"] = Field(
        "json", description="json: one object per line on stdout; text: for a terminal")

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class EvidenceConfig(Strict):
    max_items: int = Field(
        50, ge=1, le=1000,
        description="audited outputs listed per pair by /v1/evidence, the CLI and the report, at most")
    keep_text: bool = Field(
        False, description="keep short excerpts of each output's input and output text for the evidence "
                           "(off: no text is stored; leave off where outputs are privacy-sensitive)")
    excerpt_chars: int = Field(200, ge=20, le=4000, description="characters kept of each excerpt")
    input_field: DottedPath = Field("input", description="path of the input text in a record (keep_text)")
    output_field: DottedPath = Field("output", description="path of the output text in a record (keep_text)")
    history_seconds: PositiveSeconds = Field(
        60.0, description="a pair's verdict is recorded for the report's plots at most this often (and at every "
                          "state change)")
    max_history: int = Field(100_000, ge=1000, description="recorded verdicts kept, all pairs together")


class ApiConfig(Strict):
    allow_remote_rebaseline: bool = Field(False, description="accept POST /v1/rebaseline from non-loopback")


class Config(Strict):
    source: SourceConfig | None = None
    sources: list[SourceConfig] | None = Field(
        default=None, min_length=1, description="several sources, each with a unique name (instead of source)")
    forward: ForwardConfig | None = Field(
        default=None, description="when set, this agent is a forwarder to a gateway (docs/fleet.md)")
    id_field: DottedPath = Field("id", description="field path (dotted or JSON Pointer) of the record id")
    ts_field: DottedPath = Field("ts", description="field path (dotted or JSON Pointer) of the record time")
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
    evidence: EvidenceConfig = EvidenceConfig()

    _listen_ok = field_validator("listen")(check_listen)

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

    @model_validator(mode="after")
    def _one_source_form(self) -> Config:
        if self.source is not None and self.sources is not None:
            raise ValueError("set at most one of source, sources")
        names = [s.source_name for s in self.sources or []]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"sources: names must be unique (set name: on each): {', '.join(dupes)}")
        shared = [(s.type, s.source_name) for s in self.sources or [] if s.listen == "shared"]
        kinds = [kind for kind, _ in shared]
        if len(kinds) != len(set(kinds)):
            raise ValueError("sources: at most one source of each type may listen on 'shared'")
        return self

    @property
    def source_list(self) -> list[SourceConfig]:
        """Every configured source: ``sources``, or ``source`` as a one-item list (empty for replay-only configs)."""
        if self.sources is not None:
            return list(self.sources)
        return [self.source] if self.source is not None else []

    @property
    def pair_count(self) -> int:
        return len(self.proxies) * len(self.audits)
