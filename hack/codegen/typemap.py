"""OpenAPI 3.0 schema -> Python type expression, collecting the classes to emit.

`TypeMapper.type_of(schema, context)` returns the annotation for a schema (a
string such as `list[Instance]`) and records every attrs class and enum it needs
in `TypeMapper.defs`, children before parents, so the emitted module can define
them in that order without forward references.

Mapping rules (docs/codegen.md repeats them for driver authors):
- string/integer/number/boolean -> str/int/float/bool; `format` is not used
  (date-times stay `str`: the clouds' formats differ and callers rarely need one).
- enum -> `str`, plus an `enum.StrEnum` of the documented values. A cloud that
  adds a value must not break structuring, so the field accepts any string; the
  StrEnum gives callers constants to compare with (a StrEnum member *is* a str).
- array -> `list[T]`; object with properties -> an attrs class; object with only
  `additionalProperties: <schema>` -> `dict[str, T]`; any other object -> `dict[str, Any]`.
- allOf -> one class with the merged properties (no inheritance); an allOf of one
  schema and empty ones (DigitalOcean's `allOf: [{$ref: tags_array}, {}]`) is that schema.
- anyOf/oneOf: null branches make the result nullable; one branch left -> that
  branch; all branches objects -> one class with the union of their properties,
  required only where every branch requires it, a property of differing types
  becoming `Any` (string enums are merged instead); all branches of one primitive
  type (Paperspace: `enum: [ny2]`, `enum: [ca1]`, any string) -> that type;
  anything else -> `Any`.
- `$ref` to `#/components/schemas/X` -> class (or enum) `X`; an inline object is
  named from where it occurs (`<Operation>Response`, `<Parent><Property>`,
  `...Item` for array items), overridable by the client's `aliases`; two inline
  objects of the same shape (ignoring descriptions and examples) share a class.
"""

from __future__ import annotations

import json
import keyword
import re
from dataclasses import dataclass, field
from typing import Any

Schema = dict[str, Any]
ANNOTATION_KEYS = ("description", "example", "examples", "title", "default", "externalDocs")
# A field named like a type used in annotations would shadow it in the class body.
SHADOWING = {"str", "int", "float", "bool", "list", "dict", "Any", "attrs", "enum"}
PRIMITIVES = {"string": "str", "integer": "int", "number": "float", "boolean": "bool"}


@dataclass
class Field:
    name: str
    json_name: str
    annotation: str
    required: bool
    nullable: bool
    enum: str | None = None  # the StrEnum documenting a str field's values


@dataclass
class ModelDef:
    name: str
    doc: str
    fields: list[Field]


@dataclass
class EnumDef:
    name: str
    doc: str
    values: list[str]


