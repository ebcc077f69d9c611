"""``json_valid``: 1 when a text parses as JSON (and, optionally, satisfies a JSON Schema), else 0.

For structured-output features: the share of replies a downstream parser can use. A field that
already holds an object or array (the app logged parsed output) counts as JSON and is checked
against the schema. Schemas are checked with the ``jsonschema`` package (an optional extra),
using the validator for the schema's own ``$schema`` draft (2020-12 when it names none).

>>> from agent.config import JsonValidCompute
>>> valid = build(JsonValidCompute(kind="json_valid", field="output"))
>>> valid({"output": '{"refund": true}'}), valid({"output": "Sure! {refund: true}"})
(1.0, 0.0)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agent.compute.base import BuildError, ComputeFailure, Computer, field_value
from agent.config import JsonValidCompute


def load_schema(schema: dict[str, Any] | str) -> Any:
    """A jsonschema validator for an inline schema or a schema file; ValueError with a reason."""
    if isinstance(schema, str):
        try:
            schema = json.loads(Path(schema).read_text(encoding="utf-8"))
        except OSError as err:
            raise ValueError(f"cannot read {schema}: {err.strerror}") from None
        except ValueError as err:
            raise ValueError(f"{schema} is not JSON: {err}") from None
        if not isinstance(schema, dict):
            raise ValueError("a JSON Schema file must hold an object")
    try:
        import jsonschema
    except ImportError:
        raise ValueError("a schema needs the jsonschema package: pip install 'goodhart-agent[schemas]'") from None
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as err:
        where = "/".join(str(p) for p in err.absolute_path)
        raise ValueError(f"not a valid JSON Schema{' at /' + where if where else ''}: {err.message}") from None
    return cls(schema)


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")  # Python's json accepts NaN and Infinity; JSON does not


class JsonValidComputer(Computer):
    reasons = ("missing_field", "schema_error")

    def __init__(self, field: str, validator: Any | None) -> None:
        self.field = field
        self.validator = validator

    def __call__(self, record: dict[str, Any]) -> float:
        value = field_value(record, self.field)
        if isinstance(value, str):
            try:
                value = json.loads(value, parse_constant=_not_json)
            except (ValueError, RecursionError):
                return 0.0
        if self.validator is None:
            return 1.0
        try:
            return 1.0 if self.validator.is_valid(value) else 0.0
        except Exception as err:  # e.g. a $ref that cannot be resolved: this record's value fails
            raise ComputeFailure("schema_error", type(err).__name__) from None


def build(spec: JsonValidCompute) -> JsonValidComputer:
    """Load and check the schema once at start; an unusable one is a :class:`BuildError` at ``schema``."""
    validator = None
    if spec.schema_ is not None:
        try:
            validator = load_schema(spec.schema_)
        except ValueError as err:
            raise BuildError("schema", str(err)) from None
    return JsonValidComputer(spec.field, validator)
