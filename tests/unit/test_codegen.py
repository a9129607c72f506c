"""The generator's rules: 3.0 spec patches, names, and the schema -> type mapping."""

import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from openapi_schema_validator import OAS30Validator

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hack"))  # the generator is a tool under hack/, not in gpuctl

from codegen import specs  # noqa: E402
from codegen.typemap import EnumDef, ModelDef, TypeMapper, constant, pascal, snake  # noqa: E402


def patched(patch: Any, doc: dict[str, Any]) -> tuple[dict[str, Any], Counter[str]]:
    applied: Counter[str] = Counter()
    patch(doc, applied)
    return doc, applied


# -- spec patches -----------------------------------------------------------------


def test_null_branch_next_to_an_inline_schema_becomes_nullable() -> None:
    doc, applied = patched(
        specs.patch_null_branches,
        {"p": {"anyOf": [{"type": "string"}, {"type": "null"}], "description": "d"}},
    )
    assert doc == {"p": {"type": "string", "nullable": True, "description": "d"}}
    assert applied == {"null-branch": 1}


def test_null_branch_next_to_a_ref_accepts_null_and_the_ref_only() -> None:
    doc, _ = patched(
        specs.patch_null_branches,
        {
            "components": {"schemas": {"X": {"type": "object", "required": ["a"]}}},
            "p": {"anyOf": [{"$ref": "#/components/schemas/X"}, {"type": "null"}]},
        },
    )
    assert doc["p"]["anyOf"][1] == specs.NULL_ONLY
    schema = {**doc["p"], "components": doc["components"]}
    validator = OAS30Validator(schema)
    assert validator.is_valid(None)
    assert validator.is_valid({"a": 1})
    assert not validator.is_valid({"b": 1})
    assert not validator.is_valid("text")


def test_keywords_without_3_0_equivalent_are_dropped_not_properties() -> None:
    doc, applied = patched(
        specs.patch_dropped_keywords,
        {
            "type": "object",
            "if": {"required": ["a"]},
            "then": {"required": ["b"]},
            "dependentRequired": {"a": ["b"]},
            "properties": {
                "if": {"type": "string"},
                "properties": {"type": "object", "if": {"required": ["x"]}},
            },
        },
    )
    assert doc == {
        "type": "object",
        "properties": {"if": {"type": "string"}, "properties": {"type": "object"}},
    }
    assert applied == {"drop-keyword": 4}


def test_duplicate_operation_ids_get_their_method() -> None:
    doc, applied = patched(
        specs.patch_operation_ids,
        {
            "paths": {
                "/pods/{id}": {"patch": {"operationId": "UpdatePod"}},
                "/pods/{id}/update": {"post": {"operationId": "UpdatePod"}},
            }
        },
    )
    assert doc["paths"]["/pods/{id}/update"]["post"]["operationId"] == "UpdatePodPost"
    assert doc["paths"]["/pods/{id}"]["patch"]["operationId"] == "UpdatePod"
    assert applied == {"duplicate-operation-id": 1}


def test_comma_separated_array_default_becomes_a_list() -> None:
    doc, _ = patched(specs.patch_array_defaults, {"type": "array", "default": "8888/http,22/tcp"})
    assert doc["default"] == ["8888/http", "22/tcp"]


def test_dump_is_canonical() -> None:
    assert specs.dump({"b": 1, "a": {"d": "é", "c": [2]}}) == (
        '{\n "a": {\n  "c": [\n   2\n  ],\n  "d": "é"\n },\n "b": 1\n}\n'
    )


# -- names ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("json_name", "python"),
    [
        ("minRAMPerGPU", "min_ram_per_gpu"),
        ("price_cents_per_hour", "price_cents_per_hour"),
        ("dtCreated", "dt_created"),
        ("class", "class_"),
        ("list", "list_"),
        ("2fa", "n_2fa"),
    ],
)
def test_snake_case_attribute_names(json_name: str, python: str) -> None:
    assert snake(json_name) == python


def test_class_and_constant_names() -> None:
    assert pascal("machines-list") == "MachinesList"
    assert pascal("listSSHKeys") == "ListSSHKeys"
    assert constant("global/invalid-parameters") == "GLOBAL_INVALID_PARAMETERS"
    assert constant("12.8") == "V_12_8"
    assert constant("") == "EMPTY"


# -- type mapping -----------------------------------------------------------------


def mapper(schemas: dict[str, Any], aliases: dict[str, str] | None = None) -> TypeMapper:
    return TypeMapper({"components": {"schemas": schemas}}, aliases or {})


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def model(m: TypeMapper, name: str) -> ModelDef:
    definition = m.defs[name]
    assert isinstance(definition, ModelDef)
    return definition


