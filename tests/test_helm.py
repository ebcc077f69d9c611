"""The Helm chart ``helm/goodhart-agent``, rendered by Helm's own engine (helm-python-sdk).

Every mode and option set renders; the result lints clean; every built-in object is valid under
kubernetes-validate --strict for Kubernetes 1.29 and the newest bundled version; the PrometheusRule
passes ``promtool check rules``; bad values are rejected by the schema with a message that names
the key; the agent accepts the rendered config (``goodhart-agent check-config``); the chart's copies
of the rules and dashboards equal their sources.

Offline rendering reports Kubernetes v1.36.0 and no extra API versions, so the capability-gated
objects (PodMonitor, ServiceMonitor, PrometheusRule) are tested through their explicit ``true``
override, and ``auto`` is tested to render nothing. Tools missing: skipped locally, failed in CI.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml

try:
    import helm_python
except ImportError:  # reported by the `helm` fixture
    helm_python = None  # type: ignore[assignment]
try:
    import kubernetes_validate
except ImportError:  # reported by the `kv` fixture
    kubernetes_validate = None  # type: ignore[assignment]

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "goodhart-agent"
EXAMPLES = CHART / "examples"
RULES_SOURCE = ROOT / "rules" / "goodhart-rules.yml"
DASHBOARDS_SOURCE = ROOT / "dashboards"
RELEASE, NAMESPACE = "rel", "goodhart"
DIVERGENCE_ALERT = "GoodhartProxyAuditDivergence"
IN_CI = os.environ.get("CI", "").lower() == "true"


def tool_missing(what: str) -> NoReturn:
    """A missing tool fails the run in CI (CI=true) and skips the test locally."""
    message = f"{what} is not available"
    if IN_CI:
        pytest.fail(message + " (CI=true: install it, see pyproject's test extra and .ci/run)")
    pytest.skip(message)


# --- fixtures -------------------------------------------------------------------------------------

PLACEHOLDER_RULES = """\
groups:
  - name: goodhart-agent.alerts
    rules:
      - alert: GoodhartProxyAuditDivergence
        expr: goodhart_divergence_alarm == 1
        for: 5m
        labels:
          severity: critical
        annotations:
          summary: Proxy metric improves while audited quality does not.
          description: "{{ $labels.proxy }} vs {{ $labels.audit }}"
          runbook_url: https://example.invalid/runbook
"""
PLACEHOLDER_DASHBOARD = '{"title": "goodhart placeholder", "uid": "goodhart-placeholder", "panels": []}\n'


@pytest.fixture(scope="session")
def helm() -> Any:
    if helm_python is None:
        tool_missing("helm-python-sdk (import helm_python)")
    return helm_python


@pytest.fixture(scope="session")
def kv() -> Any:
    if kubernetes_validate is None:
        tool_missing("kubernetes-validate")
    return kubernetes_validate


@pytest.fixture(scope="session")
def chart_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the chart whose files/ holds the rules and dashboards.

    The chart's own copies are used when present (test_chart_files_match_sources keeps them equal
    to their sources); a placeholder stands in, in this copy only, while a source does not exist
    yet, so that every template can still be rendered.
    """
    target = tmp_path_factory.mktemp("chart") / "goodhart-agent"
    shutil.copytree(CHART, target)
    rules = target / "files" / "goodhart-rules.yml"
    if not rules.exists():
        rules.parent.mkdir(parents=True, exist_ok=True)
        rules.write_text(RULES_SOURCE.read_text() if RULES_SOURCE.exists() else PLACEHOLDER_RULES)
    dashboards = target / "files" / "dashboards"
    if not list(dashboards.glob("*.json")):
        dashboards.mkdir(parents=True, exist_ok=True)
        sources = sorted(DASHBOARDS_SOURCE.glob("*.json"))
        for src in sources:
            shutil.copyfile(src, dashboards / src.name)
        if not sources:
            (dashboards / "goodhart-placeholder.json").write_text(PLACEHOLDER_DASHBOARD)
    return target


@pytest.fixture(scope="session")
def chart(helm: Any, chart_dir: Path) -> Iterator[Any]:
    loaded = helm.Chart.load(str(chart_dir))
    yield loaded
    loaded.close()


def render_raw(chart: Any, values: dict[str, Any], name: str = RELEASE) -> dict[str, str]:
    return {k.split("/templates/", 1)[-1]: v for k, v in chart.render(values, name=name, namespace=NAMESPACE).items()}


def render(chart: Any, values: dict[str, Any], name: str = RELEASE) -> list[dict[str, Any]]:
    """The rendered objects (NOTES.txt left out), each tagged with its template in `_template`."""
    objects = []
    for template, text in sorted(render_raw(chart, values, name).items()):
        if not template.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc["_template"] = template
                objects.append(doc)
    return objects


