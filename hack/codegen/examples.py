"""Example payloads built from a spec, for tests of the generated clients.

`example(mapper, schema)` returns the schema's own `example` when it has one of the
schema's JSON type (the cloud's published sample, used whole) and otherwise composes
an instance from its parts: every property (examples of properties where given), the
first value of an enum, the first non-null branch of an anyOf/oneOf, one item for
arrays and maps, and a placeholder of the right JSON type for a bare primitive.
"""

from __future__ import annotations

import copy
from typing import Any

from codegen.typemap import Schema, TypeMapper, is_null, sole_branch

PLACEHOLDERS: dict[str, Any] = {"string": "text", "integer": 7, "number": 2.5, "boolean": True}
JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "array": list,
    "object": dict,
}
DATE_TIME = "2024-05-06T07:08:09Z"


def example(mapper: TypeMapper, schema: Schema) -> Any:
    schema = mapper.resolve(schema)
    if "example" in schema and fits(schema, schema["example"]):
        return copy.deepcopy(schema["example"])
    if "allOf" in schema and (only := sole_branch(schema)) is not None:
        return example(mapper, only)
    if "allOf" in schema:
        parts = [mapper.resolve(p) for p in schema["allOf"]]
        merged: dict[str, Any] = {}
        for part in parts:
            value = example(mapper, part)
            if isinstance(value, dict):
                merged.update(value)
        return merged | object_example(mapper, schema)
    branches = [b for b in schema.get("anyOf") or schema.get("oneOf") or [] if not is_null(b)]
    if branches:
        return example(mapper, branches[0])
    if schema.get("enum"):
        return next(v for v in schema["enum"] if v is not None)
    kind = schema.get("type")
    if kind == "array":
        return [example(mapper, schema.get("items", {}))]
    if kind == "string" and schema.get("format") == "date-time":
        return DATE_TIME
    if kind in PLACEHOLDERS:
        return PLACEHOLDERS[kind]
    return object_example(mapper, schema)


def fits(schema: Schema, value: Any) -> bool:
    """Whether `value` has the schema's JSON type (RunPod's number `costPerHr` has
    the example "0.74"; a spec's slip must not make the example wrong)."""
    expected = JSON_TYPES.get(schema.get("type", ""), object)
    return isinstance(value, expected) and not (
        isinstance(value, bool) and schema.get("type") in ("integer", "number")
    )


def object_example(mapper: TypeMapper, schema: Schema) -> dict[str, Any]:
    properties = schema.get("properties") or {}
    if properties:
        return {name: example(mapper, prop) for name, prop in properties.items()}
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict) and extra:
        return {"key": example(mapper, extra)}
    return {}
