"""Static checks of the Grafana dashboards, and of what ties dashboards, rules, runbooks and the
metric catalogue together.

No Grafana server runs here; these checks encode what breaks dashboards under file provisioning
(``${DS_...}`` inputs that nobody fills in, a datasource that is not the variable, a changing uid)
and what makes them drift (a metric renamed in one place only, JSON edited by hand). Whether every
query returns data from a real Prometheus is tests/test_prometheus_e2e.py's job.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent import __version__

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = ROOT / "dashboards"
RULES = ROOT / "rules" / "goodhart-rules.yml"
CATALOGUE = ROOT / "docs" / "metrics.md"
RUNBOOKS = ROOT / "docs" / "runbooks"
DS = {"type": "prometheus", "uid": "${datasource}"}
METRIC = re.compile(r"\b(?:namespace_job_proxy_audit_segment:[a-z0-9_]+:[a-z0-9_]+|goodhart_[a-z0-9_]+)")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def load_builder() -> Any:
    spec = importlib.util.spec_from_file_location("dashboards_build", DASHBOARDS / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dash["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows hold their panels


def query_panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in panels(dash) if p["type"] != "row"]


def exprs(dash: dict[str, Any]) -> list[str]:
    """Every PromQL expression: panel targets and annotation queries."""
    out = [t["expr"] for p in query_panels(dash) for t in p["targets"]]
    out += [a["expr"] for a in dash["annotations"]["list"] if "expr" in a]
    return out


def rule_exprs() -> list[str]:
    data = yaml.safe_load(RULES.read_text())
    return [r["expr"] for g in data["groups"] for r in g["rules"]]


def alert_rules() -> dict[str, dict[str, Any]]:
    data = yaml.safe_load(RULES.read_text())
    return {r["alert"]: r for g in data["groups"] for r in g["rules"] if "alert" in r}


def catalogue() -> set[str]:
    """Series named in the first column of the catalogue's tables."""
    names = set()
    for line in CATALOGUE.read_text(encoding="utf-8").splitlines():
        m = re.match(r"\|\s*`([^`]+)`\s*\|", line)
        if m:
            names.add(m.group(1))
    return names


def deprecated() -> dict[str, tuple[str, str]]:
    """Series in the catalogue's Deprecated table: name -> (replacement, release that removes it)."""
    text = CATALOGUE.read_text(encoding="utf-8")
    section = text.split("\n## Deprecated\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\|\s*`([^`]+)`\s*\|[^|]*\|\s*`([^`]+)`\s*\|[^|]*\|\s*([0-9.]+)\s*\|$", section, re.M)
    return {name: (replacement, removed) for name, replacement, removed in rows}


def in_catalogue(name: str, known: set[str]) -> bool:
    if name in known:
        return True
    return any(name.endswith(s) and name[: -len(s)] in known for s in HISTOGRAM_SUFFIXES)


# -- the generator --------------------------------------------------------------------------------
def test_there_is_a_dashboard() -> None:
    assert (DASHBOARDS / "goodhart-overview.json") in dashboard_files()


def test_committed_json_is_what_build_py_generates() -> None:
    build = load_builder()
    assert {f.name for f in dashboard_files()} == set(build.DASHBOARDS)
    for name, builder in build.DASHBOARDS.items():
        assert (DASHBOARDS / name).read_text(encoding="utf-8") == build.render(builder), (
            f"{name} differs from dashboards/build.py's output: run python dashboards/build.py")


