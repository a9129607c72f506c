"""The type mapper's definitions -> `models*.py` source.

Layout of a generated models module: StrEnums first, then attrs classes
(children before parents), then `converter`, a module-level cattrs Converter
whose hook factories rename attributes to/from their JSON names (cattrs.gen
`override(rename=...)`) and omit unset optional fields when unstructuring.
"""

from __future__ import annotations

from codegen.operations import docstring
from codegen.typemap import EnumDef, Field, ModelDef, TypeMapper, constant, unique

MODULE_DOC = '''"""Models of the {title} schemas gpuctl uses (see docs/codegen.md).

Attributes are snake_case; `converter` maps them to and from the JSON names, ignores
JSON keys it does not know and leaves optional fields that are None out of request
bodies. Enum-valued fields are typed `str`, so a value the cloud adds later still
structures; the `enum.StrEnum` classes list the documented values to compare with
(a member is a `str`). Required fields are the spec's `required`.
"""'''

CONVERTER = """
# Attribute name -> JSON name, for the attributes whose names differ.
_JSON_NAMES: dict[type[Any], dict[str, str]] = {renames}

converter = cattrs.Converter()


def _overrides(cls: type[Any]) -> dict[str, Any]:
    return {{name: override(rename=json) for name, json in _JSON_NAMES.get(cls, {{}}).items()}}


def _structure_fn(cls: type[Any]) -> Any:
    return make_dict_structure_fn(cls, converter, **_overrides(cls))


def _unstructure_fn(cls: type[Any]) -> Any:
    return make_dict_unstructure_fn(cls, converter, _cattrs_omit_if_default=True, **_overrides(cls))


converter.register_structure_hook_factory(attrs.has, _structure_fn)
converter.register_unstructure_hook_factory(attrs.has, _unstructure_fn)
"""


def render(mapper: TypeMapper, header: str, title: str) -> str:
    enums = [d for d in mapper.defs.values() if isinstance(d, EnumDef)]
    models = [d for d in mapper.defs.values() if isinstance(d, ModelDef)]
    lines = [header, MODULE_DOC.format(title=title), ""]
    lines += ["import enum"] if enums else []
    lines += [
        "from typing import Any",
        "",
        "import attrs",
        "import cattrs",
        "from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override",
    ]
    for definition in enums:
        lines += ["", "", *enum_source(definition)]
    for model in models:
        lines += ["", "", *model_source(model)]
    renames = {
        m.name: {f.name: f.json_name for f in m.fields if f.name != f.json_name} for m in models
    }
    entries = ", ".join(f"{name}: {mapping!r}" for name, mapping in renames.items() if mapping)
    lines += ["", CONVERTER.format(renames="{" + entries + "}")]
    return "\n".join(lines)


def enum_source(definition: EnumDef) -> list[str]:
    lines = [f"class {definition.name}(enum.StrEnum):"]
    if definition.doc:
        lines += [f'    """{docstring(definition.doc)}"""', ""]
    taken: set[str] = set()
    lines += [f"    {unique(constant(v), taken)} = {v!r}" for v in definition.values]
    return lines


def model_source(model: ModelDef) -> list[str]:
    lines = ["@attrs.define(kw_only=True)", f"class {model.name}:"]
    if model.doc:
        lines += [f'    """{docstring(model.doc)}"""', ""]
    lines += ["    " + field_source(f) for f in model.fields]
    return lines


def field_source(field: Field) -> str:
    annotation = field.annotation
    if field.nullable or not field.required:
        annotation += " | None"
    line = f"{field.name}: {annotation}" + ("" if field.required else " = None")
    if field.enum:
        line += (
            f"  # values: {field.enum}" if field.annotation == "str" else f"  # items: {field.enum}"
        )
    return line
