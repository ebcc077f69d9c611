#!/usr/bin/env python3
"""Bring the Helm chart in step with its sources, or check that it is.

Three things in ``helm/goodhart-agent`` are derived from one source each elsewhere in the repository:

- ``files/goodhart-rules.yml``: a copy of ``rules/goodhart-rules.yml`` (Helm reads only files
  inside the chart; the PrometheusRule template embeds it);
- ``files/dashboards/*.json``: copies of ``dashboards/*.json`` (the dashboards ConfigMap);
- the ``config`` part of ``values.schema.json``: generated from the agent's config model
  (``agent.config.Config``), so that the chart accepts exactly the agent's config keys, minus the
  ones the chart sets itself (``listen``, ``state_dir``, ``source.listen``, ``forward.url``,
  ``forward.token_env``).

Run this after changing a source; ``tests/test_helm.py`` fails while the chart differs.

    python helm/sync-files.py          # update the chart
    python helm/sync-files.py --check  # exit 1 and list the differences, change nothing
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHART = Path("helm") / "goodhart-agent"
# Agent config keys the chart owns, as key paths: they follow its ports, volumes and forwarder values
# (sidecar.forwarder.url and .tokenSecret set forward.url and forward.token_env). A path whose
# model does not exist (yet) is skipped; the other forward keys stay values under config.forward.
CHART_OWNED = (("listen",), ("state_dir",), ("source", "listen"), ("forward", "url"), ("forward", "token_env"))
# Schema keywords left out: generated noise (title), documentation that Helm never reads
# (default, examples), and OpenAPI's discriminator (the oneOf next to it does the validating).
DROPPED_KEYWORDS = {"title", "default", "examples", "discriminator"}


def file_pairs(root: Path = ROOT) -> list[tuple[Path, Path]]:
    """(source, copy) for every source that exists, plus (missing source, copy) for stale copies."""
    files = root / CHART / "files"
    result = [(root / "rules" / "goodhart-rules.yml", files / "goodhart-rules.yml")]
    sources = sorted((root / "dashboards").glob("*.json"))
    result += [(src, files / "dashboards" / src.name) for src in sources]
    names = {src.name for src in sources}
    result += [
        (root / "dashboards" / copy.name, copy)
        for copy in sorted((files / "dashboards").glob("*.json"))
        if copy.name not in names
    ]
    return result


def _clean(node: Any) -> Any:
    """A copy of a JSON schema without DROPPED_KEYWORDS (property names are left alone)."""
    if isinstance(node, list):
        return [_clean(item) for item in node]
    if not isinstance(node, dict):
        return node
    cleaned = {}
    for key, value in node.items():
        if key in DROPPED_KEYWORDS:
            continue
        if key in ("properties", "$defs", "patternProperties"):
            cleaned[key] = {name: _clean(sub) for name, sub in value.items()}
        else:
            cleaned[key] = _clean(value)
    return cleaned


def agent_config_schema(root: Path = ROOT) -> dict[str, Any] | None:
    """The agent config's JSON schema as the chart embeds it; None when the agent has no config model.

    Computed in a fresh interpreter so that the agent found is the one under ``root``.
    """
    if not (root / "agent" / "config" / "__init__.py").exists():
        return None
    code = "import json; from agent.config import Config; print(json.dumps(Config.model_json_schema()))"
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                            timeout=120, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"cannot read the agent's config model: {result.stderr.strip()}")
    schema = _clean(json.loads(result.stdout))
    for path in CHART_OWNED:
        node = _model_at(schema, path[:-1])
        if node is None:
            continue
        node.get("properties", {}).pop(path[-1], None)
        if path[-1] in node.get("required", []):
            node["required"].remove(path[-1])
    return dict(schema)


def _model_at(schema: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any] | None:
    """The object schema at a key path, following $ref and a nullable anyOf; None when absent."""
    node: Any = schema
    for key in (None, *path):
        if key is not None:
            node = node.get("properties", {}).get(key) if isinstance(node, dict) else None
        for _ in range(4):  # resolve {"$ref"} and {"anyOf": [{"$ref"}, {"type": "null"}]}
            if not isinstance(node, dict):
                return None
            if "$ref" in node:
                node = schema.get("$defs", {}).get(node["$ref"].rsplit("/", 1)[-1])
            elif "anyOf" in node:
                node = next((n for n in node["anyOf"] if isinstance(n, dict) and "$ref" in n), None)
            else:
                break
    return node if isinstance(node, dict) else None


def _embedded(values_schema: dict[str, Any]) -> dict[str, Any]:
    config = dict(values_schema["properties"]["config"])
    if "$defs" in values_schema:
        config["$defs"] = values_schema["$defs"]
    return config


def _embed(values_schema: dict[str, Any], config_schema: dict[str, Any]) -> dict[str, Any]:
    """values_schema with properties.config and the root $defs taken from config_schema."""
    config = dict(config_schema)
    defs = config.pop("$defs", {})
    config["description"] = ("the agent's configuration (generated from agent.config.Config by "
                             "helm/sync-files.py; listen, state_dir and source.listen are set by the chart)")
    out = dict(values_schema)
    out["properties"] = {**values_schema["properties"], "config": config}
    out["$defs"] = defs
    return out


def differences(root: Path = ROOT) -> list[str]:
    """One line per chart file that is missing, stale or different from its source."""
    problems = []
    for src, copy in file_pairs(root):
        src_rel, copy_rel = src.relative_to(root), copy.relative_to(root)
        if not src.exists():
            if copy.exists():
                problems.append(f"{copy_rel}: its source {src_rel} does not exist")
        elif not copy.exists():
            problems.append(f"{copy_rel}: missing copy of {src_rel}")
        elif copy.read_bytes() != src.read_bytes():
            problems.append(f"{copy_rel}: differs from {src_rel}")
    schema_path = root / CHART / "values.schema.json"
    generated = agent_config_schema(root)
    if generated is not None and schema_path.exists():
        current = json.loads(schema_path.read_text())
        if _embedded(_embed(current, generated)) != _embedded(current):
            problems.append(f"{schema_path.relative_to(root)}: config part differs from agent.config.Config")
    return problems


def sync(root: Path = ROOT) -> list[str]:
    """Make every derived file equal to its source; returns what was done."""
    done = []
    for src, copy in file_pairs(root):
        copy_rel = copy.relative_to(root)
        if not src.exists():
            if copy.exists():  # a copy whose source is gone is stale
                copy.unlink()
                done.append(f"removed {copy_rel}")
            continue
        if copy.exists() and copy.read_bytes() == src.read_bytes():
            continue
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, copy)
        done.append(f"copied {src.relative_to(root)} -> {copy_rel}")
    schema_path = root / CHART / "values.schema.json"
    generated = agent_config_schema(root)
    if generated is not None and schema_path.exists():
        current = json.loads(schema_path.read_text())
        updated = _embed(current, generated)
        if updated != current:
            schema_path.write_text(json.dumps(updated, indent=2) + "\n")
            done.append(f"regenerated the config part of {schema_path.relative_to(root)}")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report differences (exit 1 if any)")
    args = parser.parse_args(argv)
    if args.check:
        problems = differences()
        for line in problems:
            print(line)
        if problems:
            print("run: python helm/sync-files.py", file=sys.stderr)
        return 1 if problems else 0
    for line in sync():
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