# -- provisioning-safe ----------------------------------------------------------------------------
@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.name)
def test_no_import_inputs(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    dash = load(path)
    assert "${DS_" not in text and "__inputs" not in dash and "__requires" not in dash


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.name)
def test_fixed_uid_and_modern_schema(path: Path) -> None:
    dash = load(path)
    assert dash["uid"] == path.stem, "fixed uid, equal to the file name"
    assert re.fullmatch(r"[a-z0-9-]{1,40}", dash["uid"])
    assert dash["schemaVersion"] >= 36  # Grafana 9.0+; 39 is Grafana 10.4
    assert "id" not in dash or dash["id"] is None


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.name)
def test_datasource_variable_is_used_by_every_panel_target_annotation_and_variable(path: Path) -> None:
    dash = load(path)
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in query_panels(dash):
        assert panel["datasource"] == DS, panel["title"]
        assert panel["targets"], panel["title"]
        for t in panel["targets"]:
            assert t["datasource"] == DS, panel["title"]
    for ann in dash["annotations"]["list"]:
        if not ann.get("builtIn"):
            assert ann["datasource"] == DS, ann["name"]
    for v in variables.values():
        if v["type"] == "query":
            assert v["datasource"] == DS, v["name"]


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.name)
def test_variables_for_target_and_pair(path: Path) -> None:
    dash = load(path)
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    for name in ("job", "namespace", "pod", "proxy", "audit", "segment"):
        v = variables[name]
        assert v["type"] == "query" and v["includeAll"] and v["allValue"] == ".*", name
        assert "label_values(" in v["definition"], name


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.name)
def test_every_goodhart_selector_filters_by_the_variables(path: Path) -> None:
    dash = load(path)
    for expr in exprs(dash):
        for m in re.finditer(r"\b((?:namespace_job_proxy_audit_segment:)?goodhart_[a-z0-9_:]+)(\{[^}]*\})?", expr):
            name, selector = m.group(1), m.group(2) or ""
            assert 'job=~"$job"' in selector and 'namespace=~"$namespace"' in selector, (name, expr)
            if not name.startswith("namespace_job_"):
                assert 'pod=~"$pod"' in selector, (name, expr)


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.name)
def test_rates_use_rate_interval(path: Path) -> None:
    dash = load(path)
    for expr in exprs(dash):
        windows = re.findall(r"\[([^\]]+)\]", expr)  # every range selector
        assert all(w == "$__rate_interval" for w in windows), expr
        if re.search(r"\b(rate|irate|increase)\(", expr):
            assert windows, expr


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.name)
def test_panels_have_units_thresholds_and_descriptions(path: Path) -> None:
    dash = load(path)
    for panel in query_panels(dash):
        defaults = panel["fieldConfig"]["defaults"]
        assert defaults.get("unit"), panel["title"]
        assert defaults["thresholds"]["steps"], panel["title"]
        assert panel.get("description"), panel["title"]


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.name)
def test_layout_has_unique_ids_and_no_overlaps(path: Path) -> None:
    dash = load(path)
    ids = [p["id"] for p in panels(dash)]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps"
                cells.add((x, y))


def test_overview_has_the_panels_the_issue_asks_for() -> None:
    dash = load(DASHBOARDS / "goodhart-overview.json")
    titles = " | ".join(p["title"].lower() for p in query_panels(dash))
    for words in (("alarm state", "per pair and segment"), ("proxy vs audit",), ("gap", "interval"),
                  ("statistic vs threshold",), ("correlation", "now", "reference"), ("audit flow",),
                  ("budget",), ("records", "rejected"), ("source", "judge", "health")):
        assert any(all(w in t for w in words) for t in titles.split(" | ")), words
    by_title = {p["title"]: p for p in query_panels(dash)}
    state = by_title["Alarm state per pair and segment"]
    mapping = state["fieldConfig"]["defaults"]["mappings"][0]["options"]
    assert {k: v["text"] for k, v in mapping.items()} == {"0": "ok", "1": "warn", "2": "alarm"}
    corr = " ".join(t["expr"] for t in by_title["Rank correlation: now vs reference"]["targets"])
    assert 'period="window"' in corr and 'period="reference"' in corr
    gap = " ".join(t["expr"] for t in by_title["Gap with its interval"]["targets"])
    assert all(m in gap for m in ("goodhart_divergence_gap{", "_gap_lower{", "_gap_upper{"))


