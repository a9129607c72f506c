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

DOWN_CONVERT = "hack/node_modules/.bin/openapi-down-convert"
DOWN_CONVERT_PACKAGE = "@apiture/openapi-down-convert"
DROPPED_KEYWORDS = ("dependentRequired", "if", "then", "else")
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
NAME_MAPS = ("properties", "examples", "paths", "schemas", "responses", "content", "headers")
NULL_ONLY: dict[str, Any] = {"enum": [None], "nullable": True, "type": "object"}

Json = Any


@dataclass(frozen=True)
class SpecJob:
    source: str  # relative to the repository root
    target: str


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
)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dump(doc: Json) -> str:
    """The one serialisation of a generated spec, so regeneration is byte-identical."""
    return json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def converter_version(root: Path) -> str:
    manifest = root / "hack/node_modules" / DOWN_CONVERT_PACKAGE / "package.json"
    return f"{DOWN_CONVERT_PACKAGE}@{json.loads(manifest.read_text())['version']}"


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


PATCHES = (patch_null_branches, patch_dropped_keywords, patch_operation_ids, patch_array_defaults)


def build(root: Path, job: SpecJob) -> str:
    """Return the text of the 3.0 spec for `job` (not written)."""
    source = root / job.source
    doc = json.loads(source.read_text())
    record: dict[str, Any] = {"source": job.source, "sourceSha256": sha256_of(source)}
    if str(doc["openapi"]).startswith("3.1"):
        doc = down_convert(root, source)
        record["downConvertedBy"] = converter_version(root)
    applied: Counter[str] = Counter()
    for patch in PATCHES:
        patch(doc, applied)
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
