"""Building computers from a validated config: where a bad regex, schema or model becomes a config error.

The config checks only shape; compiling, loading and smoke-testing happen here, once at start.
A spec that cannot be built is reported as ``proxies.N.compute.<key>: reason``, the same line a
shape problem gets, and every proxy is tried so that all problems are reported at once.
``load_and_build`` is what the CLI calls: the config and its computers, or one ``ConfigError``
with shape and build problems together, in key order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from agent.compute import duration, json_valid, length, match, model
from agent.compute.base import BuildError, Computer
from agent.config import ComputeConfig, Config, ConfigError, compute_specs, config_from_mapping, read_config_tree

_BUILDERS: dict[str, Callable[[Any], Computer]] = {
    "length": length.build,
    "duration": duration.build,
    "match": match.build,
    "json_valid": json_valid.build,
    "model": model.build,
}


def build_computer(spec: ComputeConfig, where: str = "compute") -> Computer:
    """The computer for one spec; ConfigError ``<where>.<key>: reason`` when it cannot be built."""
    try:
        return _BUILDERS[spec.kind](spec)
    except BuildError as err:
        raise ConfigError([f"{where}.{err.key}: {err}"]) from None


def _build_each(specs: Iterable[tuple[int, ComputeConfig]]) -> tuple[dict[int, Computer], list[str]]:
    """Build every spec, keeping going past failures: (computers by proxy index, problem lines)."""
    built: dict[int, Computer] = {}
    problems: list[str] = []
    for index, spec in specs:
        try:
            built[index] = build_computer(spec, f"proxies.{index}.compute")
        except ConfigError as err:
            problems += err.problems
    return built, problems


def build_computers(config: Config) -> dict[str, Computer]:
    """One computer per ``compute:`` proxy, by proxy name, in config order.

    Raises :class:`ConfigError` with one line per proxy that cannot be built (all of them).
    """
    built, problems = _build_each((i, p.compute) for i, p in enumerate(config.proxies) if p.compute is not None)
    if problems:
        raise ConfigError(problems)
    return {config.proxies[i].name: computer for i, computer in built.items()}


def _line_key(line: str, fields: list[str]) -> tuple[int, int]:
    """Where a problem line sorts: (top-level key's position in Config, proxy index); unknown keys last."""
    path = line.partition(": ")[0].split(".")
    position = fields.index(path[0]) if path[0] in fields else len(fields)
    index = int(path[1]) if path[0] == "proxies" and len(path) > 1 and path[1].isdigit() else -1
    return position, index


def merge_problems(shape: list[str], build: list[str]) -> list[str]:
    """Shape problems in their own order, each build problem inserted where its key path belongs."""
    fields = list(Config.model_fields)
    merged = list(shape)
    for line in build:
        key = _line_key(line, fields)
        at = next((i for i, other in enumerate(merged) if _line_key(other, fields) > key), len(merged))
        merged.insert(at, line)
    return merged


def load_and_build(path: str | Path, environ: Mapping[str, str] | None = None) -> tuple[Config, dict[str, Computer]]:
    """Read, validate and build; ConfigError with every problem, shape and build, in key order."""
    tree = read_config_tree(path)
    try:
        config = config_from_mapping(tree, environ)
    except ConfigError as err:
        _, build = _build_each(compute_specs(tree))
        raise ConfigError(merge_problems(err.problems, build)) from None
    return config, build_computers(config)