def grafana_to_promql(expr: str) -> str:
    """What Grafana sends for "All" and a 1 m scrape interval."""
    expr = expr.replace("$__rate_interval", "4m")
    return re.sub(r"\$\{?(job|namespace|pod|instance|proxy|audit|segment)\}?", ".*", expr)


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """Parsed by the real promtool: each query becomes a recording rule of a scratch rules file."""
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool not found (apt-get install prometheus)")
        pytest.skip("promtool not found")
    queries = [grafana_to_promql(e) for path in dashboard_files() for e in exprs(load(path))]
    assert all("$" not in q for q in queries), [q for q in queries if "$" in q]
    rules = {"groups": [{"name": "dashboard-queries", "rules": [
        {"record": f"dashboard:query_{i}:check", "expr": q} for i, q in enumerate(queries)]}]}
    (tmp_path / "queries.yml").write_text(yaml.safe_dump(rules))
    result = subprocess.run([promtool, "check", "rules", str(tmp_path / "queries.yml")], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# -- catalogue, rules, runbooks -------------------------------------------------------------------
def test_every_series_used_by_dashboards_and_rules_is_catalogued() -> None:
    known = catalogue()
    used = {m for e in rule_exprs() for m in METRIC.findall(e)}
    for path in dashboard_files():
        used |= {m for e in exprs(load(path)) for m in METRIC.findall(e)}
    assert used
    missing = sorted(m for m in used if not in_catalogue(m, known))
    assert not missing, f"not in docs/metrics.md: {missing}"


def test_every_catalogued_series_is_used_by_a_dashboard_or_a_rule() -> None:
    used = " ".join(rule_exprs())
    for path in dashboard_files():
        used += " ".join(exprs(load(path)))
    current = catalogue() - set(deprecated())
    unused = sorted(name for name in current if name not in ("up", "ALERTS") and name not in used)
    assert not unused, f"catalogued but neither charted nor alerted on: {unused}"


def test_deprecated_series_name_a_catalogued_replacement_and_are_not_used() -> None:
    old = deprecated()
    assert "goodhart_pair_pairs_total" in old
    used = " ".join(rule_exprs()) + " ".join(e for path in dashboard_files() for e in exprs(load(path)))
    for name, (replacement, removed) in old.items():
        assert replacement in catalogue() and replacement not in old, name
        release = tuple(int(part) for part in re.findall(r"\d+", __version__)[:3])
        assert tuple(int(part) for part in removed.split(".")) > release, (name, removed)
        assert not re.search(rf"\b{name}\b", used), f"{name} is deprecated: use {replacement}"


def test_recorded_series_are_catalogued() -> None:
    data = yaml.safe_load(RULES.read_text())
    recorded = {r["record"] for g in data["groups"] for r in g["rules"] if "record" in r}
    assert recorded <= catalogue()


def test_every_alert_has_a_runbook_with_the_three_sections() -> None:
    index = (RUNBOOKS / "README.md").read_text(encoding="utf-8")
    for name, rule in alert_rules().items():
        page = RUNBOOKS / f"{name}.md"
        assert page.is_file(), f"missing runbook {page}"
        text = page.read_text(encoding="utf-8")
        assert text.startswith(f"# {name}\n")
        for section in ("## What it means", "## Confirm", "## What to do"):
            assert section in text, (name, section)
        assert rule["annotations"]["runbook_url"].endswith(f"/docs/runbooks/{name}.md")
        assert f"({name}.md)" in index, f"{name} missing from docs/runbooks/README.md"
    pages = {p.stem for p in RUNBOOKS.glob("Goodhart*.md")}
    assert pages == set(alert_rules()), "a runbook without an alert, or the reverse"


def test_runbook_for_the_page_explains_rebaseline_and_rollback() -> None:
    text = (RUNBOOKS / "GoodhartProxyAuditDivergence.md").read_text(encoding="utf-8")
    assert "goodhart-agent rebaseline" in text and "/v1/rebaseline" in text
    assert "roll back" in text and "judge" in text.lower() and "/v1/events" in text


def test_series_named_in_runbooks_are_catalogued() -> None:
    known = catalogue()
    for page in RUNBOOKS.glob("*.md"):
        # `goodhart_detector_*`-style prefixes name families, not series.
        names = {n for n in METRIC.findall(page.read_text(encoding="utf-8")) if not n.endswith("_")}
        missing = sorted(n for n in names if not in_catalogue(n, known))
        assert not missing, (page.name, missing)
