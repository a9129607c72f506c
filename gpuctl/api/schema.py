"""OpenAPI v3 schemas for CRDs, emitted from attrs classes and their field metadata.

The attrs types in `gpuctl.api` are the one source of truth: every field carries a
`doc(...)` in its metadata (description, JSON name, bounds, pattern, CEL rules) and a
class may carry object-level CEL rules in `__validations__`. `schema_of(cls)` turns
a class into the structural schema the API server validates with; `json_name(f)`
is the key the same field has in the API server's JSON, which the converter uses.

Types map as follows (an optional `X | None` maps like `X`):

    str -> string          int -> integer (int64)     float -> number
    bool -> boolean        Decimal -> string (decimal pattern unless given)
    datetime -> string, format date-time              StrEnum -> string + enum
    list[X] -> array of X  dict[str, X] -> object with additionalProperties X
    attrs class -> object with properties; fields without a default are required

A field with a plain (non-None, non-factory) default gets it as the schema
`default`, so the API server fills it in just like the Python constructor does.
Emitting fails loudly (`SchemaError`) on a field without a description, so
`kubectl explain` documents every field.
"""

from __future__ import annotations

import datetime
import enum
import types
import typing
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import attrs

DECIMAL_PATTERN = r"^[0-9]+(\.[0-9]+)?$"
_KEY = "gpuctl.api"


class SchemaError(TypeError):
    """An attrs class cannot be turned into a CRD schema (missing description, bad type)."""


@attrs.frozen
class Rule:
    """One CEL rule (`x-kubernetes-validations` entry).

    `field_path` (e.g. ".providers") points the error at a child field, so the API
    server's message names it; rules that read `oldSelf` are transition rules and
    only run on update.
    """

    rule: str
    message: str
    field_path: str | None = None
    reason: str | None = None

    def to_schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.rule, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        if self.reason:
            out["reason"] = self.reason
        return out


def cel_string(text: str) -> str:
    """`text` as a single-quoted CEL string literal (backslashes and quotes escaped)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


IMMUTABLE = Rule("self == oldSelf", "is immutable", reason="FieldValueForbidden")


@attrs.frozen
class FieldDoc:
    """Schema facts about one attrs field; build it with `doc()`."""

    description: str
    name: str | None = None  # JSON name when not the camelCase of the attribute
    enum: tuple[str, ...] | None = None  # overrides the enum derived from a StrEnum type
    minimum: int | float | None = None
    maximum: int | float | None = None
    exclusive_minimum: bool = False
    pattern: str | None = None
    format: str | None = None
    min_length: int | None = None
    max_length: int | None = None
    min_items: int | None = None
    max_items: int | None = None
    max_properties: int | None = None
    list_type: str | None = None  # atomic | set | map
    list_map_keys: tuple[str, ...] | None = None
    rules: tuple[Rule, ...] = ()
    items: FieldDoc | None = None  # constraints on each list item / map value
    preserve_default: bool = True  # False: no schema default even if attrs has one


def doc(description: str, **facts: Any) -> dict[str, FieldDoc]:
    """Field metadata: `attrs.field(metadata=doc("What it is.", minimum=1))`."""
    for key in ("enum", "list_map_keys", "rules"):
        if key in facts and facts[key] is not None:
            facts[key] = tuple(facts[key])
    return {_KEY: FieldDoc(description, **facts)}


def item(**facts: Any) -> FieldDoc:
    """Constraints for the items of a list or the values of a map (no description)."""
    if "enum" in facts:
        facts["enum"] = tuple(facts["enum"])
    return FieldDoc("", **facts)


def field_doc(field: attrs.Attribute[Any]) -> FieldDoc:
    found = field.metadata.get(_KEY)
    if not isinstance(found, FieldDoc):
        raise SchemaError(f"field {field.name!r} has no doc(...) metadata")
    return found


def camel(name: str) -> str:
    """snake_case -> camelCase; a trailing underscore (`lambda_`) is dropped."""
    head, *rest = name.rstrip("_").split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def json_name(field: attrs.Attribute[Any]) -> str:
    """The key of this field in the API server's JSON."""
    return field_doc(field).name or camel(field.name)