def test_primitives_arrays_and_maps() -> None:
    m = mapper({})
    assert m.type_of({"type": "integer", "format": "int64"}, "X") == "int"
    assert m.type_of({"type": "string", "format": "date-time"}, "X") == "str"
    assert m.type_of({"type": "array", "items": {"type": "number"}}, "X") == "list[float]"
    maps = {"type": "object", "additionalProperties": {"type": "boolean"}}
    assert m.type_of(maps, "X") == "dict[str, bool]"
    assert m.type_of({"type": "object"}, "X") == "dict[str, Any]"
    assert m.type_of({}, "X") == "Any"


def test_enums_are_lenient_str_with_a_strenum_of_values() -> None:
    m = mapper({"Status": {"type": "string", "enum": ["booting", "active"]}})
    owner = {"type": "object", "properties": {"status": ref("Status")}, "required": ["status"]}
    assert m.type_of(owner, "Instance") == "Instance"
    (status,) = model(m, "Instance").fields
    assert (status.annotation, status.enum, status.required) == ("str", "Status", True)
    assert m.defs["Status"] == EnumDef("Status", "", ["booting", "active"])


def test_all_of_merges_properties_and_required() -> None:
    m = mapper(
        {
            "Base": {
                "type": "object",
                "properties": {"id": {"type": "string"}},
                "required": ["id"],
            },
            "Pod": {
                "allOf": [
                    ref("Base"),
                    {"type": "object", "properties": {"gpuCount": {"type": "integer"}}},
                ]
            },
        }
    )
    assert m.type_of(ref("Pod"), "X") == "Pod"
    fields = {f.name: f for f in model(m, "Pod").fields}
    assert fields["id"].required and not fields["gpu_count"].required
    assert fields["gpu_count"].json_name == "gpuCount"


def test_any_of_objects_merge_with_common_required_and_merged_enums() -> None:
    m = mapper(
        {
            "A": {
                "type": "object",
                "properties": {"code": {"type": "string", "enum": ["a"]}, "x": {"type": "string"}},
                "required": ["code", "x"],
            },
            "B": {
                "type": "object",
                "properties": {"code": {"type": "string", "enum": ["b"]}, "y": {"type": "integer"}},
                "required": ["code"],
            },
        }
    )
    assert m.type_of({"anyOf": [ref("A"), ref("B")]}, "Error") == "Error"
    fields = {f.name: f for f in model(m, "Error").fields}
    assert {n for n, f in fields.items() if f.required} == {"code"}
    assert fields["code"].enum == "ErrorCode"
    assert m.defs["ErrorCode"] == EnumDef("ErrorCode", "", ["a", "b"])


def test_any_of_reductions() -> None:
    m = mapper({"X": {"type": "object", "properties": {"a": {"type": "string"}}}})
    assert m.type_of({"anyOf": [{"enum": ["ny2"], "type": "string"}, {"type": "string"}]}, "R") == (
        "str"
    )
    assert m.type_of({"anyOf": [{"type": "string"}, {"type": "integer"}]}, "V") == "Any"
    nullable_ref = {"anyOf": [ref("X"), specs.NULL_ONLY]}
    assert m.type_of(nullable_ref, "Y") == "X"
    assert m.nullable(nullable_ref)


def test_required_nullable_and_optional_fields() -> None:
    m = mapper({})
    schema = {
        "type": "object",
        "properties": {
            "pool": {"type": "string", "nullable": True},
            "name": {"type": "string"},
        },
        "required": ["pool"],
    }
    m.type_of(schema, "Gpu")
    pool, name = model(m, "Gpu").fields
    assert (pool.required, pool.nullable) == (True, True)
    assert (name.required, name.nullable) == (False, False)


def test_inline_twins_share_a_class_and_aliases_name_it() -> None:
    machine = {"type": "object", "properties": {"id": {"type": "string"}}, "description": "A."}
    m = mapper({}, {"GetResponse": "Machine"})
    assert m.type_of(machine, "GetResponse") == "Machine"
    listing = {"type": "object", "properties": {"items": {"type": "array", "items": machine}}}
    assert m.type_of(listing, "ListResponse") == "ListResponse"
    assert model(m, "ListResponse").fields[0].annotation == "list[Machine]"
    assert list(m.defs) == ["Machine", "ListResponse"]


def test_components_of_the_same_shape_stay_distinct() -> None:
    shape = {"type": "object", "properties": {"id": {"type": "string"}}}
    m = mapper({"Request": shape, "Response": dict(shape)})
    assert (m.type_of(ref("Request"), "X"), m.type_of(ref("Response"), "X")) == (
        "Request",
        "Response",
    )