def strip(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k != "_template"}


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    found = [o for o in by_kind(objects, kind) if o["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"expected one {kind} *{name_suffix}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def agent_config(objects: list[dict[str, Any]]) -> dict[str, Any]:
    cm = next(o for o in by_kind(objects, "ConfigMap") if "config.yaml" in o.get("data", {}))
    config = yaml.safe_load(cm["data"]["config.yaml"])
    assert isinstance(config, dict)
    return config


def pod_specs(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o["spec"]["template"]["spec"] for o in objects if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet")]


def agent_containers(spec: dict[str, Any], name: str = "goodhart-agent") -> list[dict[str, Any]]:
    return [c for c in spec.get("initContainers", []) + spec.get("containers", []) if c["name"] == name]


def example_values(name: str) -> dict[str, Any]:
    values = yaml.safe_load((EXAMPLES / name).read_text())
    assert isinstance(values, dict)
    return values


# --- the option sets ------------------------------------------------------------------------------

SIDECAR_FULL: dict[str, Any] = {
    "nameOverride": "gh",
    "commonLabels": {"team": "ml-platform"},
    "image": {"repository": "registry.example.com/goodhart-agent", "digest": "sha256:" + "a" * 64,
              "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "regcred"}],
    "config": {
        "source": {"type": "jsonl", "path": "/data/handoff/outputs.jsonl", "start_at": "end",
                   "max_batch_records": 1000},
        "id_field": "id",
        "ts_field": "ts",
        "proxies": [
            {"name": "thumbs_up", "field": "proxy.thumbs_up", "direction": "higher"},
            {"name": "resolution_seconds", "field": "proxy.resolution_seconds", "direction": "lower"},
        ],
        "audits": [
            {"name": "resolved", "field": "audit.resolved"},
            {"name": "judge_helpful", "llm_judge": {
                "base_url": "http://127.0.0.1:8000/v1", "model": "any-model-name", "api_key_env": "JUDGE_API_KEY",
                "prompt": "Rate the reply. Request: {input} Reply: {output}. Answer 1 to 5.", "scale": [1, 5],
                "timeout_seconds": 20}},
            {"name": "grader_ok", "http_grader": {"url": "http://127.0.0.1:8001/grade", "pointer": "/score",
                                                  "timeout_seconds": 10}},
        ],
        "segments": {"field": "labels.segment", "max_values": 10},
        "audit_sampling": {"rate": 0.1},
        "schedule": {"ingest_seconds": 2, "detect_seconds": 20, "retention_seconds": 600},
        "retention": {"label_ttl_seconds": 86400, "pairs_max_age_seconds": 604800, "max_pending": 10000,
                      "max_pairs": 10000, "max_events": 100},
        "limits": {"max_record_bytes": 32768},
        "detection": {"detector": "decoupling", "audits_between_false_alarms": 50000, "reference_pairs": 100,
                      "window_seconds": 1800},
        "log": {"level": "DEBUG", "format": "text"},
        "api": {"allow_remote_rebaseline": False},
    },
    "extraConfig": "schedule:\n  detect_seconds: 30\n",
    "secretEnv": {"JUDGE_API_KEY": {"name": "judge-secret", "key": "api-key"}},
    "extraEnv": [{"name": "GOODHART_LOG_LEVEL", "value": "info"},
                 {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
    "ports": {"metrics": 12100, "push": 12101},
    "sidecar": {"native": True, "onError": "exit", "containerName": "quality-agent",
                "podLabels": {"quality-agent": "on"},
                "handoff": {"volumeName": "ai-outputs", "create": True, "mountPath": "/data/handoff",
                            "sizeLimit": "512Mi"}},
    "state": {"sizeLimit": "2Gi"},
    "resources": {"requests": {"cpu": "100m", "memory": "200Mi"}, "limits": {"cpu": 1, "memory": "512Mi"}},
    "probes": {"startup": {"periodSeconds": 1, "failureThreshold": 60},
               "liveness": {"initialDelaySeconds": 5, "periodSeconds": 20},
               "readiness": {"successThreshold": 1, "timeoutSeconds": 5}},
    "monitor": {"enabled": True, "interval": "15s", "scrapeTimeout": "5s", "namespaceSelector": {"any": True}},
    "prometheusRule": {"enabled": True, "divergenceSeverity": "page"},
    "installRulesAndDashboards": True,
    "monitoringLabels": {"release": "kube-prometheus-stack"},
    "dashboards": {"annotations": {"grafana_folder": "AI quality"}, "namespace": "monitoring"},
    "exampleApp": {"enabled": True, "intervalSeconds": 2, "auditEvery": 3},
}

STANDALONE_FULL: dict[str, Any] = {
    "mode": "standalone",
    "fullnameOverride": "goodhart",
    "config": {"source": {"type": "http_push"}},
    "standalone": {
        "service": {"type": "ClusterIP", "annotations": {"example.com/owner": "ml-platform"}},
        "persistence": {"enabled": True, "existingClaim": "goodhart-state"},
        "podAnnotations": {"example.com/scrape": "false"},
        "podLabels": {"team": "ml-platform"},
        "podSecurityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
                               "fsGroupChangePolicy": "OnRootMismatch",
                               "seccompProfile": {"type": "RuntimeDefault"}},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64", "arm64"]}]}]}}},
        "priorityClassName": "low-priority",
        "terminationGracePeriodSeconds": 15,
    },
    "monitor": {"enabled": True, "kind": "PodMonitor",
                "selector": {"matchLabels": {"app.kubernetes.io/name": "goodhart-agent"}}},
    "prometheusRule": {"enabled": True},
    "networkPolicy": {
        "enabled": True,
        "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
        "pushFrom": [{"podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["bot"]}]}},
                     {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
        "restrictEgress": True,
        "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": 443, "protocol": "TCP"}]}],
    },
}

GATEWAY_FULL: dict[str, Any] = {
    "mode": "gateway",
    "config": {"source": {"type": "http_push", "token_env": "GOODHART_PUSH_TOKEN"}},
    "secretEnv": {"GOODHART_PUSH_TOKEN": {"name": "goodhart-forward", "key": "token"}},
    "gateway": {
        "service": {"type": "ClusterIP", "annotations": {"example.com/owner": "ml-platform"}},
        "persistence": {"storageClass": "fast", "size": "20Gi", "accessModes": ["ReadWriteOncePod"]},
        "podAnnotations": {"example.com/scrape": "false"},
        "podLabels": {"team": "ml-platform"},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
        "priorityClassName": "low-priority",
        "terminationGracePeriodSeconds": 20,
    },
    "monitor": {"enabled": True, "kind": "ServiceMonitor", "jobLabel": "app.kubernetes.io/instance"},
    "prometheusRule": {"enabled": True},
    "networkPolicy": {"enabled": True, "pushFrom": [{"namespaceSelector": {}}]},
}

FORWARDER = {"sidecar": {"forwarder": {"enabled": True, "url": "http://goodhart-gateway.monitoring:10101/v1/records",
                                       "tokenSecret": {"name": "goodhart-forward", "key": "token"}}},
             "secretEnv": {"JUDGE_API_KEY": {"name": "judge-secret", "key": "api-key"}},
             "exampleApp": {"enabled": True}, "monitor": {"enabled": True}, "prometheusRule": {"enabled": True}}

SCENARIOS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "sidecar-example-native-auto": {"exampleApp": {"enabled": True}},
    "sidecar-example-plain": {"exampleApp": {"enabled": True}, "sidecar": {"native": False}},
    "sidecar-http-push": {"config": {"source": {"type": "http_push"}}, "monitor": {"enabled": True}},
    "sidecar-otlp": {"config": {"source": {"type": "otlp"}}},
    "standalone-otlp": {"mode": "standalone", "config": {"source": {"type": "otlp"}},
                        "networkPolicy": {"enabled": True}},
    "sidecar-everything": SIDECAR_FULL,
    "all-gated-off": {"monitor": {"enabled": False}, "prometheusRule": {"enabled": False},
                      "dashboards": {"enabled": False}},
    "standalone-everything": STANDALONE_FULL,
    "standalone-pvc-servicemonitor": {"mode": "standalone", "config": {"source": {"type": "http_push"}},
                                      "standalone": {"persistence": {"enabled": True, "storageClass": "fast"}},
                                      "monitor": {"enabled": True, "kind": "ServiceMonitor"}},
    "gateway-everything": GATEWAY_FULL,
    "gateway-existing-claim": {"mode": "gateway", "config": {"source": {"type": "http_push"}},
                               "gateway": {"persistence": {"existingClaim": "fleet-state"}},
                               "monitor": {"enabled": True}},
    "sidecar-forwarder-native": FORWARDER,
    "sidecar-forwarder-plain": {**FORWARDER, "sidecar": {**FORWARDER["sidecar"], "native": False}},
}
for _example in sorted(EXAMPLES.glob("*-values.yaml")):
    if _example.name != "other-chart-values.yaml":  # values for another chart, not this one
        SCENARIOS["example:" + _example.name] = yaml.safe_load(_example.read_text())


@pytest.fixture(scope="session")
def rendered(chart: Any) -> dict[str, list[dict[str, Any]]]:
    return {name: render(chart, values) for name, values in SCENARIOS.items()}


def kubernetes_versions() -> list[str]:
    newest = kubernetes_validate.latest_version() if kubernetes_validate else "newest"
    return ["1.29", newest]


# --- rendering and Kubernetes validity ------------------------------------------------------------


def test_defaults_render_the_sidecar_companions_only(rendered: dict[str, list[dict[str, Any]]], chart: Any) -> None:
    objects = rendered["defaults"]
    # Sidecar mode renders no workload; offline there is no monitoring.coreos.com/v1, so "auto"
    # renders neither monitor nor rules; a sidecar release installs no dashboards by default.
    assert sorted(o["kind"] for o in objects) == ["ConfigMap"]
    dashboards = one(render(chart, {"installRulesAndDashboards": True}), "ConfigMap", "-dashboards")
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"


@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("version", kubernetes_versions())
def test_builtin_objects_are_valid_kubernetes(kv: Any, rendered: dict[str, list[dict[str, Any]]],
                                              scenario: str, version: str) -> None:
    checked = 0
    for obj in rendered[scenario]:
        group = obj["apiVersion"].rpartition("/")[0]
        if group.endswith("monitoring.coreos.com"):
            continue  # CRDs: checked by promtool and the structural tests below
        try:
            kv.validate(strip(obj), version, strict=True)
        except kv.ValidationError as err:
            path = ".".join(str(p) for p in err.path)
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} ({obj['_template']}) invalid for "
                        f"Kubernetes {version}: {path}: {err.message}")
        checked += 1
    assert checked >= 1


def test_kubernetes_validate_rejects_a_broken_object(kv: Any) -> None:
    """The validator is not a no-op: an unknown field fails under --strict."""
    broken = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {}, "dta": {}}
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, "1.29", strict=True)


