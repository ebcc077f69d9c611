"""Turning a YAML file (or an already parsed mapping) into a validated ``Config``.

Environment overrides are overlaid on the parsed tree before validation, and pydantic's errors
become one ``key.path: reason`` line each in a ``ConfigError``, so every problem is reported at once.
Only shape is checked here; ``agent.compute.load_and_build`` adds the problems of building the
computed proxies, which is why the parsed tree and its individually valid compute specs are exposed.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from agent.config.base import ConfigError
from agent.config.compute import ComputeConfig
from agent.config.schema import Config, ProxyConfig

ENV_PREFIX = "GOODHART__"
ENV_SHORTHANDS = {
    "GOODHART_STATE_DIR": ("state_dir",),
    "GOODHART_LISTEN": ("listen",),
    "GOODHART_LOG_LEVEL": ("log", "level"),
}


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


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping: the second would silently win."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def read_config_tree(path: str | Path) -> Any:
    """The parsed YAML of a config file (``{}`` when empty); ConfigError naming the file when it is
    unreadable, not YAML (with line, column and what is wrong) or gives a key twice."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError([f"{path}: cannot read: {err.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8 text"]) from None
    try:
        tree = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError([f"{path}: not valid YAML{where}: {problem}"]) from None
    return tree if tree is not None else {}


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file's shape; every problem is reported, not just the first."""
    return config_from_mapping(read_config_tree(path), environ)


def compute_specs(tree: Any) -> list[tuple[int, ComputeConfig]]:
    """(index, spec) of every ``proxies`` entry that is valid on its own and computed.

    Lets the build step report its problems together with shape problems elsewhere in the same
    file. Proxies cannot be overridden from the environment, so the raw tree is enough.
    """
    proxies = tree.get("proxies") if isinstance(tree, dict) else None
    specs: list[tuple[int, ComputeConfig]] = []
    for index, entry in enumerate(proxies if isinstance(proxies, list) else []):
        try:
            proxy = ProxyConfig.model_validate(entry)
        except ValidationError:
            continue
        if proxy.compute is not None:
            specs.append((index, proxy.compute))
    return specs