@dataclass
class TypeMapper:
    doc: Any
    aliases: dict[str, str] = field(default_factory=dict)
    defs: dict[str, ModelDef | EnumDef] = field(default_factory=dict)
    _by_shape: dict[str, str] = field(default_factory=dict)
    _building: set[str] = field(default_factory=set)
    _enums: dict[int, str] = field(default_factory=dict)  # id(enum schema) -> StrEnum

    # -- references ------------------------------------------------------

    def resolve(self, schema: Schema) -> Schema:
        """Follow `$ref`s (siblings of a `$ref` are ignored, as 3.0 says)."""
        while "$ref" in schema:
            schema = self.pointer(schema["$ref"])
        return schema

    def pointer(self, ref: str) -> Any:
        node = self.doc
        for part in ref.removeprefix("#/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    # -- public ----------------------------------------------------------

    def type_of(self, schema: Schema, context: str) -> str:
        if "$ref" in schema:
            name = component_name(schema["$ref"])
            return self._type_of(self.resolve(schema), name or context, named=bool(name))
        return self._type_of(schema, context, named=False)

    def nullable(self, schema: Schema) -> bool:
        if schema.get("nullable") is True:
            return True
        branches = schema.get("anyOf") or schema.get("oneOf") or []
        if "allOf" in schema and (only := sole_branch(schema)) is not None:
            return self.nullable(only)  # DigitalOcean's next_backup_window: null when none
        return any(is_null(b) for b in branches) or (
            "$ref" in schema and self.nullable(self.resolve(schema))
        )

    # -- mapping ---------------------------------------------------------

    def _type_of(self, schema: Schema, name: str, named: bool) -> str:
        if "allOf" in schema:
            if (only := sole_branch(schema)) is not None:
                return self.type_of(only, name)  # `allOf: [X, {}]` is X, maybe not an object
            return self._object(self._merge_all_of(schema), name, named)
        branches = [b for b in schema.get("anyOf") or schema.get("oneOf") or [] if not is_null(b)]
        if branches:
            return self._union(schema, branches, name, named)
        if "enum" in schema:
            return self._enum(schema, name)
        kind = schema.get("type")
        if kind in PRIMITIVES:
            return PRIMITIVES[kind]
        if kind == "array":
            return f"list[{self.type_of(schema.get('items', {}), name + 'Item')}]"
        if kind == "object" or "properties" in schema:
            return self._object(schema, name, named)
        return "Any"

    def _union(self, schema: Schema, branches: list[Schema], name: str, named: bool) -> str:
        if len(branches) == 1:
            return self.type_of(branches[0], name)
        resolved = [self.resolve(b) for b in branches]
        resolved = [self._merge_all_of(r) if "allOf" in r else r for r in resolved]
        if all(r.get("type") == "object" or "properties" in r for r in resolved):
            merged = merge_objects(resolved, self)
            merged["description"] = schema.get("description", "")
            return self._object(merged, name, named)
        kinds = {r.get("type") for r in resolved}
        if len(kinds) == 1 and (kind := kinds.pop()) in PRIMITIVES:
            return PRIMITIVES[kind]  # e.g. some listed values "or any other string"
        return "Any"

    def _merge_all_of(self, schema: Schema) -> Schema:
        merged: Schema = {"type": "object", "properties": {}, "required": []}
        for branch in [*schema["allOf"], {k: v for k, v in schema.items() if k != "allOf"}]:
            part = self.resolve(branch)
            if "allOf" in part:
                part = self._merge_all_of(part)
            merged["properties"].update(part.get("properties", {}))
            merged["required"] += [
                r for r in part.get("required", []) if r not in merged["required"]
            ]
            if part.get("description"):
                merged["description"] = part["description"]
        return merged

    def _enum(self, schema: Schema, name: str) -> str:
        values = [v for v in schema["enum"] if v is not None]
        if schema.get("type", "string") != "string" or not values:
            return PRIMITIVES.get(schema.get("type", ""), "Any")
        if id(schema) not in self._enums:  # the same schema object: one StrEnum
            name = self._free_name(self.aliases.get(name, name))
            self.defs[name] = EnumDef(name, first_paragraph(schema), [str(v) for v in values])
            self._enums[id(schema)] = name
        return "str"

    def enum_name(self, schema: Schema) -> str | None:
        """The StrEnum emitted for a string-enum schema (or for its array items)."""
        schema = self.resolve(schema)
        if schema.get("type") == "array":
            schema = self.resolve(schema.get("items", {}))
        return self._enums.get(id(schema))

    def _object(self, schema: Schema, name: str, named: bool) -> str:
        properties: dict[str, Schema] = schema.get("properties") or {}
        if not properties:
            extra = schema.get("additionalProperties")
            if isinstance(extra, dict) and extra:
                return f"dict[str, {self.type_of(extra, name + 'Value')}]"
            return "dict[str, Any]"
        name = self.aliases.get(name, name)
        # Components are distinct types even when alike; inline twins share a class.
        shape = shape_key(schema) if not named else ""
        if shape in self._by_shape:
            return self._by_shape[shape]
        if named and name in self._building:
            # Would need forward references; no selected operation has one so far.
            raise SystemExit(f"codegen: recursive schema {name} is not supported")
        if named and isinstance(self.defs.get(name), ModelDef):
            return name
        name = self._free_name(name)
        self._building.add(name)
        fields = self._fields(schema, properties, name)
        self._building.discard(name)
        self.defs[name] = ModelDef(name, first_paragraph(schema), fields)
        if shape:
            self._by_shape[shape] = name
        return name

    def _fields(self, schema: Schema, properties: dict[str, Schema], owner: str) -> list[Field]:
        required = set(schema.get("required", []))
        fields: list[Field] = []
        taken: set[str] = set()
        for json_name, prop in properties.items():
            annotation = self.type_of(prop, owner + pascal(json_name))
            python = unique(snake(json_name), taken)
            enum = self.enum_name(prop) if annotation in ("str", "list[str]") else None
            nullable = self.nullable(prop)
            fields.append(
                Field(python, json_name, annotation, json_name in required, nullable, enum)
            )
        return fields

    def _free_name(self, name: str) -> str:
        candidate, n = name, 1
        while candidate in self.defs or candidate in self._building:
            n += 1
            candidate = f"{name}{n}"
        return candidate


def merge_objects(schemas: list[Schema], mapper: TypeMapper) -> Schema:
    """One object schema accepting what any of `schemas` describes (see module doc)."""
    properties: dict[str, Schema] = {}
    for schema in schemas:
        for key, prop in (schema.get("properties") or {}).items():
            properties[key] = (
                merge_property(properties[key], prop, mapper) if key in properties else prop
            )
    required = [
        r
        for r in schemas[0].get("required", [])
        if all(r in s.get("required", []) for s in schemas)
    ]
    return {"type": "object", "properties": properties, "required": required}


def merge_property(a: Schema, b: Schema, mapper: TypeMapper) -> Schema:
    ra, rb = mapper.resolve(a), mapper.resolve(b)
    if shape_key(ra) == shape_key(rb):
        return a
    if "enum" in ra and "enum" in rb and ra.get("type") == rb.get("type") == "string":
        values = ra["enum"] + [v for v in rb["enum"] if v not in ra["enum"]]
        return {**ra, "enum": values}
    return {}


def is_null(schema: Schema) -> bool:
    return schema.get("type") == "null" or schema.get("enum") == [None]


def component_name(ref: str) -> str | None:
    prefix = "#/components/schemas/"
    return pascal(ref[len(prefix) :]) if ref.startswith(prefix) else None


def shape_key(schema: Any) -> str:
    """What decides the generated type: the schema without its annotations."""
    return json.dumps(strip_annotations(schema), sort_keys=True)


def strip_annotations(schema: Any) -> Any:
    if isinstance(schema, list):
        return [strip_annotations(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key in ANNOTATION_KEYS or key.startswith("x-"):
            continue
        if key == "properties":
            out[key] = {name: strip_annotations(s) for name, s in value.items()}
        else:
            out[key] = strip_annotations(value)
    return out


def first_paragraph(schema: Schema) -> str:
    text = str(schema.get("description") or "").strip().split("\n\n")[0]
    return " ".join(text.split())


def words(name: str) -> list[str]:
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", name)
    return [w for w in re.split(r"[^A-Za-z0-9]+", name) if w]


def snake(name: str) -> str:
    result = "_".join(w.lower() for w in words(name)) or "value"
    if result[0].isdigit():
        result = "n_" + result
    if keyword.iskeyword(result) or result in SHADOWING:
        result += "_"
    return result


def pascal(name: str) -> str:
    result = "".join(w[0].upper() + w[1:] for w in words(name)) or "Value"
    return "N" + result if result[0].isdigit() else result


def constant(value: str) -> str:
    """An enum member name for `value`: upper snake case, never empty or numeric-first."""
    result = "_".join(w.upper() for w in words(value)) or "EMPTY"
    return "V_" + result if result[0].isdigit() else result


def unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}_{n}"
    taken.add(candidate)
    return candidate


def sole_branch(schema: Schema) -> Schema | None:
    """The one non-empty branch of an allOf that adds nothing else, if so."""
    if any(k not in (*ANNOTATION_KEYS, "allOf", "nullable") for k in schema):
        return None
    full = [b for b in schema["allOf"] if any(k not in ANNOTATION_KEYS for k in b)]
    return full[0] if len(full) == 1 else None