def schema_of(cls: type) -> dict[str, Any]:
    """The structural schema of an attrs class (an object with properties)."""
    hints = typing.get_type_hints(cls)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for field in attrs.fields(cls):
        facts = field_doc(field)
        if not facts.description:
            raise SchemaError(f"{cls.__name__}.{field.name} has an empty description")
        name = json_name(field)
        prop = _schema_of_type(hints[field.name], facts)
        prop = {"description": facts.description, **prop}
        default = _schema_default(field, facts)
        if default is not None:
            prop["default"] = default
        properties[name] = prop
        if field.default is attrs.NOTHING:
            required.append(name)
    out: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        out["required"] = required
    rules: Sequence[Rule] = getattr(cls, "__validations__", ())
    if rules:
        out["x-kubernetes-validations"] = [r.to_schema() for r in rules]
    return out


def _schema_default(field: attrs.Attribute[Any], facts: FieldDoc) -> Any:
    default = field.default
    if not facts.preserve_default or default is None or default is attrs.NOTHING:
        return None
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        return None
    if isinstance(default, enum.Enum):
        return default.value
    if isinstance(default, Decimal):
        return format(default, "f")
    return default


def _schema_of_type(tp: Any, facts: FieldDoc) -> dict[str, Any]:
    tp = _strip_optional(tp)
    out = _base_schema(tp, facts)
    _apply_facts(out, facts)
    return out


def _strip_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != 1:
            raise SchemaError(f"unions other than X | None are not supported: {tp}")
        return args[0]
    return tp


def _base_schema(tp: Any, facts: FieldDoc) -> dict[str, Any]:
    origin = typing.get_origin(tp)
    if origin is list:
        (item_type,) = typing.get_args(tp)
        return {"type": "array", "items": _schema_of_type(item_type, facts.items or item())}
    if origin is dict:
        key_type, value_type = typing.get_args(tp)
        if key_type is not str:
            raise SchemaError(f"map keys must be str: {tp}")
        values = _schema_of_type(value_type, facts.items or item())
        return {"type": "object", "additionalProperties": values}
    if attrs.has(tp):
        return schema_of(tp)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"type": "string", "enum": [m.value for m in tp]}
    return _scalar_schema(tp)


def _scalar_schema(tp: Any) -> dict[str, Any]:
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer", "format": "int64"}
    if tp is float:
        return {"type": "number"}
    if tp is str:
        return {"type": "string"}
    if tp is Decimal:
        return {"type": "string", "pattern": DECIMAL_PATTERN}
    if tp is datetime.datetime:
        return {"type": "string", "format": "date-time"}
    raise SchemaError(f"no schema for type {tp!r}")


_FACT_KEYS = {
    "minimum": "minimum",
    "maximum": "maximum",
    "pattern": "pattern",
    "format": "format",
    "min_length": "minLength",
    "max_length": "maxLength",
    "min_items": "minItems",
    "max_items": "maxItems",
    "max_properties": "maxProperties",
    "list_type": "x-kubernetes-list-type",
}


def _apply_facts(out: dict[str, Any], facts: FieldDoc) -> None:
    if facts.enum is not None:
        out["enum"] = [str(e.value) if isinstance(e, enum.Enum) else e for e in facts.enum]
    for attr, key in _FACT_KEYS.items():
        value = getattr(facts, attr)
        if value is not None:
            out[key] = value
    if facts.exclusive_minimum:
        out["exclusiveMinimum"] = True
    if facts.list_map_keys is not None:
        out["x-kubernetes-list-map-keys"] = list(facts.list_map_keys)
    if facts.rules:
        out.setdefault("x-kubernetes-validations", [])
        out["x-kubernetes-validations"] += [r.to_schema() for r in facts.rules]
