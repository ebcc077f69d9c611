"""Build the Grafana dashboards in this folder from one small description.

Run ``python dashboards/build.py`` after editing; it rewrites ``goodhart-overview.json``.
``tests/test_dashboards.py`` fails when the committed JSON differs from what this script builds,
so the two cannot drift apart.

The output targets Grafana 10+ file provisioning (and the kube-prometheus-stack sidecar):
every panel and every query names its data source through the ``datasource`` template variable
(no ``${DS_...}`` import inputs, which provisioning never fills in), the uid is fixed so links
survive re-provisioning, and every rate uses ``$__rate_interval``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RUNBOOKS = "https://github.com/goodhart-agent/goodhart-agent/blob/main/docs/runbooks/"

DS: dict[str, str] = {"type": "prometheus", "uid": "${datasource}"}

# Label selectors. Target labels first; the pair labels for per-pair series. `=~".*"` (the
# variables' "All") also matches a label that is absent, so the same queries work outside
# Kubernetes, where there is no namespace or pod label.
TARGET = 'job=~"$job",namespace=~"$namespace",pod=~"$pod",instance=~"$instance"'
PAIR = TARGET + ',proxy=~"$proxy",audit=~"$audit",segment=~"$segment"'
FLEET = 'job=~"$job",namespace=~"$namespace",proxy=~"$proxy",audit=~"$audit",segment=~"$segment"'
PAIR_LEGEND = "{{proxy}} → {{audit}} [{{segment}}]"
FLEET_PREFIX = "namespace_job_proxy_audit_segment:"

STATE_MAPPINGS = [{"type": "value", "options": {
    "0": {"text": "ok", "color": "green", "index": 0},
    "1": {"text": "warn", "color": "yellow", "index": 1},
    "2": {"text": "alarm", "color": "red", "index": 2},
}}]
UP_MAPPINGS = [{"type": "value", "options": {
    "0": {"text": "down", "color": "red", "index": 0},
    "1": {"text": "up", "color": "green", "index": 1},
}}]


def thresholds(*steps: tuple[float | None, str]) -> dict[str, Any]:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for v, c in steps]}


GREEN = thresholds((None, "green"))


def target(expr: str, legend: str = "", ref: str = "A", *, instant: bool = False,
           fmt: str = "time_series") -> dict[str, Any]:
    t: dict[str, Any] = {"datasource": DS, "refId": ref, "expr": expr, "legendFormat": legend or "__auto",
                         "range": not instant, "instant": instant, "format": fmt}
    return t


def timeseries(title: str, description: str, targets: list[dict[str, Any]], *, unit: str = "short",
               th: dict[str, Any] = GREEN, th_style: str = "off", min_: float | None = None,
               max_: float | None = None, overrides: list[dict[str, Any]] | None = None,
               draw: str = "line", stack: bool = False) -> dict[str, Any]:
    custom: dict[str, Any] = {"drawStyle": draw, "lineWidth": 1, "fillOpacity": 10 if stack else 0,
                              "showPoints": "never", "spanNulls": False,
                              "thresholdsStyle": {"mode": th_style},
                              "stacking": {"mode": "normal" if stack else "none", "group": "A"}}
    defaults: dict[str, Any] = {"unit": unit, "thresholds": th, "color": {"mode": "palette-classic"},
                                "custom": custom, "mappings": []}
    if min_ is not None:
        defaults["min"] = min_
    if max_ is not None:
        defaults["max"] = max_
    return {"type": "timeseries", "title": title, "description": description, "datasource": DS,
            "targets": targets, "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
            "options": {"legend": {"showLegend": True, "displayMode": "table", "placement": "bottom",
                                   "calcs": ["lastNotNull", "max"]},
                        "tooltip": {"mode": "multi", "sort": "desc"}}}


def state_timeline(title: str, description: str, targets: list[dict[str, Any]],
                   mappings: list[dict[str, Any]], th: dict[str, Any]) -> dict[str, Any]:
    return {"type": "state-timeline", "title": title, "description": description, "datasource": DS,
            "targets": targets,
            "fieldConfig": {"defaults": {"unit": "none", "mappings": mappings, "thresholds": th,
                                         "color": {"mode": "thresholds"},
                                         "custom": {"fillOpacity": 80, "lineWidth": 0}},
                            "overrides": []},
            "options": {"mergeValues": True, "showValue": "auto", "alignValue": "left",
                        "rowHeight": 0.85, "legend": {"showLegend": False},
                        "tooltip": {"mode": "single", "sort": "none"}}}


def stat(title: str, description: str, targets: list[dict[str, Any]], *, unit: str = "none",
         th: dict[str, Any] = GREEN, mappings: list[dict[str, Any]] | None = None,
         color_mode: str = "background") -> dict[str, Any]:
    return {"type": "stat", "title": title, "description": description, "datasource": DS,
            "targets": targets,
            "fieldConfig": {"defaults": {"unit": unit, "thresholds": th, "mappings": mappings or [],
                                         "color": {"mode": "thresholds"}},
                            "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": color_mode, "graphMode": "none", "textMode": "auto",
                        "justifyMode": "auto", "orientation": "auto"}}


def by_ref(ref: str, props: list[dict[str, Any]]) -> dict[str, Any]:
    return {"matcher": {"id": "byFrameRefID", "options": ref}, "properties": props}


def by_name(name: str, props: list[dict[str, Any]]) -> dict[str, Any]:
    return {"matcher": {"id": "byName", "options": name}, "properties": props}


DASHED = {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}}


def row(title: str) -> dict[str, Any]:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


def pairs_table() -> dict[str, Any]:
    """One line per pair and segment, now: state, gap, statistic, threshold, samples, started, raised."""
    def per_pair(metric: str, scale: str = "") -> str:
        return f"{scale}max by (job, instance, proxy, audit, segment) ({metric}{{{PAIR}}})"

    queries = [
        ("A", "state", per_pair("goodhart_detector_state")),
        ("B", "gap", per_pair("goodhart_divergence_gap")),
        ("C", "statistic", per_pair("goodhart_detector_statistic")),
        ("D", "threshold", per_pair("goodhart_detector_threshold")),
        ("E", "samples", per_pair("goodhart_detector_samples")),
        ("F", "pairs stored", per_pair("goodhart_audited_pairs")),
        # Grafana's date units take milliseconds.
        ("G", "diverging since", per_pair("goodhart_divergence_started_timestamp_seconds", "1000 * ")),
        ("H", "raised at", per_pair("goodhart_divergence_raised_timestamp_seconds", "1000 * ")),
        # Where the reference came from (1 imported from a reference artifact, 0 fitted here) and
        # the audited outputs it was fitted on: a reference newer than a rollout may have absorbed it.
        ("I", "reference",
         f'max by (job, instance, proxy, audit, segment) (goodhart_reference_info{{{PAIR},origin="imported"}})'
         f' or 0 * max by (job, instance, proxy, audit, segment) (goodhart_reference_info{{{PAIR},origin="fitted"}})'),
        ("J", "reference from", per_pair("goodhart_reference_start_timestamp_seconds", "1000 * ")),
        ("K", "reference to", per_pair("goodhart_reference_end_timestamp_seconds", "1000 * ")),
    ]
    rename = {f"Value #{ref}": name for ref, name, _ in queries}
    return {
        "type": "table", "title": "Pairs now",
        "description": "Every proxy → audit pair and segment as of now: detector state, estimated gap "
                       "(audit units; positive = audits below what the proxy promises), decision "
                       "statistic and its alarm threshold, pairs used and stored, when the divergence "
                       "started (estimate) and when its state was raised, and the reference: fitted here "
                       "or imported from a reference artifact, and the time span of the audited outputs it "
                       "was fitted on (empty while warming up).",
        "datasource": DS,
        "targets": [target(e, ref=r, instant=True, fmt="table") for r, _, e in queries],
        "transformations": [
            {"id": "merge", "options": {}},
            {"id": "organize", "options": {"excludeByName": {"Time": True}, "renameByName": rename,
                                           "indexByName": {}}},
        ],
        "fieldConfig": {
            "defaults": {"unit": "none", "thresholds": GREEN, "mappings": [],
                         "custom": {"align": "auto", "cellOptions": {"type": "auto"}}},
            "overrides": [
                by_name("state", [{"id": "mappings", "value": STATE_MAPPINGS},
                                  {"id": "custom.cellOptions", "value": {"type": "color-background"}}]),
                by_name("gap", [{"id": "decimals", "value": 3}]),
                by_name("statistic", [{"id": "decimals", "value": 2}]),
                by_name("threshold", [{"id": "decimals", "value": 2}]),
                by_name("reference", [{"id": "mappings", "value": [{"type": "value", "options": {
                    "0": {"text": "fitted", "index": 0}, "1": {"text": "imported", "index": 1}}}]}]),
                by_name("reference from", [{"id": "unit", "value": "dateTimeAsIso"}]),
                by_name("reference to", [{"id": "unit", "value": "dateTimeAsIso"}]),
                *(by_name(name, [
                    {"id": "unit", "value": "dateTimeAsIso"},
                    {"id": "mappings", "value": [{"type": "value",
                                                  "options": {"0": {"text": "-", "index": 0}}}]}])
                  for name in ("diverging since", "raised at")),
            ],
        },
        "options": {"showHeader": True, "cellHeight": "sm",
                    "sortBy": [{"displayName": "state", "desc": True}]},
    }


def panels() -> list[dict[str, Any]]:
    """(panel, width, height) in reading order; laid out left to right, top to bottom."""
    out: list[tuple[dict[str, Any], int, int]] = []

    def add(p: dict[str, Any], w: int, h: int) -> None:
        out.append((p, w, h))

    add(row("Divergence"), 24, 1)
    add(stat("Pairs in alarm", "Pairs and segments whose detector is in alarm now: this is what pages "
             "(GoodhartProxyAuditDivergence).",
             [target(f"sum(goodhart_divergence_alarm{{{PAIR}}})", "alarm", instant=True)],
             th=thresholds((None, "green"), (1, "red"))), 4, 4)
    add(stat("Pairs in warn", "Pairs and segments in the warn state (a weak signal, or a detector still "
             "fitting its reference). Warn never pages.",
             [target(f"sum(goodhart_detector_state{{{PAIR}}} == bool 1)", "warn", instant=True)],
             th=thresholds((None, "green"), (1, "yellow"))), 4, 4)
    add(stat("Agents", "Agent replicas reporting, by version.",
             [target(f"count by (version) (goodhart_build_info{{{TARGET}}})", "{{version}}", instant=True)],
             th=thresholds((None, "red"), (1, "green"))), 4, 4)
    add(stat("Fleet z (worst)", "Lowest fleet-pooled z over the last hour (recording rules, all replicas of a "
             "service together). Below -4 with a large enough effect raises GoodhartAuditQualityDrop.",
             [target(f"min({FLEET_PREFIX}goodhart_pair_residual:zscore1h{{{FLEET}}})", "z", instant=True)],
             unit="none", th=thresholds((None, "red"), (-4, "yellow"), (-2, "green"))), 4, 4)
    add(stat("Firing Goodhart alerts", "Goodhart alerts firing now in this Prometheus.",
             [target('count(ALERTS{alertname=~"Goodhart.*",alertstate="firing"}) or vector(0)', "firing",
                     instant=True)],
             th=thresholds((None, "green"), (1, "red"))), 8, 4)
    add(state_timeline("Alarm state per pair and segment",
                       "Detector state over time for every proxy → audit pair and segment "
                       "(worst across the selected replicas): ok, warn, alarm.",
                       [target(f"max by (proxy, audit, segment) (goodhart_detector_state{{{PAIR}}})",
                               PAIR_LEGEND)],
                       STATE_MAPPINGS, thresholds((None, "green"), (1, "yellow"), (2, "red"))), 24, 7)
    add(pairs_table(), 24, 7)
    add(timeseries("Proxy vs audit (window means)",
                   "Window means of each proxy (left axis, its raw units) and each audit (right axis, "
                   "audit units). Goodhart looks like the proxy climbing while the audit stays flat or "
                   "falls.",
                   [target(f'avg by (proxy, segment) (goodhart_proxy_mean{{{TARGET},proxy=~"$proxy",'
                           f'segment=~"$segment"}})', "proxy {{proxy}} [{{segment}}]", "A"),
                    target(f'avg by (audit, segment) (goodhart_audit_mean{{{TARGET},audit=~"$audit",'
                           f'segment=~"$segment"}})', "audit {{audit}} [{{segment}}]", "B")],
                   overrides=[by_ref("B", [{"id": "custom.axisPlacement", "value": "right"},
                                           {"id": "custom.axisLabel", "value": "audit"}]),
                              by_ref("A", [{"id": "custom.axisLabel", "value": "proxy"}])]), 12, 8)
    add(timeseries("Gap with its interval",
                   "Estimated gap in audit units: what the reference relation predicts from the proxy "
                   "minus the audited quality observed (positive = audits below the proxy's promise), "
                   "with its interval (dashed).",
                   [target(f"goodhart_divergence_gap{{{PAIR}}}", "gap " + PAIR_LEGEND, "A"),
                    target(f"goodhart_divergence_gap_lower{{{PAIR}}}", "lower " + PAIR_LEGEND, "B"),
                    target(f"goodhart_divergence_gap_upper{{{PAIR}}}", "upper " + PAIR_LEGEND, "C")],
                   th=thresholds((None, "transparent"), (0, "red")), th_style="line",
                   overrides=[by_ref("B", [DASHED]), by_ref("C", [DASHED])]), 12, 8)
    add(timeseries("Statistic vs threshold",
                   "The detector's decision statistic against its warn and alarm thresholds (dashed). "
                   "The pair alarms when the statistic crosses the alarm threshold.",
                   [target(f"goodhart_detector_statistic{{{PAIR}}}", "statistic " + PAIR_LEGEND, "A"),
                    target(f"goodhart_detector_threshold{{{PAIR}}}", "alarm threshold " + PAIR_LEGEND, "B"),
                    target(f"goodhart_detector_warn_threshold{{{PAIR}}}", "warn threshold " + PAIR_LEGEND,
                           "C")],
                   overrides=[by_ref("B", [DASHED, {"id": "color", "value": {"mode": "fixed",
                                                                             "fixedColor": "red"}}]),
                              by_ref("C", [DASHED, {"id": "color", "value": {"mode": "fixed",
                                                                             "fixedColor": "yellow"}}])]),
        12, 8)
    add(timeseries("Rank correlation: now vs reference",
                   "Spearman correlation between proxy and audit over the current window (solid) and in "
                   "the reference (dashed). A proxy that stops tracking quality loses correlation.",
                   [target(f'goodhart_rank_correlation{{{PAIR},period="window"}}', "window " + PAIR_LEGEND, "A"),
                    target(f'goodhart_rank_correlation{{{PAIR},period="reference"}}', "reference " + PAIR_LEGEND,
                           "B")],
                   min_=-1, max_=1, overrides=[by_ref("B", [DASHED])]), 12, 8)
    add(timeseries("Proxy validity",
                   "How much each proxy is still worth for its audit over the newest audited pairs: ROC AUC "
                   "for a binary audit (0.5 = a coin) or Spearman for a score (0 = worthless). A gamed proxy "
                   "decays toward worthless. Dashed, right axis: pairs it was computed over.",
                   [target(f"goodhart_proxy_validity{{{PAIR}}}", "{{kind}} " + PAIR_LEGEND, "A"),
                    target(f"goodhart_proxy_validity_pairs{{{PAIR}}}", "pairs " + PAIR_LEGEND, "B")],
                   overrides=[by_ref("B", [DASHED, {"id": "custom.axisPlacement", "value": "right"},
                                           {"id": "min", "value": 0}])]), 8, 8)
    add(timeseries("Fleet z (pooled across replicas)",
                   "z statistic of the mean residual (audit minus reference prediction) pooled over every "
                   "replica of a service in the last hour, from the agents' sufficient-statistic counters "
                   "(recording rules). Negative = audits below what the proxy promises.",
                   [target(f"{FLEET_PREFIX}goodhart_pair_residual:zscore1h{{{FLEET}}}",
                           "{{job}} " + PAIR_LEGEND)],
                   th=thresholds((None, "red"), (-4, "transparent")), th_style="dashed"), 8, 8)
    add(timeseries("Fleet effect size and pooled pairs",
                   "Pooled mean residual in residual standard deviations (left; -0.25 is the alert's "
                   "effect floor) and the pooled number of audited pairs in the hour (right).",
                   [target(f"{FLEET_PREFIX}goodhart_pair_residual:effect1h{{{FLEET}}}",
                           "effect {{job}} " + PAIR_LEGEND, "A"),
                    target(f"{FLEET_PREFIX}goodhart_pair_audited:increase1h{{{FLEET}}}",
                           "pairs/h {{job}} " + PAIR_LEGEND, "B")],
                   th=thresholds((None, "red"), (-0.25, "transparent")), th_style="dashed",
                   overrides=[by_ref("B", [{"id": "custom.axisPlacement", "value": "right"},
                                           {"id": "custom.thresholdsStyle", "value": {"mode": "off"}},
                                           {"id": "custom.axisLabel", "value": "pairs"}])]), 8, 8)

    add(row("Audits"), 24, 1)
    add(timeseries("Audit flow",
                   "Audits queued for judges and graders, succeeded, failed for good, retried and skipped "
                   "(budget, full queue), by reason; late labels joined to their outputs and expired unjoined "
                   "(by kind).",
                   [target(f"sum by (audit) (rate(goodhart_audits_requested_total{{{TARGET},audit=~\"$audit\"}}"
                           "[$__rate_interval]))", "requested {{audit}}", "A"),
                    target(f"sum by (audit) (rate(goodhart_audits_succeeded_total{{{TARGET},audit=~\"$audit\"}}"
                           "[$__rate_interval]))", "succeeded {{audit}}", "B"),
                    target(f"sum by (audit, reason) (rate(goodhart_audits_failed_total{{{TARGET},"
                           "audit=~\"$audit\"}[$__rate_interval]))", "failed {{audit}} ({{reason}})", "C"),
                    target(f"sum by (audit, reason) (rate(goodhart_audit_retries_total{{{TARGET},"
                           "audit=~\"$audit\"}[$__rate_interval]))", "retried {{audit}} ({{reason}})", "D"),
                    target(f"sum by (audit, reason) (rate(goodhart_audits_skipped_total{{{TARGET},"
                           "audit=~\"$audit\"}[$__rate_interval]))", "skipped {{audit}} ({{reason}})", "E"),
                    target(f"sum(rate(goodhart_labels_joined_total{{{TARGET}}}[$__rate_interval]))",
                           "labels joined", "F"),
                    target(f"sum by (kind) (rate(goodhart_labels_expired_total{{{TARGET}}}[$__rate_interval]))",
                           "expired {{kind}}", "G")],
                   unit="cps", min_=0), 12, 8)
    add(timeseries("Waiting to be joined, and pairs held",
                   "Outputs waiting for their labels and labels that arrived before their output (left); "
                   "audited pairs stored and used by the detector for the whole stream (right).",
                   [target(f"sum(goodhart_pending_outputs{{{TARGET}}})", "outputs waiting for labels", "A"),
                    target(f"sum(goodhart_pending_labels{{{TARGET}}})", "labels waiting for outputs", "B"),
                    target(f'max by (proxy, audit) (goodhart_audited_pairs{{{PAIR}}})',
                           "stored {{proxy}} → {{audit}}", "C"),
                    target(f'max by (proxy, audit) (goodhart_detector_samples{{{PAIR}}})',
                           "used {{proxy}} → {{audit}}", "D")],
                   min_=0, overrides=[by_ref("C", [{"id": "custom.axisPlacement", "value": "right"}]),
                                      by_ref("D", [{"id": "custom.axisPlacement", "value": "right"},
                                                   DASHED])]), 12, 8)
    add(timeseries("Audit latency",
                   "Median and 95th percentile time to obtain one audit from a judge or grader.",
                   [target(f"histogram_quantile(0.5, sum by (le, audit) (rate(goodhart_audit_latency_seconds_bucket"
                           f"{{{TARGET},audit=~\"$audit\"}}[$__rate_interval])))", "p50 {{audit}}", "A"),
                    target(f"histogram_quantile(0.95, sum by (le, audit) (rate(goodhart_audit_latency_seconds_bucket"
                           f"{{{TARGET},audit=~\"$audit\"}}[$__rate_interval])))", "p95 {{audit}}", "B")],
                   unit="s", min_=0), 8, 8)
    add(timeseries("Audit budget",
                   "Audits the budget still allows in each budget window (token bucket level), against the "
                   "window's capacity (dashed). At zero, sampled outputs are skipped and the detector starves.",
                   [target(f"sum by (audit, window) (goodhart_audit_budget_remaining{{{TARGET},audit=~\"$audit\"}})",
                           "remaining {{audit}} ({{window}})", "A"),
                    target(f"sum by (audit, window) (goodhart_audit_budget_capacity{{{TARGET},audit=~\"$audit\"}})",
                           "capacity {{audit}} ({{window}})", "B")],
                   min_=0, th=thresholds((None, "red"), (0.000001, "transparent")), th_style="line",
                   overrides=[by_ref("B", [DASHED])]), 8, 8)
    add(timeseries("Judge spend",
                   "Judge tokens per second by kind (left) and audit cost per hour in the configured cost "
                   "unit (right).",
                   [target(f"sum by (audit, kind) (rate(goodhart_judge_tokens_total{{{TARGET},audit=~\"$audit\"}}"
                           "[$__rate_interval]))", "tokens {{audit}} {{kind}}", "A"),
                    target(f"3600 * sum by (audit) (rate(goodhart_audit_cost_total{{{TARGET},audit=~\"$audit\"}}"
                           "[$__rate_interval]))", "cost/h {{audit}}", "B")],
                   unit="cps", min_=0,
                   overrides=[by_ref("B", [{"id": "custom.axisPlacement", "value": "right"},
                                           {"id": "unit", "value": "short"}])]), 8, 8)

    add(timeseries("Audit queue and circuit breaker",
                   "Audits queued and not finished (left), and 1 while an audit's circuit breaker holds "
                   "requests back from a failing judge or grader (right).",
                   [target(f"sum by (audit) (goodhart_audit_queue_depth{{{TARGET},audit=~\"$audit\"}})",
                           "queued {{audit}}", "A"),
                    target(f"max by (audit) (goodhart_audit_circuit_open{{{TARGET},audit=~\"$audit\"}})",
                           "circuit open {{audit}}", "B")],
                   min_=0, overrides=[by_ref("B", [{"id": "custom.axisPlacement", "value": "right"},
                                                   {"id": "max", "value": 1}, {"id": "unit", "value": "bool"}])]),
        24, 7)

    add(row("Records"), 24, 1)
    add(timeseries("Records read and rejected",
                   "Records read per second by source, and rejected per second by reason.",
                   [target(f"sum by (source) (rate(goodhart_records_total{{{TARGET}}}[$__rate_interval]))",
                           "read {{source}}", "A"),
                    target(f"sum by (reason) (rate(goodhart_records_rejected_total{{{TARGET}}}"
                           "[$__rate_interval]))", "rejected {{reason}}", "B")],
                   unit="cps", min_=0), 12, 8)
    add(timeseries("Rejected share",
                   "Share of the records read that were rejected. GoodhartHighRejectionRate fires above 5 % "
                   "sustained.",
                   [target(f"sum(rate(goodhart_records_rejected_total{{{TARGET}}}[$__rate_interval])) / "
                           f"sum(rate(goodhart_records_total{{{TARGET}}}[$__rate_interval]))", "rejected")],
                   unit="percentunit", min_=0, th=thresholds((None, "transparent"), (0.05, "red")),
                   th_style="line"), 6, 8)
    add(timeseries("Last record",
                   "Seconds since the newest record's timestamp, per source (record time, which a replay "
                   "or a late batch can put far from now).",
                   [target(f"time() - max by (source) (goodhart_last_record_timestamp_seconds{{{TARGET}}})",
                           "{{source}}")],
                   unit="s"), 6, 8)

    add(timeseries("Computed proxy failures",
                   "Records whose computed proxy could not be computed (the record went on without it), "
                   "per second, by proxy and reason.",
                   [target(f"sum by (proxy, reason) (rate(goodhart_metric_failures_total{{{TARGET},"
                           "proxy=~\"$proxy\"}[$__rate_interval]))", "{{proxy}} ({{reason}})")],
                   unit="cps", min_=0), 12, 7)
    add({"type": "table", "title": "Proxy models",
         "description": "The models that compute proxies: version (from the config, else the file's hash) and "
                        "the SHA-256 of the model file, per replica. A version change is a change to rebaseline "
                        "for, or to roll back.",
         "datasource": DS,
         "targets": [target(f"max by (job, instance, proxy, version, sha256) (goodhart_proxy_model_info{{{TARGET},"
                            "proxy=~\"$proxy\"})", instant=True, fmt="table")],
         "transformations": [{"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True},
                                                            "renameByName": {}, "indexByName": {}}}],
         "fieldConfig": {"defaults": {"unit": "none", "thresholds": GREEN, "mappings": [],
                                      "custom": {"align": "auto", "cellOptions": {"type": "auto"}}},
                         "overrides": []},
         "options": {"showHeader": True, "cellHeight": "sm"}}, 12, 7)

    add(timeseries("Configured fields absent",
                   "Share of records (with an id) that lack each configured field path, by kind (proxy, audit, "
                   "segment) and name. Near 1 for a proxy or the segment: check the path for a typo (the agent "
                   "also logs it once after 1,000 records). Audits are often rare: they arrive as late labels.",
                   [target(f"sum by (kind, name) (rate(goodhart_field_absent_total{{{TARGET}}}[$__rate_interval]))"
                           f" / ignoring (kind, name) group_left sum(rate(goodhart_field_checked_total{{{TARGET}}}"
                           "[$__rate_interval]))", "{{kind}} {{name}}")],
                   unit="percentunit", min_=0), 24, 6)

    add(row("Health"), 24, 1)
    add(state_timeline("Source, judge and store health",
                       "Reachability of the record source, each judge and grader, and the store.",
                       [target(f"min by (component) (goodhart_up{{{TARGET}}})", "{{component}}")],
                       UP_MAPPINGS, thresholds((None, "red"), (1, "green"))), 12, 7)
    add(timeseries("Source errors",
                   "Errors reading the source per second, by reason; with an otlp source also the spans and "
                   "log records received but skipped (not GenAI, not an evaluation); with a Langfuse pull "
                   "source the scores read but skipped (categorical, text, nothing to join on); and proxy or "
                   "audit values kept out of the detectors as implausible (docs/hardening.md).",
                   [target(f"sum by (reason) (rate(goodhart_source_errors_total{{{TARGET}}}[$__rate_interval]))",
                           "{{reason}}", "A"),
                    target(f"sum by (reason) (rate(goodhart_otlp_spans_skipped_total{{{TARGET}}}"
                           "[$__rate_interval]))", "spans skipped: {{reason}}", "B"),
                    target(f"sum by (reason) (rate(goodhart_otlp_log_records_skipped_total{{{TARGET}}}"
                           "[$__rate_interval]))", "log records skipped: {{reason}}", "C"),
                    target(f"sum by (reason) (rate(goodhart_langfuse_scores_skipped_total{{{TARGET}}}"
                           "[$__rate_interval]))", "Langfuse scores skipped: {{reason}}", "D"),
                    target(f"sum by (kind, metric) (rate(goodhart_implausible_values_total{{{TARGET}}}"
                           "[$__rate_interval]))", "implausible {{kind}} {{metric}}", "E")],
                   unit="cps", min_=0), 12, 7)
    add(timeseries("Scheduled jobs: last duration",
                   "Duration of the last run of each scheduled job (its name is the task label).",
                   [target(f"max by (task) (goodhart_job_last_duration_seconds{{{TARGET}}})",
                           "{{task}}")],
                   unit="s", min_=0), 8, 7)
    add(timeseries("Scheduled jobs: runs and errors",
                   "Runs per second of each scheduled job, and failed runs (GoodhartJobFailing).",
                   [target(f"sum by (task) (rate(goodhart_job_runs_total{{{TARGET}}}[$__rate_interval]))",
                           "runs {{task}}", "A"),
                    target(f"sum by (task) (rate(goodhart_job_errors_total{{{TARGET}}}"
                           "[$__rate_interval]))", "errors {{task}}", "B")],
                   unit="cps", min_=0), 8, 7)
    add(timeseries("Store size and exported segments",
                   "Size of the agent's SQLite store on disk; and the segments whose series /metrics exports and "
                   "those left out by segments.max_exported (detection runs on all; docs/metrics.md, Series "
                   "budget).",
                   [target(f"max by (instance) (goodhart_store_size_bytes{{{TARGET}}})", "{{instance}}", "A"),
                    target(f"max by (instance) (goodhart_segments_exported{{{TARGET}}})",
                           "segments exported {{instance}}", "B"),
                    target(f"max by (instance) (goodhart_segments_left_out{{{TARGET}}})",
                           "segments left out {{instance}}", "C")],
                   unit="bytes", min_=0,
                   overrides=[by_ref(ref, [{"id": "unit", "value": "short"},
                                           {"id": "custom.axisPlacement", "value": "right"}]) for ref in "BC"]),
        8, 7)
    add(timeseries("Config problems (never-down sidecars)",
                   "Problems found at the last attempt to load each agent's config, and attempts per second "
                   "while a never-down sidecar serves without one (GoodhartConfigInvalid). 0 problems: the "
                   "agent runs its config. The log and /readyz name the key paths.",
                   [target(f"max by (instance) (goodhart_config_problems{{{TARGET}}})", "problems {{instance}}",
                           "A"),
                    target(f"sum by (instance) (rate(goodhart_config_attempts_total{{{TARGET}}}"
                           "[$__rate_interval]))", "attempts/s {{instance}}", "B")],
                   min_=0), 12, 7)
    add(timeseries("HTTP listeners: errors and dropped connections",
                   "Error answers per second by status (431 headers too large, 411/400 unframed or badly framed "
                   "bodies, 503 over limits.max_connections...), connections dropped by reason (timeout: a "
                   "slow client; disconnect; over_limit), and open connections (docs/hardening.md).",
                   [target(f"sum by (status) (rate(goodhart_http_errors_total{{{TARGET}}}[$__rate_interval]))",
                           "{{status}}", "A"),
                    target(f"sum by (reason) (rate(goodhart_http_connections_dropped_total{{{TARGET}}}"
                           "[$__rate_interval]))", "dropped {{reason}}", "B"),
                    target(f"max by (instance) (goodhart_http_connections_open{{{TARGET}}})",
                           "open {{instance}}", "C")],
                   unit="cps", min_=0,
                   overrides=[by_ref("C", [{"id": "unit", "value": "short"},
                                           {"id": "custom.axisPlacement", "value": "right"}])]), 12, 7)

    add(row("Fleet forwarding"), 24, 1)
    add(timeseries("Forwarded and dropped records",
                   "Fleet mode (docs/fleet.md): records per second each forwarder delivered to the gateway (202), "
                   "and records it dropped before delivery, by reason (GoodhartForwarderDroppingRecords).",
                   [target(f"sum by (pod, instance) (rate(goodhart_forward_records_total{{{TARGET}}}"
                           "[$__rate_interval]))", "delivered {{pod}} {{instance}}", "A"),
                    target(f"sum by (reason) (rate(goodhart_forward_dropped_records_total{{{TARGET}}}"
                           "[$__rate_interval]))", "dropped {{reason}}", "B"),
                    target(f"sum(rate(goodhart_forward_batches_total{{{TARGET}}}[$__rate_interval]))",
                           "batches", "C")],
                   unit="cps", min_=0), 8, 7)
    add(timeseries("Forward send failures",
                   "Sends the gateway did not accept, per second, by reason; the records stay buffered and are "
                   "sent again with backoff. goodhart_up{component=\"gateway\"} is in the health row.",
                   [target(f"sum by (reason) (rate(goodhart_forward_send_failures_total{{{TARGET}}}"
                           "[$__rate_interval]))", "{{reason}}")],
                   unit="cps", min_=0), 8, 7)
    add(timeseries("Forward buffer",
                   "Records and bytes waiting in each forwarder's durable buffer, and how long the oldest has "
                   "waited (GoodhartForwardingBehind above 15 minutes).",
                   [target(f"max by (pod, instance) (goodhart_forward_buffer_oldest_age_seconds{{{TARGET}}})",
                           "oldest {{pod}} {{instance}}", "A"),
                    target(f"sum(goodhart_forward_buffer_records{{{TARGET}}})", "records (all)", "B"),
                    target(f"sum(goodhart_forward_buffer_bytes{{{TARGET}}})", "bytes (all)", "C")],
                   unit="s", min_=0,
                   overrides=[by_ref("B", [{"id": "unit", "value": "short"},
                                           {"id": "custom.axisPlacement", "value": "right"}]),
                              by_ref("C", [{"id": "unit", "value": "bytes"},
                                           {"id": "custom.axisPlacement", "value": "right"}])]), 8, 7)

    placed: list[dict[str, Any]] = []
    x = y = row_h = 0
    for pid, (p, w, h) in enumerate(out, start=1):
        if x + w > 24:
            x, y, row_h = 0, y + row_h, 0
        p = {"id": pid, "gridPos": {"x": x, "y": y, "w": w, "h": h}, **p}
        placed.append(p)
        x += w
        row_h = max(row_h, h)
    return placed


def variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {"type": "query", "name": name, "label": label, "datasource": DS,
            "definition": query, "query": {"query": query, "refId": f"{name}-variable"},
            "refresh": 2, "sort": 1, "includeAll": True, "multi": True, "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "options": [], "regex": "", "hide": 0}


def overview() -> dict[str, Any]:
    templating = [
        {"type": "datasource", "name": "datasource", "label": "Data source", "query": "prometheus",
         "current": {}, "options": [], "refresh": 1, "regex": "", "hide": 0, "includeAll": False,
         "multi": False},
        variable("job", "job", "label_values(goodhart_build_info, job)"),
        variable("namespace", "namespace", 'label_values(goodhart_build_info{job=~"$job"}, namespace)'),
        variable("pod", "pod", 'label_values(goodhart_build_info{job=~"$job",namespace=~"$namespace"}, pod)'),
        variable("instance", "instance",
                 'label_values(goodhart_build_info{job=~"$job",namespace=~"$namespace",pod=~"$pod"}, instance)'),
        variable("proxy", "proxy", f"label_values(goodhart_divergence_alarm{{{TARGET}}}, proxy)"),
        variable("audit", "audit", f'label_values(goodhart_divergence_alarm{{{TARGET},proxy=~"$proxy"}}, audit)'),
        variable("segment", "segment",
                 f'label_values(goodhart_divergence_alarm{{{TARGET},proxy=~"$proxy",audit=~"$audit"}}, segment)'),
    ]
    return {
        "uid": "goodhart-overview",
        "title": "Goodhart agent / Overview",
        "description": "Is each proxy metric still tracking audited quality? Detector state, gap, "
                       "statistic, correlation, fleet-pooled evidence, and the health of what feeds them.",
        "tags": ["goodhart-agent"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "1m",
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "links": [{"type": "link", "title": "Runbooks", "url": RUNBOOKS, "targetBlank": True,
                   "icon": "doc", "tooltip": "What each Goodhart alert means and what to do",
                   "asDropdown": False, "includeVars": False, "keepTime": False, "tags": []}],
        "annotations": {"list": [
            {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
             "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts",
             "type": "dashboard"},
            {"name": "Goodhart divergence", "datasource": DS, "enable": True, "hide": False,
             "iconColor": "red",
             "expr": 'ALERTS{alertname="GoodhartProxyAuditDivergence",alertstate="firing"}',
             "step": "60s", "titleFormat": "Divergence {{proxy}} → {{audit}} [{{segment}}]",
             "textFormat": "{{job}} {{instance}}", "tagKeys": "proxy,audit,segment",
             "useValueForTime": False},
        ]},
        "templating": {"list": templating},
        "panels": panels(),
    }


DASHBOARDS = {"goodhart-overview.json": overview}


def render(builder: Any) -> str:
    return json.dumps(builder(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    """Write every dashboard; with ``--check``, only report (exit 1) which ones are stale."""
    stale = []
    for name, builder in DASHBOARDS.items():
        path = HERE / name
        text = render(builder)
        if "--check" in argv:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
    for name in stale:
        print(f"{name} is out of date: run python dashboards/build.py", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
