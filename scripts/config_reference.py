"""Writes docs/config.md from the config schema, so the reference can never drift from the code.

Run ``python scripts/config_reference.py`` after changing agent/config/; a test fails when the
committed file differs from what this prints.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from agent.config import Config

HEADER = """# Configuration reference

Generated from `agent/config/` by `python scripts/config_reference.py`; do not edit by hand.
`[]` marks a list item. A key without a default is required when its section is present.
Any scalar key can be overridden from the environment as `GOODHART__SECTION__KEY=value`.

| key | type | default | meaning |
| --- | --- | --- | --- |
"""


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is None:
        return getattr(annotation, "__name__", str(annotation))
    args = [a for a in get_args(annotation) if a is not type(None)]
    name = getattr(origin, "__name__", str(origin))
    if name in ("Union", "UnionType"):
        return " \\| ".join(_type_name(a) for a in args)
    if name == "Literal":
        return " \\| ".join(str(a) for a in get_args(annotation))
    if name == "Annotated":
        return _type_name(args[0])
    return f"{name}[{', '.join(_type_name(a) for a in args)}]"


def _submodels(annotation: Any) -> list[tuple[type[BaseModel], str]]:
    found: list[tuple[type[BaseModel], str]] = []
    for arg in get_args(annotation) or (annotation,):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            found.append((arg, ""))
        elif get_origin(arg) is list:
            item = get_args(arg)[0]
            for sub, _ in _submodels(item):
                found.append((sub, "[]"))
        elif get_origin(arg) is not None and get_args(arg):
            found.extend(_submodels(arg))
    return found


def rows(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, str, str, str]]:
    for name, field in model.model_fields.items():
        key = prefix + (field.alias or name)  # the key users write (schema_ is spelled schema)
        subs = _submodels(field.annotation)
        if subs:
            yield key + subs[0][1], "section", "", field.description or ""
            seen: set[str] = set()
            for sub, suffix in subs:
                for row in rows(sub, key + suffix + "."):
                    if row[0] not in seen:
                        seen.add(row[0])
                        yield row
            continue
        default = field.default
        if default is PydanticUndefined:
            shown = "required" if field.default_factory is None else f"`{field.default_factory()!r}`"
        else:
            shown = f"`{default!r}`" if default is not None else "none"
        yield key, _type_name(field.annotation), shown, field.description or ""


def render() -> str:
    lines = [f"| `{k}` | {t} | {d} | {m} |" for k, t, d, m in rows(Config)]
    return HEADER + "\n".join(lines) + "\n"


def main() -> int:
    target = Path(__file__).resolve().parent.parent / "docs" / "config.md"
    if "--check" in sys.argv:
        return 0 if target.read_text() == render() else 1
    target.write_text(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