@pytest.mark.slow
def test_kubernetes_validate_cli_strict(kv: Any, rendered: dict[str, list[dict[str, Any]]],
                                        tmp_path: Path) -> None:
    """The same verdict from the kubernetes-validate command line, on every built-in object at once."""
    exe = shutil.which("kubernetes-validate")
    if exe is None:
        tool_missing("the kubernetes-validate command")
    docs = [strip(o) for objects in rendered.values() for o in objects
            if not o["apiVersion"].startswith("monitoring.coreos.com")]
    manifest = tmp_path / "all.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    for version in kubernetes_versions():
        result = subprocess.run([exe, "--strict", "--quiet", "-k", version, str(manifest)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("kube_version", [None, "v1.25.0", "v1.29.0"])
@pytest.mark.parametrize("values_file", [None, *sorted(p.name for p in EXAMPLES.glob("*-values.yaml")
                                                       if p.name != "other-chart-values.yaml")])
def test_lint_is_clean(helm: Any, chart_dir: Path, values_file: str | None, kube_version: str | None) -> None:
    values = example_values(values_file) if values_file else None
    report = helm.lint(str(chart_dir), values, strict=True, kube_version=kube_version)
    serious = [m for m in report["messages"] if m["severity"] >= 2]
    assert not serious and not report["errors"], report


def test_notes_render_for_every_scenario(chart: Any) -> None:
    for name, values in SCENARIOS.items():
        notes = render_raw(chart, values)["NOTES.txt"]
        mode = values.get("mode", "sidecar")
        assert f"({mode} mode)" in notes, name
        assert "<no value>" not in notes and "%!" not in notes, notes


# --- the sidecar ----------------------------------------------------------------------------------


def test_native_sidecar_is_a_restartable_init_container(rendered: dict[str, list[dict[str, Any]]]) -> None:
    spec = pod_specs(rendered["sidecar-example-native-auto"])[0]  # offline render: Kubernetes 1.36
    agent = agent_containers(spec)
    assert [c["name"] for c in spec["initContainers"]] == ["goodhart-agent"]
    assert agent[0]["restartPolicy"] == "Always"
    assert [c["name"] for c in spec["containers"]] == ["app"]


def test_plain_sidecar_when_native_is_off(rendered: dict[str, list[dict[str, Any]]]) -> None:
    spec = pod_specs(rendered["sidecar-example-plain"])[0]
    assert "initContainers" not in spec
    assert [c["name"] for c in spec["containers"]] == ["app", "goodhart-agent"]
    assert "restartPolicy" not in agent_containers(spec)[0]


def test_native_sidecar_auto_follows_the_kubernetes_version(helm: Any, chart_dir: Path, tmp_path: Path) -> None:
    """auto: native from 1.29 on. Render takes no Kubernetes version; lint does. A probe template
    puts the helper's answer into an invalid object name, which lint quotes back."""
    probe_chart = tmp_path / "goodhart-agent"
    shutil.copytree(chart_dir, probe_chart)
    (probe_chart / "templates" / "zz-probe.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n"
        '  name: "probe_{{ if include "goodhart-agent.sidecarIsNative" . }}native{{ else }}plain{{ end }}"\n')
    answers = {}
    for version in ("v1.25.0", "v1.28.9", "v1.29.0", "v1.33.0"):
        report = helm.lint(str(probe_chart), {"exampleApp": {"enabled": True}}, kube_version=version)
        found = {m for msg in report["messages"] for m in re.findall(r'"probe_(\w+)"', msg["error"])}
        assert len(found) == 1, report
        answers[version] = found.pop()
    assert answers == {"v1.25.0": "plain", "v1.28.9": "plain", "v1.29.0": "native", "v1.33.0": "native"}


def test_containers_run_restricted(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """Restricted Pod Security: every container of every rendered pod, the example app's too."""
    seen = 0
    for name, objects in rendered.items():
        for spec in pod_specs(objects):
            for c in spec.get("initContainers", []) + spec["containers"]:
                sc = c["securityContext"]
                assert sc["runAsNonRoot"] is True, (name, c["name"])
                assert sc["allowPrivilegeEscalation"] is False, (name, c["name"])
                assert sc["readOnlyRootFilesystem"] is True, (name, c["name"])
                assert sc["capabilities"]["drop"] == ["ALL"], (name, c["name"])
                assert sc["seccompProfile"]["type"] == "RuntimeDefault", (name, c["name"])
                assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], (name, c["name"])
                seen += 1
            assert spec["automountServiceAccountToken"] is False
    assert seen >= 10


def test_agent_container_probes_ports_and_mounts(rendered: dict[str, list[dict[str, Any]]]) -> None:
    spec = pod_specs(rendered["sidecar-example-plain"])[0]
    agent = agent_containers(spec)[0]
    # A sidecar runs in never-down mode by default, with a liveness probe only (see the
    # never-down tests below); sidecar.onError exit gives the fail-fast layout of standalone.
    assert agent["args"] == ["run", "--config", "/etc/goodhart-agent/config.yaml", "--on-error", "serve",
                             "--retry-seconds", "30"]
    assert agent["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "goodhart"}
    assert "startupProbe" not in agent and "readinessProbe" not in agent
    assert agent["ports"] == [{"name": "goodhart", "containerPort": 10100, "protocol": "TCP"}]
    mounts = {m["name"]: m for m in agent["volumeMounts"]}
    assert mounts["goodhart-config"] == {"name": "goodhart-config", "mountPath": "/etc/goodhart-agent",
                                         "readOnly": True}
    assert mounts["goodhart-state"]["mountPath"] == "/var/lib/goodhart-agent"
    assert mounts["goodhart-handoff"]["readOnly"] is True
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes["goodhart-state"] and "emptyDir" in volumes["goodhart-handoff"]
    assert volumes["goodhart-config"]["configMap"]["name"] == f"{RELEASE}-goodhart-agent"
    app = next(c for c in spec["containers"] if c["name"] == "app")
    # The application writes the file the agent follows, on the shared hand-off volume.
    config = agent_config(rendered["sidecar-example-plain"])
    app_mount = next(m for m in app["volumeMounts"] if m["name"] == "goodhart-handoff")
    assert config["source"]["path"].startswith(app_mount["mountPath"] + "/")
    assert config["listen"] == "0.0.0.0:10100" and config["state_dir"] == "/var/lib/goodhart-agent"


def test_every_option_reaches_the_sidecar(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["sidecar-everything"]
    spec = pod_specs(objects)[0]
    agent = agent_containers(spec, "quality-agent")[0]
    assert agent["image"] == "registry.example.com/goodhart-agent@sha256:" + "a" * 64
    assert agent["imagePullPolicy"] == "Always"
    assert agent["ports"][0]["containerPort"] == 12100
    assert agent["readinessProbe"]["timeoutSeconds"] == 5  # onError exit: the fail-fast probes
    assert agent["args"] == ["run", "--config", "/etc/goodhart-agent/config.yaml"]
    assert agent["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "goodhart"}
    assert agent["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "goodhart"}
    env = {e["name"]: e for e in agent["env"]}
    # The judge key comes from the Secret; it is never a literal value anywhere.
    assert env["JUDGE_API_KEY"] == {"name": "JUDGE_API_KEY",
                                    "valueFrom": {"secretKeyRef": {"name": "judge-secret", "key": "api-key"}}}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["GOODHART_LISTEN"]["value"] == "0.0.0.0:12100"
    mounts = {m["name"]: m["mountPath"] for m in agent["volumeMounts"]}
    assert mounts["ai-outputs"] == "/data/handoff"
    assert spec["volumes"][-1] == {"name": "ai-outputs", "emptyDir": {"sizeLimit": "512Mi"}}
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    config = agent_config(objects)
    assert config["schedule"]["detect_seconds"] == 30  # extraConfig wins over config
    assert config["schedule"]["ingest_seconds"] == 2  # ... and merges, not replaces
    assert config["listen"] == "0.0.0.0:12100"
    for obj in objects:
        assert obj["metadata"]["labels"]["team"] == "ml-platform", obj["kind"]
        assert obj["metadata"]["name"].startswith(f"{RELEASE}-gh"), obj["metadata"]["name"]
    podmonitor = one(objects, "PodMonitor")
    # Helm merges maps: the default label stays unless set to null.
    assert podmonitor["spec"]["selector"] == {"matchLabels": {"quality-agent": "on", "goodhart-agent/scrape": "true"}}
    assert podmonitor["spec"]["namespaceSelector"] == {"any": True}
    assert pod_labels(objects)["quality-agent"] == "on"
    assert one(objects, "ConfigMap", "-dashboards")["metadata"]["namespace"] == "monitoring"


def pod_labels(objects: list[dict[str, Any]]) -> dict[str, str]:
    workload = next(o for o in objects if o["kind"] == "Deployment")
    labels = workload["spec"]["template"]["metadata"]["labels"]
    assert isinstance(labels, dict)
    return labels


def test_config_checksum_rolls_the_pods(chart: Any) -> None:
    def checksum(values: dict[str, Any]) -> str:
        deployment = one(render(chart, values), "Deployment")
        return str(deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    base = {"exampleApp": {"enabled": True}}
    changed = {"exampleApp": {"enabled": True}, "config": {"log": {"level": "DEBUG"}}}
    assert checksum(base) == checksum(copy.deepcopy(base))
    assert checksum(base) != checksum(changed)


def test_http_push_binds_loopback_in_a_sidecar(rendered: dict[str, list[dict[str, Any]]]) -> None:
    config = agent_config(rendered["sidecar-http-push"])
    assert config["source"] == {"type": "http_push", "listen": "127.0.0.1:10101"}


def test_an_otlp_receiver_binds_loopback_on_the_sdk_default_port_in_a_sidecar(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    # An instrumented app in the same pod exports to localhost:4318 by default: no configuration.
    assert agent_config(rendered["sidecar-otlp"])["source"] == {"type": "otlp", "listen": "127.0.0.1:4318"}
    assert not by_kind(rendered["sidecar-otlp"], "Service")


def test_a_standalone_otlp_receiver_is_exposed_on_its_own_named_port(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["standalone-otlp"]
    assert agent_config(objects)["source"] == {"type": "otlp", "listen": "0.0.0.0:4318"}
    agent = agent_containers(one(objects, "Deployment")["spec"]["template"]["spec"])[0]
    assert {p["name"]: p["containerPort"] for p in agent["ports"]} == {"goodhart": 10100, "goodhart-otlp": 4318}
    service = one(objects, "Service")
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"goodhart": 10100, "goodhart-otlp": 4318}
    assert [r["ports"][0]["port"] for r in one(objects, "NetworkPolicy")["spec"]["ingress"]] == [
        "goodhart", "goodhart-otlp"]


# --- standalone -----------------------------------------------------------------------------------


def test_standalone_deployment_and_service(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["standalone-everything"]
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    spec = deployment["spec"]["template"]["spec"]
    assert "initContainers" not in spec
    agent = agent_containers(spec)[0]
    assert {p["name"]: p["containerPort"] for p in agent["ports"]} == {"goodhart": 10100, "goodhart-push": 10101}
    assert spec["securityContext"]["fsGroup"] == 10001
    assert spec["priorityClassName"] == "low-priority"
    assert spec["tolerations"][0]["key"] == "dedicated"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["goodhart-state"] == {"name": "goodhart-state",
                                         "persistentVolumeClaim": {"claimName": "goodhart-state"}}
    assert "goodhart-handoff" not in volumes
    assert not by_kind(objects, "PersistentVolumeClaim")  # existingClaim: none created
    service = one(objects, "Service")
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"goodhart": 10100, "goodhart-push": 10101}
    pod_labels_ = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels_.items()
    config = agent_config(objects)
    assert config["source"] == {"type": "http_push", "listen": "0.0.0.0:10101"}  # the default path is dropped
    policy = one(objects, "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels_.items()
    assert [r["ports"][0]["port"] for r in policy["spec"]["ingress"]] == ["goodhart", "goodhart-push"]


def test_standalone_persistence_creates_a_claim(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["standalone-pvc-servicemonitor"]
    claim = one(objects, "PersistentVolumeClaim")
    assert claim["spec"]["storageClassName"] == "fast"
    volumes = {v["name"]: v for v in pod_specs(objects)[0]["volumes"]}
    assert volumes["goodhart-state"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]


def test_servicemonitor_selects_the_service(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["standalone-pvc-servicemonitor"]
    monitor, service = one(objects, "ServiceMonitor"), one(objects, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}


def test_networkpolicy_never_touches_application_pods(chart: Any) -> None:
    objects = render(chart, {"networkPolicy": {"enabled": True}, "exampleApp": {"enabled": True}})
    assert not by_kind(objects, "NetworkPolicy")


# --- gateway --------------------------------------------------------------------------------------


def test_gateway_is_one_statefulset_replica_with_its_state_on_a_claim(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["gateway-everything"]
    sts = one(objects, "StatefulSet")
    assert sts["spec"]["replicas"] == 1 and sts["spec"]["podManagementPolicy"] == "OrderedReady"
    claim = sts["spec"]["volumeClaimTemplates"][0]
    assert claim["metadata"]["name"] == "goodhart-state"
    assert claim["spec"] == {"accessModes": ["ReadWriteOncePod"], "storageClassName": "fast",
                             "resources": {"requests": {"storage": "20Gi"}}}
    spec = sts["spec"]["template"]["spec"]
    agent = agent_containers(spec)[0]
    assert {m["name"]: m["mountPath"] for m in agent["volumeMounts"]}["goodhart-state"] == "/var/lib/goodhart-agent"
    assert "goodhart-state" not in {v["name"] for v in spec["volumes"]}  # from the claim template
    assert not by_kind(objects, "Deployment") and not by_kind(objects, "PersistentVolumeClaim")
    # A gateway fails fast on a bad config, and its Service sends pushes only to a ready agent.
    assert agent["args"] == ["run", "--config", "/etc/goodhart-agent/config.yaml"]
    assert agent["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert agent["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert agent["env"][-1]["valueFrom"]["secretKeyRef"] == {"name": "goodhart-forward", "key": "token"}
    assert spec["priorityClassName"] == "low-priority" and spec["terminationGracePeriodSeconds"] == 20
    pod_labels_ = sts["spec"]["template"]["metadata"]["labels"]
    assert pod_labels_["app.kubernetes.io/component"] == "gateway" and pod_labels_["team"] == "ml-platform"
    service = one(objects, "Service")
    assert sts["spec"]["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["selector"].items() <= pod_labels_.items()
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"goodhart": 10100, "goodhart-push": 10101}
    assert agent_config(objects)["source"] == {"type": "http_push", "listen": "0.0.0.0:10101",
                                               "token_env": "GOODHART_PUSH_TOKEN"}
    monitor = one(objects, "ServiceMonitor")
    assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/instance"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    policy = one(objects, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels_.items()
    assert [r["ports"][0]["port"] for r in policy["spec"]["ingress"]] == ["goodhart", "goodhart-push"]


def test_gateway_installs_the_rules_and_dashboards_once(rendered: dict[str, list[dict[str, Any]]],
                                                        chart: Any) -> None:
    """The gateway release installs them by default; an application's sidecar release does not,
    even when its prometheusRule and dashboards switches are on, unless told to."""
    assert one(rendered["gateway-everything"], "PrometheusRule")
    assert one(rendered["gateway-everything"], "ConfigMap", "-dashboards")
    for scenario in ("sidecar-forwarder-native", "sidecar-http-push", "defaults"):
        objects = rendered[scenario]
        assert not by_kind(objects, "PrometheusRule"), scenario
        assert not [o for o in by_kind(objects, "ConfigMap") if o["metadata"]["name"].endswith("-dashboards")]
    off = render(chart, {**GATEWAY_FULL, "installRulesAndDashboards": False})
    assert not by_kind(off, "PrometheusRule") and len(by_kind(off, "ConfigMap")) == 1


def test_gateway_with_an_existing_claim(rendered: dict[str, list[dict[str, Any]]]) -> None:
    sts = one(rendered["gateway-existing-claim"], "StatefulSet")
    assert "volumeClaimTemplates" not in sts["spec"]
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert volumes["goodhart-state"]["persistentVolumeClaim"] == {"claimName": "fleet-state"}
    monitor = one(rendered["gateway-existing-claim"], "PodMonitor")
    assert monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "gateway"


# --- forwarder sidecars: never-down mode --------------------------------------------------------------


@pytest.mark.parametrize("scenario", ["sidecar-forwarder-native", "sidecar-forwarder-plain"])
def test_forwarder_sidecar_never_holds_the_application_back(rendered: dict[str, list[dict[str, Any]]],
                                                            scenario: str) -> None:
    """Native sidecar rules (Kubernetes docs, sidecar containers): the app's containers start once
    the restartable init container is started, i.e. its process runs and it has no startupProbe
    (or the probe passed); its readinessProbe counts for the Pod's readiness. So: no startupProbe,
    no readinessProbe; a livenessProbe on /healthz (restarts the agent only); Secrets and the
    ConfigMap optional, so that a missing one never stops the container from being created."""
    objects = rendered[scenario]
    spec = pod_specs(objects)[0]
    agent = agent_containers(spec)[0]
    native = scenario.endswith("native")
    assert [c["name"] for c in spec.get("initContainers", [])] == (["goodhart-agent"] if native else [])
    assert ("restartPolicy" in agent) is native
    app = next(c for c in spec["containers"] if c["name"] == "app")
    assert "startupProbe" not in agent, "a startupProbe would hold the app's start back"
    assert "readinessProbe" not in agent, "a failing readiness would take the app out of its Service"
    assert agent["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "goodhart"}
    assert agent["args"][-4:] == ["--on-error", "serve", "--retry-seconds", "30"]
    assert "initContainers" not in spec or [c["name"] for c in spec["initContainers"]] == ["goodhart-agent"]
    assert app.get("readinessProbe") is None or app["readinessProbe"]  # the app's own probes, untouched
    env = {e["name"]: e for e in agent["env"]}
    for name in ("GOODHART_FORWARD_TOKEN", "JUDGE_API_KEY"):
        assert env[name]["valueFrom"]["secretKeyRef"]["optional"] is True, name
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["goodhart-config"]["configMap"]["optional"] is True
    config = agent_config(objects)
    assert config["forward"] == {"url": "http://goodhart-gateway.monitoring:10101/v1/records",
                                 "token_env": "GOODHART_FORWARD_TOKEN"}
    monitor = one(objects, "PodMonitor")
    assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/name"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels(objects).items()


def test_two_applications_in_one_namespace_are_two_jobs(chart: Any) -> None:
    """jobLabel names the job after the scraped pod's app.kubernetes.io/name, not after the
    PodMonitor: two applications' sidecars are never pooled into one job by the fleet rules."""
    for name in ("bot-a", "bot-b"):
        monitor = one(render(chart, {**FORWARDER, "sidecar": {**FORWARDER["sidecar"], "podLabels": {"scrape": name}}},
                             name=name), "PodMonitor")
        assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/name"
        assert monitor["spec"]["selector"] == {"matchLabels": {"scrape": name, "goodhart-agent/scrape": "true"}}
    assert "jobLabel" not in one(render(chart, {"monitor": {"enabled": True, "jobLabel": ""}}), "PodMonitor")["spec"]


def test_the_rendered_sidecar_with_a_broken_config_stays_up(rendered: dict[str, list[dict[str, Any]]],
                                                            tmp_path: Path) -> None:
    """The container as rendered (its args and environment) with a config it cannot run: the
    process stays up, the liveness path answers 200, /metrics says why."""
    import requests
    from support import free_port, parse_metrics, wait_until

    agent = agent_containers(pod_specs(rendered["sidecar-forwarder-native"])[0])[0]
    config = agent_config(rendered["sidecar-forwarder-native"])
    config["proxies"][0]["direction"] = "sideways"  # broken on purpose
    config["state_dir"] = str(tmp_path / "state")
    config["source"]["path"] = str(tmp_path / "outputs.jsonl")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    port = free_port()
    args = [str(tmp_path / "config.yaml") if a.startswith("/etc/goodhart-agent/") else a for a in agent["args"]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOODHART")}
    env.update({e["name"]: e["value"] for e in agent["env"] if "value" in e})
    env.update(GOODHART_LISTEN=f"127.0.0.1:{port}", GOODHART_STATE_DIR=str(tmp_path / "state"))
    probe = f"http://127.0.0.1:{port}{agent['livenessProbe']['httpGet']['path']}"
    proc = subprocess.Popen([sys.executable, "-m", "agent", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        def healthy() -> bool:
            assert proc.poll() is None, proc.communicate()[0]
            try:
                return requests.get(probe, timeout=1).status_code == 200
            except requests.ConnectionError:
                return False
        wait_until(healthy, what="the liveness probe's path")
        metrics = parse_metrics(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)
        assert metrics[("goodhart_config_valid", ())] == 0
        assert metrics[("goodhart_up", (("component", "gateway"),))] == 0
        assert proc.poll() is None
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0].decode()
    assert proc.returncode == 0
    assert "proxies.0.direction" in output


# --- monitoring: PodMonitor, PrometheusRule, dashboards -------------------------------------------


@pytest.mark.parametrize("kind", ["PodMonitor", "PrometheusRule"])
def test_capability_gate_auto_renders_nothing_offline(chart: Any, kind: str) -> None:
    """helm template reports no monitoring.coreos.com/v1: auto leaves them out, true forces them."""
    assert not by_kind(render(chart, {}), kind)
    assert not by_kind(render(chart, {"monitor": {"enabled": False}, "prometheusRule": {"enabled": False}}), kind)
    forced = render(chart, {"monitor": {"enabled": True}, "prometheusRule": {"enabled": True},
                            "installRulesAndDashboards": True})
    assert len(by_kind(forced, kind)) == 1


def test_capability_gate_auto_follows_the_cluster(helm: Any, chart_dir: Path, tmp_path: Path) -> None:
    """auto renders when the API is served. Offline rendering cannot report extra API versions, so
    the gate helper is read with the capability check swapped for a true one."""
    probe_chart = tmp_path / "goodhart-agent"
    shutil.copytree(chart_dir, probe_chart)
    helpers = probe_chart / "templates" / "_helpers.tpl"
    text = helpers.read_text()
    assert "$ctx.Capabilities.APIVersions.Has $api" in text
    helpers.write_text(text.replace("$ctx.Capabilities.APIVersions.Has $api", "true"))
    with helm.Chart.load(str(probe_chart)) as probe:
        kinds = {o["kind"] for o in render(probe, {"installRulesAndDashboards": True})}
    assert {"PodMonitor", "PrometheusRule"} <= kinds


def test_kube_prometheus_stack_example(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["example:kube-prometheus-stack-values.yaml"]
    for kind in ("PodMonitor", "PrometheusRule"):
        assert one(objects, kind)["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    monitor = one(objects, "PodMonitor")
    assert monitor["spec"]["selector"] == {"matchLabels": {"goodhart-agent/scrape": "true"}}
    assert monitor["spec"]["podMetricsEndpoints"][0] == {"port": "goodhart", "path": "/metrics",
                                                         "interval": "30s", "scrapeTimeout": "10s"}


def render_pod_with_sidecar(objects: list[dict[str, Any]]) -> tuple[dict[str, str], dict[str, Any]] | None:
    for o in objects:
        if o["kind"] == "Deployment":
            return o["spec"]["template"]["metadata"]["labels"], o["spec"]["template"]["spec"]
    return None


def test_podmonitor_matches_example_app(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["sidecar-everything"]
    labels, spec = render_pod_with_sidecar(objects) or ({}, {})
    monitor = one(objects, "PodMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ports = {p["name"] for c in agent_containers(spec, "quality-agent") for p in c["ports"]}
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] in ports
    assert monitor["spec"]["podMetricsEndpoints"][0]["interval"] == "15s"


def rules_source(chart_dir: Path) -> dict[str, Any]:
    data = yaml.safe_load((chart_dir / "files" / "goodhart-rules.yml").read_text())
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize("severity", [None, "page"])
def test_prometheusrule_is_the_rules_file_with_the_configured_severity(
        chart: Any, chart_dir: Path, severity: str | None) -> None:
    values: dict[str, Any] = {"prometheusRule": {"enabled": True}, "monitoringLabels": {"release": "kps"},
                              "installRulesAndDashboards": True}
    if severity:
        values["prometheusRule"]["divergenceSeverity"] = severity
    rule = one(render(chart, values), "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kps"
    expected = rules_source(chart_dir)
    divergence = [r for g in expected["groups"] for r in g["rules"] if r.get("alert") == DIVERGENCE_ALERT]
    assert len(divergence) == 1
    assert divergence[0]["labels"]["severity"] == "critical"  # the source's default
    divergence[0]["labels"]["severity"] = severity or "critical"
    # Everything else is the rules file exactly.
    assert rule["spec"]["groups"] == expected["groups"]


def test_prometheusrule_passes_promtool(rendered: dict[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        tool_missing("promtool (Debian package prometheus)")
    rules = [o for objects in rendered.values() for o in by_kind(objects, "PrometheusRule")]
    assert rules
    for i, rule in enumerate(rules):
        path = tmp_path / f"rules-{i}.yml"
        path.write_text(yaml.safe_dump(rule["spec"], sort_keys=False))
        result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


def test_dashboards_configmap_holds_every_dashboard(rendered: dict[str, list[dict[str, Any]]],
                                                    chart_dir: Path) -> None:
    cm = one(rendered["example:kube-prometheus-stack-values.yaml"], "ConfigMap", "-dashboards")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "AI quality"}
    files = sorted((chart_dir / "files" / "dashboards").glob("*.json"))
    assert sorted(cm["data"]) == [f.name for f in files]
    for f in files:
        assert json.loads(cm["data"][f.name]) == json.loads(f.read_text())
    # A ConfigMap holds at most 1 MiB; leave room for metadata.
    assert sum(len(v.encode()) for v in cm["data"].values()) < 900 * 1024
    assert not by_kind(rendered["all-gated-off"], "ConfigMap")[1:]  # only the agent config left


# --- the agent accepts the rendered config --------------------------------------------------------


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_rendered_config_passes_check_config(rendered: dict[str, list[dict[str, Any]]], scenario: str,
                                             tmp_path: Path) -> None:
    objects = rendered[scenario]
    config = agent_config(objects)
    for key in ("source", "proxies", "audits", "listen", "state_dir", "log"):
        assert key in config, key
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    # The agent container's environment, as Kubernetes would set it (secrets as dummies).
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOODHART")}
    for spec in pod_specs(objects):
        for c in agent_containers(spec) + agent_containers(spec, "quality-agent"):
            for e in c.get("env", []):
                env[e["name"]] = e.get("value", "from-a-secret")
    result = subprocess.run([sys.executable, "-m", "agent", "check-config", str(path)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# --- values and schema ----------------------------------------------------------------------------

BAD_VALUES = [
    ({"mode": "daemonset"}, "/mode"),
    ({"unknownKey": 1}, "unknownKey"),
    ({"image": {"tag": 1}}, "/image/tag"),
    ({"config": {"source": {"type": "kafka"}}}, "/config/source/type"),
    ({"config": {"proxies": [{"name": "Thumbs Up", "field": "proxy.x"}]}}, "/config/proxies/0/name"),
    ({"config": {"proxies": []}}, "/config/proxies"),
    ({"config": {"proxies": [{"name": "x", "field": "proxy.x", "direction": "up"}]}}, "/config/proxies/0/direction"),
    ({"config": {"audits": [{"name": "j", "llm_judge": {"base_url": "http://j/v1", "model": "m", "prompt": "p",
                                                        "api_key": "sk-inline"}}]}},
     "/config/audits/0/llm_judge"),
    ({"config": {"listen": "0.0.0.0:1"}}, "/config"),
    ({"config": {"audit_sampling": {"rate": 1.5}}}, "/config/audit_sampling/rate"),
    ({"mode": "standalone"}, "/config/source/type"),
    ({"monitor": {"kind": "ServiceMonitor"}}, "/mode"),
    ({"monitor": {"enabled": "yes"}}, "/monitor/enabled"),
    ({"monitor": {"interval": "30 seconds"}}, "/monitor/interval"),
    ({"prometheusRule": {"divergenceSeverity": ""}}, "/prometheusRule/divergenceSeverity"),
    ({"sidecar": {"native": "sometimes"}}, "/sidecar/native"),
    ({"ports": {"metrics": 70000}}, "/ports/metrics"),
    ({"resources": {"limits": {"memory": "lots"}}}, "/resources/limits/memory"),
    ({"securityContext": {"runAsUser": "root"}}, "/securityContext/runAsUser"),
    ({"secretEnv": {"JUDGE_API_KEY": "sk-inline"}}, "/secretEnv/JUDGE_API_KEY"),
    ({"secretEnv": {"JUDGE_API_KEY": {"name": "s"}}}, "/secretEnv/JUDGE_API_KEY"),
    ({"monitoringLabels": {"release": 1}}, "/monitoringLabels/release"),
    ({"networkPolicy": {"metricsFrom": [{"podSelectr": {}}]}}, "/networkPolicy/metricsFrom/0"),
    ({"exampleApp": {"enabled": True}, "config": {"source": {"type": "http_push"}}}, "/config/source/type"),
    ({"standalone": {"persistence": {"size": "big"}}}, "/standalone/persistence/size"),
    ({"mode": "gateway"}, "/config/source/type"),
    ({"mode": "gateway", "config": {"source": {"type": "http_pull"}}}, "/config/source/type"),
    ({"gateway": {"persistence": {"enabled": True}}}, "/gateway/persistence"),
    ({"sidecar": {"onError": "maybe"}}, "/sidecar/onError"),
    ({"sidecar": {"retrySeconds": 0}}, "/sidecar/retrySeconds"),
    ({"sidecar": {"forwarder": {"enabled": True}}}, "/sidecar/forwarder/url"),
    ({"sidecar": {"forwarder": {"enabled": True, "url": "gw:10101"}}}, "/sidecar/forwarder/url"),
    ({"mode": "standalone", "config": {"source": {"type": "http_push"}},
      "sidecar": {"forwarder": {"enabled": True, "url": "http://gw:10101/v1/records"}}}, "/mode"),
    ({"installRulesAndDashboards": "yes"}, "/installRulesAndDashboards"),
    ({"monitor": {"jobLabel": 1}}, "/monitor/jobLabel"),
]


@pytest.mark.parametrize(("values", "where"), BAD_VALUES, ids=[w + str(i) for i, (_, w) in enumerate(BAD_VALUES)])
def test_schema_rejects_bad_values_naming_the_key(helm: Any, chart: Any, values: dict[str, Any], where: str) -> None:
    with pytest.raises(helm.HelmValuesError) as err:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert where in str(err.value), str(err.value)


RENDER_ERRORS = [
    ({"config": {"source": {"path": "/elsewhere/outputs.jsonl"}}}, "must lie under sidecar.handoff.mountPath"),
    ({"config": {"audits": [{"name": "j", "llm_judge": {"base_url": "http://j/v1", "model": "m", "prompt": "p",
                                                        "api_key_env": "JUDGE_API_KEY"}}]}},
     "neither secretEnv nor extraEnv sets JUDGE_API_KEY"),
    ({"mode": "standalone", "config": {"source": {"type": "http_push", "token_env": "PUSH_TOKEN"}}},
     "config.source.token_env is PUSH_TOKEN but neither secretEnv nor extraEnv sets PUSH_TOKEN"),
    ({"config": {"audits": [{"name": "g", "http_grader": {"url": "http://g/grade", "api_key_env": "GRADER_KEY"}}]}},
     "config.audits[0].http_grader.api_key_env is GRADER_KEY"),
    ({"extraConfig": "- a list"}, "extraConfig"),
    ({"config": {"source": None}}, "config.source is required"),
    ({"config": {"source": {"type": "jsonl", "path": None}}}, "config.source.path is required"),
    ({"exampleApp": {"enabled": True}, "sidecar": {"handoff": {"create": False}}}, "sidecar.handoff.create"),
    ({"sidecar": {"forwarder": {"enabled": True, "url": "http://gw:10101/v1/records"}},
      "extraConfig": "forward:\n  token_env: OTHER_TOKEN\n"},
     "config.forward.token_env is OTHER_TOKEN but neither secretEnv nor extraEnv sets OTHER_TOKEN"),
]


@pytest.mark.parametrize(("values", "message"), RENDER_ERRORS, ids=[m for _, m in RENDER_ERRORS])
def test_inconsistent_values_fail_with_a_clear_message(helm: Any, chart: Any, values: dict[str, Any],
                                                       message: str) -> None:
    with pytest.raises(helm.HelmError) as err:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert message in str(err.value), str(err.value)


def test_missing_rules_file_fails_clearly(helm: Any, chart_dir: Path, tmp_path: Path) -> None:
    probe_chart = tmp_path / "goodhart-agent"
    shutil.copytree(chart_dir, probe_chart)
    (probe_chart / "files" / "goodhart-rules.yml").write_text("groups: []\n")
    with helm.Chart.load(str(probe_chart)) as probe, pytest.raises(helm.HelmError, match=DIVERGENCE_ALERT):
        probe.render({"prometheusRule": {"enabled": True}, "installRulesAndDashboards": True}, name=RELEASE,
                     namespace=NAMESPACE)
    (probe_chart / "files" / "goodhart-rules.yml").unlink()
    with helm.Chart.load(str(probe_chart)) as probe, pytest.raises(helm.HelmError, match=re.escape("sync-files.py")):
        probe.render({"prometheusRule": {"enabled": True}, "installRulesAndDashboards": True}, name=RELEASE,
                     namespace=NAMESPACE)


# Objects open on purpose: Helm's own `global`; the affinity terms (deep Kubernetes structures,
# validated by the API server); and a JSON Schema that a json_valid computed proxy checks outputs
# against (any schema is a valid value there; the agent's model says so).
OPEN_OBJECTS = {"properties.global", "properties.standalone.properties.affinity.properties.nodeAffinity",
                "properties.standalone.properties.affinity.properties.podAffinity",
                "properties.standalone.properties.affinity.properties.podAntiAffinity",
                "properties.gateway.properties.affinity.properties.nodeAffinity",
                "properties.gateway.properties.affinity.properties.podAffinity",
                "properties.gateway.properties.affinity.properties.podAntiAffinity",
                "$defs.JsonValidCompute.properties.schema.anyOf[0]"}


def test_schema_closes_every_object() -> None:
    """additionalProperties: false throughout; a map (labels, secretEnv) types its values instead."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    open_objects = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            # Only definitions: the partial schemas under if/then constrain, they do not define.
            if node.get("type") == "object" and path not in OPEN_OBJECTS:
                extra = node.get("additionalProperties")
                if not (extra is False or isinstance(extra, dict)):
                    open_objects.append(path)
            for key, child in node.items():
                walk(child, f"{path}.{key}" if path else key)
        elif isinstance(node, list):
            for i, child in enumerate(node):
                walk(child, f"{path}[{i}]")

    walk(schema, "")
    assert not open_objects
    assert schema["additionalProperties"] is False


def test_default_values_pass_the_schema(chart: Any) -> None:
    chart.validate_schema({})
    for values in SCENARIOS.values():
        chart.validate_schema(values)


def test_image_tag_follows_app_version() -> None:
    chart_yaml = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert chart_yaml["apiVersion"] == "v2"
    assert values["image"]["tag"] == chart_yaml["appVersion"]
    pyproject = (ROOT / "pyproject.toml").read_text()
    init = (ROOT / "agent" / "__init__.py").read_text()
    version = re.search(r'__version__ = "([^"]+)"', init)
    assert "agent.__version__" in pyproject and version
    assert chart_yaml["appVersion"] == version.group(1), "bump Chart.yaml appVersion and values image.tag"


def leaf_paths(node: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(node, dict) and node:
        for key, child in node.items():
            yield from leaf_paths(child, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix


def test_readme_documents_every_value() -> None:
    """Every key of values.yaml, or a parent of it (e.g. `securityContext`), is in the README table."""
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def documented(path: str) -> bool:
        parts = path.split(".")
        return any(f"| `{'.'.join(parts[:n])}` |" in readme for n in range(1, len(parts) + 1))

    missing = [p for p in leaf_paths(values) if not documented(p)]
    assert not missing, f"chart README values table lacks {missing}"


# --- one source for rules and dashboards ----------------------------------------------------------


def load_sync_module() -> Any:
    spec = importlib.util.spec_from_file_location("sync_files", ROOT / "helm" / "sync-files.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_chart_files_match_sources() -> None:
    """Every copy under helm/goodhart-agent/files equals its source; run helm/sync-files.py."""
    sync = load_sync_module()
    if not RULES_SOURCE.exists() and not list(DASHBOARDS_SOURCE.glob("*.json")):
        pytest.skip("neither rules/goodhart-rules.yml nor dashboards/*.json exists yet")
    problems = sync.differences(ROOT)
    assert not problems, "\n".join(problems) + "\nrun: python helm/sync-files.py"
    if RULES_SOURCE.exists():
        assert (CHART / "files" / "goodhart-rules.yml").read_bytes() == RULES_SOURCE.read_bytes()
    for src in DASHBOARDS_SOURCE.glob("*.json"):
        assert (CHART / "files" / "dashboards" / src.name).read_bytes() == src.read_bytes()


def test_sync_script_detects_and_repairs_drift(tmp_path: Path) -> None:
    sync = load_sync_module()
    (tmp_path / "rules").mkdir()
    (tmp_path / "dashboards").mkdir()
    (tmp_path / "helm" / "goodhart-agent" / "files" / "dashboards").mkdir(parents=True)
    (tmp_path / "rules" / "goodhart-rules.yml").write_text(PLACEHOLDER_RULES)
    (tmp_path / "dashboards" / "a.json").write_text("{}\n")
    stale = tmp_path / "helm" / "goodhart-agent" / "files" / "dashboards" / "old.json"
    stale.write_text("{}\n")
    assert len(sync.differences(tmp_path)) == 3  # two missing copies, one stale
    sync.sync(tmp_path)
    assert sync.differences(tmp_path) == []
    assert not stale.exists()
    (tmp_path / "dashboards" / "a.json").write_text('{"changed": true}\n')
    assert sync.differences(tmp_path) == ["helm/goodhart-agent/files/dashboards/a.json: differs from dashboards/a.json"]


# --- the sidecar from another chart -------------------------------------------------------------


def docs_parent_template() -> str:
    """The pod template that docs/deploy.md tells users to write into their own chart."""
    text = (ROOT / "docs" / "deploy.md").read_text()
    match = re.search(r"<!-- parent-chart-template -->\s*```yaml\n(.*?)```", text, re.S)
    assert match, "docs/deploy.md lost its parent-chart template"
    return match.group(1)


@pytest.mark.parametrize("native", [True, False])
def test_named_template_works_from_another_chart(helm: Any, kv: Any, chart_dir: Path, tmp_path: Path,
                                                 native: bool) -> None:
    """A parent chart with goodhart-agent as a dependency, its Deployment written as docs/deploy.md
    says: the sidecar comes out as the chart's own example app gets it, names match the subchart's
    ConfigMap, and the subchart's schema accepts the values Helm hands it (global included)."""
    parent = tmp_path / "my-app"
    (parent / "templates").mkdir(parents=True)
    (parent / "charts").mkdir()
    shutil.copytree(chart_dir, parent / "charts" / "goodhart-agent")
    (parent / "Chart.yaml").write_text(
        "apiVersion: v2\nname: my-app\nversion: 1.0.0\nappVersion: '9.9.9'\n"
        "dependencies:\n  - name: goodhart-agent\n    version: 0.1.0\n")
    (parent / "values.yaml").write_text(yaml.safe_dump({
        "global": {"imageRegistry": ""},
        "goodhart-agent": {"sidecar": {"native": native}},
    }))
    (parent / "templates" / "deployment.yaml").write_text(docs_parent_template())
    with helm.Chart.load(str(parent)) as parent_chart:
        objects = render(parent_chart, {})
    app = next(o for o in objects if o["kind"] == "Deployment")
    for version in kubernetes_versions():
        kv.validate(strip(app), version, strict=True)
    spec = app["spec"]["template"]["spec"]
    agent = agent_containers(spec)[0]
    assert ("restartPolicy" in agent) is native
    assert [c["name"] for c in spec.get("initContainers", [])] == (["goodhart-agent"] if native else [])
    assert agent["image"] == "goodhart-agent:0.1.0"  # this chart's image, not the parent's appVersion
    cm = next(o for o in objects if o["kind"] == "ConfigMap" and "config.yaml" in o["data"])
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["goodhart-config"]["configMap"]["name"] == cm["metadata"]["name"]
    assert app["spec"]["template"]["metadata"]["labels"]["goodhart-agent/scrape"] == "true"
    # The same container the chart's own example app gets.
    with helm.Chart.load(str(chart_dir)) as own:
        own_objects = render(own, {"exampleApp": {"enabled": True}, "sidecar": {"native": native}})
    own_spec = pod_specs(own_objects)[0]
    assert agent == agent_containers(own_spec)[0]
    assert spec["volumes"] == own_spec["volumes"]


def test_other_chart_values_equal_the_rendered_sidecar(chart: Any) -> None:
    """examples/other-chart-values.yaml (for extraContainers/sidecars hooks) is what the named
    template renders for a release named goodhart-agent with a plain sidecar."""
    snippet = example_values("other-chart-values.yaml")
    objects = render(chart, {"exampleApp": {"enabled": True}, "sidecar": {"native": False}}, name="goodhart-agent")
    spec = pod_specs(objects)[0]
    assert snippet["extraContainers"] == agent_containers(spec)
    assert snippet["extraVolumes"] == spec["volumes"]
    app = next(c for c in spec["containers"] if c["name"] == "app")
    assert snippet["extraVolumeMounts"] == app["volumeMounts"]
    assert snippet["podLabels"] == {"goodhart-agent/scrape": "true"}
