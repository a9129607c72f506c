"""Selected spec operations -> `operations*.py`: one async function per operation.

Each function takes the `Transport` first, then the path parameters (positional),
then the request body as `body`, then the query parameters (keyword-only; optional
ones default to None and are then not sent, so the cloud applies its default).
It fills the path template (each value URL-quoted), calls `transport.request`
with the operationId, and structures the first 2xx JSON response into its model
(`None` when the success response has no body). Array query parameters with
`explode: false` are sent comma-joined; other arrays are passed as sequences for
the transport to repeat.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from codegen.typemap import PRIMITIVES, Schema, TypeMapper, first_paragraph, pascal, snake

PARAM_VALUE = "str | int | float | bool | Sequence[str]"


@dataclass
class Param:
    name: str  # Python
    json_name: str
    annotation: str
    required: bool
    comma_joined: bool
    enum: str | None  # the StrEnum listing its documented values


@dataclass
class Operation:
    function: str
    method: str
    path: str
    operation_id: str
    summary: str
    path_params: list[Param]
    query_params: list[Param]
    body: str | None
    response: str | None
    response_nullable: bool


def analyze(mapper: TypeMapper, method: str, path: str) -> Operation:
    item = mapper.doc["paths"][path]
    spec = item[method.lower()]
    operation_id = spec["operationId"]
    params = [mapper.resolve(p) for p in [*item.get("parameters", []), *spec.get("parameters", [])]]
    body = None
    if "requestBody" in spec:
        schema = json_schema(mapper.resolve(spec["requestBody"]))
        body = mapper.type_of(schema, pascal(operation_id) + "Request") if schema else "Any"
    response, nullable = None, False
    if success := success_schema(mapper, spec):
        response = mapper.type_of(success, pascal(operation_id) + "Response")
        nullable = mapper.nullable(success)
    return Operation(
        function=snake(operation_id),
        method=method,
        path=path,
        operation_id=operation_id,
        summary=spec.get("summary") or first_paragraph(spec),
        path_params=[param(mapper, p, operation_id) for p in params if p["in"] == "path"],
        query_params=[param(mapper, p, operation_id) for p in params if p["in"] == "query"],
        body=body,
        response=response,
        response_nullable=nullable,
    )


def success_schema(mapper: TypeMapper, spec: Schema) -> Schema | None:
    for code in sorted(spec.get("responses", {})):
        if code.startswith("2"):
            return json_schema(mapper.resolve(spec["responses"][code]))
    return None


def json_schema(holder: Schema) -> Schema | None:
    content = holder.get("content", {})
    for media_type in sorted(content):
        if media_type == "application/json" or media_type.endswith("+json"):
            schema: Schema | None = content[media_type].get("schema")
            return schema
    return None


def param(mapper: TypeMapper, spec: Schema, operation_id: str) -> Param:
    schema = mapper.resolve(spec.get("schema", {}))
    # Called for its side effect too: an enum parameter gets its StrEnum of values.
    annotation = mapper.type_of(schema, pascal(operation_id) + pascal(spec["name"]))
    if schema.get("type") == "array":
        annotation = "Sequence[str]"
    elif annotation not in PRIMITIVES.values():
        annotation = "str"  # e.g. an enum-or-string union: sent as text anyway
    comma_joined = schema.get("type") == "array" and spec.get("explode") is False
    return Param(
        snake(spec["name"]),
        spec["name"],
        annotation,
        bool(spec.get("required")),
        comma_joined,
        mapper.enum_name(schema),
    )


def signature(op: Operation) -> str:
    args = ["transport: Transport"] + [f"{p.name}: {p.annotation}" for p in op.path_params]
    if op.body:
        args.append(f"body: {op.body}")
    if op.query_params:
        args.append("*")
    for p in sorted(op.query_params, key=lambda p: not p.required):
        args.append(f"{p.name}: {p.annotation}" + ("" if p.required else " | None = None"))
    returns = op.response or "None"
    if op.response and op.response_nullable:
        returns += " | None"
    return f"async def {op.function}({', '.join(args)}) -> {returns}:"


def body_lines(op: Operation) -> list[str]:
    path = re.sub(
        r"\{(\w+)\}", lambda m: "{quote(str(" + snake(m.group(1)) + "), safe='')}", op.path
    )
    path_literal = f'f"{path}"' if op.path_params else f'"{path}"'
    args = [f'"{op.method}"', path_literal, f"operation={op.operation_id!r}"]
    if op.query_params:
        values = ", ".join(
            f'"{p.json_name}": ' + (f"_comma_joined({p.name})" if p.comma_joined else p.name)
            for p in op.query_params
        )
        args.append(f"params=_present({{{values}}})")
    if op.body:
        args.append("json=converter.unstructure(body)")
    call = f"await transport.request({', '.join(args)})"
    if not op.response:
        return [call]
    structure = f"converter.structure(data, {op.response})"
    if op.response_nullable:
        structure = f"None if data is None else {structure}"
    return [f"data = {call}", f"return {structure}"]


def render(
    ops: list[Operation], header: str, title: str, models_module: str, names: set[str]
) -> str:
    used = sorted(n for n in names if any(uses(op, n) for op in ops))
    lines = [
        header,
        f'"""Async calls of the {title} operations gpuctl uses (see docs/codegen.md).',
        "",
        "Each takes a `Transport` (gpuctl/providers/transport.py), which sends the request",
        "and raises the typed provider errors; these functions only shape it and structure",
        "the response with the models' converter.",
        '"""',
        "",
        *imports(ops),
        "",
        "from gpuctl.providers.transport import Params, Transport",
        "",
        f"from .{models_module} import {', '.join([*used, 'converter'])}",
        "",
        "",
        f"def _present(values: dict[str, {PARAM_VALUE} | None]) -> Params | None:",
        '    """The query parameters that are set; unset ones are left to the cloud\'s default."""',
        "    present = {key: value for key, value in values.items() if value is not None}",
        "    return present or None",
        "",
        "",
        "def _comma_joined(values: Sequence[str] | None) -> str | None:",
        '    """An `explode: false` array parameter: one comma-separated value."""',
        '    return None if values is None else ",".join(values)',
    ]
    for op in ops:
        lines += ["", "", signature(op), *function_doc(op)]
        lines += ["    " + line for line in body_lines(op)]
    return "\n".join(lines) + "\n"


def function_doc(op: Operation) -> list[str]:
    first = f"{op.method} {op.path}: {docstring(op.summary)}"
    enums = [f"`{p.name}` takes {p.enum} values." for p in op.query_params if p.enum]
    if not enums:
        return [f'    """{first}"""']
    return [f'    """{first}', "", *[f"    {line}" for line in enums], '    """']


def imports(ops: list[Operation]) -> list[str]:
    found = ["from collections.abc import Sequence"]
    if any(re.search(r"\bAny\b", signature(op)) for op in ops):
        found.append("from typing import Any")
    if any(op.path_params for op in ops):
        found.append("from urllib.parse import quote")
    return found


def uses(op: Operation, name: str) -> bool:
    return bool(re.search(rf"\b{name}\b", f"{op.body} {op.response}"))


def docstring(raw: Any) -> str:
    """`raw` as one docstring line: escaped, ending with a full stop."""
    text = " ".join(str(raw).split()).replace("\\", "\\\\").replace('"""', "'''").rstrip('" ')
    return text if not text or text[-1] in ".!?" else text + "."
