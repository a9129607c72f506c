"""Stage 1: upstream specs -> the normalised OpenAPI 3.0 specs gpuctl ships.

For each `SpecJob` the source under `hack/openapi/` is read; a 3.1 source is
down-converted to 3.0 by the pinned `openapi-down-convert` (hack/package.json);
then the patches below fix, in place and deterministically, what the converter
leaves that a 3.0 validator (openapi-core) rejects. The result is written as JSON
with sorted keys and one-space indent, with an `x-gpuctl-codegen` record of the
source, its sha256, the converter and a count of each patch applied.

Patches (every one is generic, not keyed to a particular path):
- `null-branch`: 3.0 has no `type: null`. In `anyOf`/`oneOf` a `{type: null}`
  branch next to one inline schema is folded into it as `nullable: true`; next
  to a `$ref` it becomes `{type: object, nullable: true, enum: [null]}`, the
  only 3.0 schema that accepts null and nothing else (`nullable` on a schema
  without `type` is ignored by validators).
- `drop-keyword`: `dependentRequired` and `if`/`then`/`else` have no 3.0
  equivalent; they are removed, so those cross-field rules are left to the
  cloud's own validation.
- `duplicate-operation-id`: operationIds must be unique. A repeated one (RunPod
  v1 documents `POST /x/update` as a synonym of `PATCH /x` under the same id)
  gets the method appended, e.g. `UpdatePodPost`; the first keeps its id.
- `array-default`: a comma-separated string `default` on an array schema
  (RunPod's `ports: "8888/http,22/tcp"`) becomes the list it stands for.
- `undefined-security-scheme`: a security requirement naming a scheme that
  `components.securitySchemes` does not define (Hyperstack's `accessToken`) is
  dropped; the requirements on defined schemes stay.
- `scopes-on-non-oauth`: scopes are only meaningful for oauth2/openIdConnect
  schemes; the lists DigitalOcean puts under its bearer scheme are emptied.
- `required-undefined`: a name in an object schema's `required` that is none of
  its `properties` (Hyperstack's security rule requires `virtual_machine_id`,
  which it never defines) is removed; named component schemas only, and not
  those combined with others (`allOf` siblings may define it).
- `empty-content`: a response with `content: {}` (Hyperstack's 500s) has no body in
  OpenAPI's terms, but openapi-core then rejects every answer, even an empty one
  ("Missing response data"); the empty map is dropped, which says the same.
- `invalid-example` (jobs with `check_examples`, i.e. Hyperstack): an example
  (`example` on a schema, media type `example` / `examples.*.value`) that its own
  schema rejects is removed. Hyperstack's SDK generator wrote placeholder examples
  such as `features: "{}"` for an object; examples feed the generated models'
  round-trip tests and must be payloads the cloud could send.

A Swagger 2.0 source (Crusoe) is first converted to OpenAPI 3.0.0 by the pinned
`swagger2openapi` (`convert_swagger2`), without its `--patch` repairs.

YAML sources (`.yaml`/`.yml`) are read with timestamps left as strings, as JSON
would carry them. A `SpecJob` with `prune` keeps only the operations the clients
built from it select (config.py), and the components they reach: the other
hundreds of operations of a large spec are neither shipped nor compiled by the
simulated clouds; see `prune`.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DOWN_CONVERT = "hack/node_modules/.bin/openapi-down-convert"
DOWN_CONVERT_PACKAGE = "@apiture/openapi-down-convert"
SWAGGER2OPENAPI = "hack/node_modules/.bin/swagger2openapi"
SWAGGER2OPENAPI_PACKAGE = "swagger2openapi"
DROPPED_KEYWORDS = ("dependentRequired", "if", "then", "else")
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
NAME_MAPS = ("properties", "examples", "paths", "schemas", "responses", "content", "headers")
NULL_ONLY: dict[str, Any] = {"enum": [None], "nullable": True, "type": "object"}

Json = Any


@dataclass(frozen=True)
class SpecJob:
    source: str  # relative to the repository root
    target: str
    prune: bool = False  # keep only the operations selected in config.py (see `prune`)
    # run `patch_examples`: for a source whose examples are generated placeholders
    check_examples: bool = False


SPEC_JOBS = (
    SpecJob(
        "hack/openapi/lambda/lambda-labs-openapi.json",
        "gpuctl/providers/lambdacloud/_generated/openapi.json",
    ),
    SpecJob(
        "hack/openapi/runpod/openapi.json", "gpuctl/providers/runpod/_generated/openapi_v1.json"
    ),
    SpecJob(
        "hack/openapi/runpod/openapi-v2.json", "gpuctl/providers/runpod/_generated/openapi_v2.json"
    ),
    SpecJob(
        "hack/openapi/paperspace/openapi.json",
        "gpuctl/providers/paperspace/_generated/openapi.json",
    ),
    SpecJob(
        "hack/openapi/hyperstack/openapi.yaml",
        "gpuctl/providers/hyperstack/_generated/openapi.json",
        prune=True,
        check_examples=True,
    ),
    SpecJob(
        "hack/openapi/digitalocean/DigitalOcean-public.v2.bundled.yaml",
        "gpuctl/providers/digitalocean/_generated/openapi.json",
        prune=True,
    ),
    SpecJob(
        "hack/openapi/crusoe/swagger.json",
        "gpuctl/providers/crusoe/_generated/openapi.json",
        prune=True,
    ),
)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dump(doc: Json) -> str:
    """The one serialisation of a generated spec, so regeneration is byte-identical."""
    return json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def converter_version(root: Path, package: str = DOWN_CONVERT_PACKAGE) -> str:
    manifest = root / "hack/node_modules" / package / "package.json"
    return f"{package}@{json.loads(manifest.read_text())['version']}"


def down_convert(root: Path, source: Path) -> Json:
    tool = root / DOWN_CONVERT
    if not tool.exists():
        raise SystemExit(
            f"{DOWN_CONVERT} is missing: run `npm ci --prefix hack` (make generate does)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "spec.json"
        subprocess.run([str(tool), "-i", str(source), "-o", str(out)], check=True)
        return json.loads(out.read_text())


class _JsonLikeLoader(yaml.CSafeLoader):
    """YAML as JSON would read it: a date-time stays a string (specs quote few of them)."""


_JsonLikeLoader.yaml_implicit_resolvers = {
    first: [r for r in resolvers if r[0] != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.CSafeLoader.yaml_implicit_resolvers.items()
}


def load_source(path: Path) -> Json:
    if path.suffix in (".yaml", ".yml"):
        return yaml.load(path.read_text(), Loader=_JsonLikeLoader)  # a safe loader
    return json.loads(path.read_text())


def prune(doc: Json, selected: set[tuple[str, str]]) -> None:
    """Keep only the `selected` (METHOD, path) operations and what they reference.

    Every `$ref` is followed from the kept operations (and the security schemes they
    name) through `components`; unreferenced components and the other paths go. The
    kept schemas are not changed. Raises SystemExit for a selected operation the
    spec does not have.
    """
    paths: dict[str, Any] = {}
    for method, path in sorted(selected):
        item = doc["paths"].get(path, {})
        if method.lower() not in item:
            raise SystemExit(f"{method} {path} is not in the spec")
        kept = paths.setdefault(path, {k: v for k, v in item.items() if k not in HTTP_METHODS})
        kept[method.lower()] = item[method.lower()]
    doc["paths"] = paths
    components = doc.get("components", {})
    reached: set[tuple[str, str]] = set()
    pending: list[Any] = [paths, doc.get("security", [])]
    schemes = {n for r in doc.get("security", []) for n in r}
    for item in paths.values():
        for method in HTTP_METHODS:
            schemes |= {n for r in item.get(method, {}).get("security", []) for n in r}
    reached |= {("securitySchemes", n) for n in schemes}
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/"):
                kind, name = ref.removeprefix("#/components/").split("/", 1)
                name = name.replace("~1", "/").replace("~0", "~")
                if (kind, name) not in reached:
                    reached.add((kind, name))
                    pending.append(components[kind][name])
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    doc["components"] = {
        kind: {n: v for n, v in sorted(entries.items()) if (kind, n) in reached}
        for kind, entries in sorted(components.items())
        if any(k == kind for k, _ in reached)
    }
    doc.pop("tags", None)  # tag descriptions of operations that are gone


def convert_swagger2(root: Path, source: Path) -> Json:
    """Swagger 2.0 -> OpenAPI 3.0.0 with the pinned swagger2openapi, as it converts
    (`--patch` off: the converter repairs nothing on its own; our patches are listed)."""
    tool = root / SWAGGER2OPENAPI
    if not tool.exists():
        raise SystemExit(
            f"{SWAGGER2OPENAPI} is missing: run `npm ci --prefix hack` (make generate does)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "spec.json"
        subprocess.run([str(tool), "--outfile", str(out), str(source)], check=True)
        return json.loads(out.read_text())


def walk(node: Json, visit: Callable[[dict[str, Any]], None], names: bool = False) -> None:
    """Call `visit` on every object in the document, parents before children.

    Maps whose keys are names, not keywords (`properties`, `paths`, ...), are not
    visited themselves, so a property called "if" is never taken for a keyword; the
    values in such a map are keyword objects again, even one named "properties".
    """
    if isinstance(node, dict):
        if not names:
            visit(node)
        for name, value in list(node.items()):
            walk(value, visit, not names and name in NAME_MAPS)
    elif isinstance(node, list):
        for value in node:
            walk(value, visit)


def patch_null_branches(doc: Json, applied: Counter[str]) -> None:
    def visit(node: dict[str, Any]) -> None:
        for key in ("anyOf", "oneOf"):
            branches = node.get(key)
            if not isinstance(branches, list) or {"type": "null"} not in branches:
                continue
            others = [b for b in branches if b != {"type": "null"}]
            applied["null-branch"] += 1
            if len(others) == 1 and "$ref" not in others[0]:
                del node[key]
                node.update({k: v for k, v in others[0].items() if k not in node})
                node["nullable"] = True
            else:
                node[key] = [*others, dict(NULL_ONLY)]

    walk(doc, visit)


def patch_dropped_keywords(doc: Json, applied: Counter[str]) -> None:
    def visit(node: dict[str, Any]) -> None:
        for key in DROPPED_KEYWORDS:
            if isinstance(node.get(key), dict):
                del node[key]
                applied["drop-keyword"] += 1

    walk(doc, visit)


def patch_operation_ids(doc: Json, applied: Counter[str]) -> None:
    seen: set[str] = set()
    for item in doc.get("paths", {}).values():
        for method in HTTP_METHODS:
            operation = item.get(method)
            if not isinstance(operation, dict) or "operationId" not in operation:
                continue
            if operation["operationId"] in seen:
                operation["operationId"] += method.capitalize()
                applied["duplicate-operation-id"] += 1
            seen.add(operation["operationId"])


def patch_array_defaults(doc: Json, applied: Counter[str]) -> None:
    def visit(node: dict[str, Any]) -> None:
        if node.get("type") == "array" and isinstance(node.get("default"), str):
            node["default"] = [part.strip() for part in node["default"].split(",") if part]
            applied["array-default"] += 1

    walk(doc, visit)


def patch_security(doc: Json, applied: Counter[str]) -> None:
    schemes = doc.get("components", {}).get("securitySchemes", {})
    scoped = {n for n, s in schemes.items() if s.get("type") in ("oauth2", "openIdConnect")}
    holders = [doc, *(op for item in doc.get("paths", {}).values() for op in item.values())]
    for holder in holders:
        requirements = holder.get("security") if isinstance(holder, dict) else None
        if not isinstance(requirements, list):
            continue
        kept = [r for r in requirements if set(r) <= set(schemes)]
        if len(kept) != len(requirements):
            applied["undefined-security-scheme"] += 1
            holder["security"] = kept
        for requirement in kept:
            for name, scopes in requirement.items():
                if scopes and name not in scoped:
                    requirement[name] = []
                    applied["scopes-on-non-oauth"] += 1


def patch_required(doc: Json, applied: Counter[str]) -> None:
    # Named schemas only: an inline branch of an allOf may require its siblings' names.
    for schema in doc.get("components", {}).get("schemas", {}).values():
        required, properties = schema.get("required"), schema.get("properties")
        if not isinstance(required, list) or not isinstance(properties, dict):
            continue
        if any(k in schema for k in ("allOf", "anyOf", "oneOf")):
            continue
        known = [name for name in required if name in properties]
        if len(known) != len(required):
            applied["required-undefined"] += len(required) - len(known)
            if known:
                schema["required"] = known
            else:
                del schema["required"]


def patch_empty_content(doc: Json, applied: Counter[str]) -> None:
    for item in doc.get("paths", {}).values():
        for method in HTTP_METHODS:
            operation = item.get(method)
            if not isinstance(operation, dict):
                continue
            for response in operation.get("responses", {}).values():
                if isinstance(response, dict) and response.get("content") == {}:
                    del response["content"]
                    applied["empty-content"] += 1


def patch_examples(doc: Json, applied: Counter[str]) -> None:
    """Drop examples their own schema rejects (OpenAPI 3.0 rules): request and response
    examples, and `example` on any schema."""
    from openapi_schema_validator import OAS30Validator  # noqa: PLC0415
    from referencing import Registry, Resource  # noqa: PLC0415
    from referencing.jsonschema import DRAFT4  # noqa: PLC0415

    registry = Registry().with_resource(
        "urn:spec", Resource.from_contents(doc, default_specification=DRAFT4)
    )

    def valid(pointer: str, value: Any) -> bool:
        validator = OAS30Validator({"$ref": f"urn:spec#{pointer}"}, registry=registry)
        return bool(validator.is_valid(value))

    found: list[tuple[dict[str, Any], str, str, Any]] = []  # holder, key, schema pointer, value

    def visit(node: Any, pointer: str, schema: bool) -> None:
        if isinstance(node, list):
            for index, value in enumerate(node):
                visit(value, f"{pointer}/{index}", schema)
            return
        if not isinstance(node, dict):
            return
        if schema and "example" in node:
            found.append((node, "example", pointer, node["example"]))
        if not schema and "schema" in node:  # a media type object (or a parameter)
            for name, entry in (node.get("examples") or {}).items():
                if isinstance(entry, dict) and "value" in entry:
                    found.append((node["examples"], name, f"{pointer}/schema", entry["value"]))
            if "example" in node:
                found.append((node, "example", f"{pointer}/schema", node["example"]))
        for key, value in node.items():
            if key in ("example", "examples"):
                continue
            escaped = key.replace("~", "~0").replace("/", "~1")
            inside = schema or key == "schema" or pointer == "/components/schemas"
            visit(value, f"{pointer}/{escaped}", inside)

    visit(doc.get("paths", {}), "/paths", False)
    visit(doc.get("components", {}), "/components", False)
    for holder, key, pointer, value in found:
        if key in holder and not valid(pointer, value):
            del holder[key]
            applied["invalid-example"] += 1


PATCHES = (
    patch_null_branches,
    patch_dropped_keywords,
    patch_operation_ids,
    patch_array_defaults,
    patch_security,
    patch_required,
    patch_empty_content,
)


def build(root: Path, job: SpecJob, selected: set[tuple[str, str]] | None = None) -> str:
    """Return the text of the 3.0 spec for `job` (not written); `selected` are the
    operations its clients use, kept alone when `job.prune`."""
    source = root / job.source
    doc = load_source(source)
    record: dict[str, Any] = {"source": job.source, "sourceSha256": sha256_of(source)}
    if str(doc.get("swagger")) == "2.0":
        doc = convert_swagger2(root, source)
        record["convertedBy"] = converter_version(root, SWAGGER2OPENAPI_PACKAGE)
    elif str(doc["openapi"]).startswith("3.1"):
        doc = down_convert(root, source)
        record["downConvertedBy"] = converter_version(root)
    if job.prune:
        prune(doc, selected or set())
        record["operationsKept"] = len(selected or ())
    applied: Counter[str] = Counter()
    for patch in PATCHES:
        patch(doc, applied)
    if job.check_examples:
        patch_examples(doc, applied)
    record["patches"] = dict(sorted(applied.items()))
    doc["x-gpuctl-codegen"] = record
    return dump(doc)


def validate(text: str, name: str) -> None:
    """Fail generation if openapi-core (what the simulated clouds use) rejects the spec."""
    from openapi_core import OpenAPI  # noqa: PLC0415  (heavy; only needed here)

    try:
        OpenAPI.from_dict(json.loads(text))
    except Exception as error:
        raise SystemExit(f"{name}: openapi-core rejects the generated spec: {error}") from error
