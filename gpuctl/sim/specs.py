"""The providers' published OpenAPI specs, compiled once, and request/response checks.

The specs are package data of the drivers (`gpuctl/providers/<cloud>/_generated/`,
down-converted to OpenAPI 3.0 by codegen) and are read with importlib.resources.
Each is compiled by openapi-core once per process (`spec(name)` is cached) with
the spec's own validation switched off: the files are trusted, validated when
generated, and checking them costs ~0.5 s each.

A spec is served at the path of its first server URL: RunPod v1
(`https://rest.runpod.io/v1`) answers `/v1/pods`, Paperspace
(`https://api.paperspace.com/v1`) `/v1/machines`, Lambda and RunPod v2 (servers
without a path) `/api/v1/...` and `/v2/...`.

`check_request` and `check_response` return human-readable problems (empty:
valid). They validate only, never unmarshal: RunPod v1's PodCreateInput declares
a string default for the array `ports`, so applying defaults would reject every
valid request that omits `ports`. Authentication is the simulator's job, so
security-scheme errors are not reported. A response whose status the operation
does not document yields None from `check_response`: the caller then checks the
body against the cloud's documented error model instead.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Hashable, Iterable, Mapping
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from cachetools import LRUCache
from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.templating.paths.exceptions import PathError
from openapi_core.templating.responses.exceptions import ResponseFinderError
from openapi_core.validation.request.exceptions import SecurityValidationError
from werkzeug.datastructures import Headers, ImmutableMultiDict

# spec name -> (package directory under gpuctl/providers, file)
SPEC_FILES: Mapping[str, tuple[str, str]] = {
    "lambda": ("lambdacloud", "openapi.json"),
    "runpod-v1": ("runpod", "openapi_v1.json"),
    "runpod-v2": ("runpod", "openapi_v2.json"),
    "paperspace": ("paperspace", "openapi.json"),
    "crusoe": ("crusoe", "openapi.json"),
    "hyperstack": ("hyperstack", "openapi.json"),
    "digitalocean": ("digitalocean", "openapi.json"),
}
_JSON_TYPES = ("application/json", "application/problem+json")
# Verdicts remembered per spec: clients poll, so most exchanges repeat exactly.
MEMO_SIZE = 2048


def load_document(name: str) -> dict[str, Any]:
    package, filename = SPEC_FILES[name]
    path = resources.files("gpuctl.providers").joinpath(package, "_generated", filename)
    document: dict[str, Any] = json.loads(path.read_text())
    return document


class SpecRequest:
    """An openapi-core request (its `Request` protocol) built from what the sim received."""

    def __init__(
        self,
        *,
        host_url: str,
        path: str,
        method: str,
        query: Iterable[tuple[str, str]],
        headers: Iterable[tuple[str, str]],
        body: bytes | None,
        content_type: str,
    ) -> None:
        self.host_url = host_url
        self.path = path
        self.method = method.lower()
        self.body = body
        self.content_type = content_type
        query = tuple(query)
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(list(query)),
            header=Headers(list(headers)),
            cookie=ImmutableMultiDict(),
        )
        # Everything request validation reads, except the credentials.
        self.key: Hashable = (self.method, path, query, content_type, body)


class SpecResponse:
    """An openapi-core response (its `Response` protocol)."""

    def __init__(
        self, status: int, data: bytes, content_type: str, headers: Iterable[tuple[str, str]]
    ) -> None:
        self.status_code = status
        self.data = data
        self.content_type = content_type
        self.headers = Headers(list(headers))
        # Header values are left out: RunPod's RateLimit changes on every answer
        # and its schema is any string, so the names decide validity.
        names = tuple(sorted(name.lower() for name, _ in self.headers.items()))
        self.key: Hashable = (status, content_type, data, names)


class Spec:
    """One compiled spec and where it is served."""

    def __init__(self, name: str, document: Mapping[str, Any]) -> None:
        self.name = name
        config = Config(
            spec_validator_cls=None,
            extra_media_type_deserializers={"application/problem+json": json.loads},
        )
        self.openapi = OpenAPI.from_dict(dict(document), config=config)
        url: str = document["servers"][0]["url"]
        server = urlsplit(url)
        self.host_url = f"{server.scheme}://{server.netloc}"
        self.base_path = server.path.rstrip("/")
        self._paths: Mapping[str, Any] = document["paths"]
        self._checked_requests: LRUCache[Hashable, tuple[bool, list[str]]] = LRUCache(MEMO_SIZE)
        self._checked_responses: LRUCache[Hashable, list[str] | None] = LRUCache(MEMO_SIZE)
        # Literal paths first, so /pods/stop-all would win over /pods/{podId}.
        self._templates = [
            (template, _template_pattern(self.served_path(template)))
            for template in sorted(self._paths, key=lambda t: t.count("{"))
        ]

    def served_path(self, template: str) -> str:
        """Where the sim serves a spec path template, e.g. /pods -> /v1/pods."""
        return self.base_path + template

    def find_operation(self, method: str, path: str) -> str | None:
        """The operationId of a served path, e.g. GET /v1/pods/abc -> GetPod."""
        for template, pattern in self._templates:
            if pattern.match(path) and (found := self.operation_id(method, template)):
                return found
        return None

    def operation_id(self, method: str, template: str) -> str | None:
        operation = self._paths.get(template, {}).get(method.lower()) or {}
        found = operation.get("operationId")
        return found if isinstance(found, str) else None

    def documents(self, method: str, template: str, status: int) -> bool:
        operation = self._paths.get(template, {}).get(method.lower(), {})
        responses = operation.get("responses", {})
        return str(status) in responses or "default" in responses

    def request(
        self,
        *,
        path: str,
        method: str,
        query: Iterable[tuple[str, str]],
        headers: Iterable[tuple[str, str]],
        body: bytes | None,
        content_type: str,
    ) -> SpecRequest:
        return SpecRequest(
            host_url=self.host_url,
            path=path,
            method=method,
            query=query,
            headers=headers,
            body=body,
            content_type=content_type,
        )

    def check_request(self, request: SpecRequest) -> tuple[bool, list[str]]:
        """(the path and method are in the spec, problems found)."""
        if (known := self._checked_requests.get(request.key)) is None:
            known = self._checked_requests[request.key] = self._request_problems(request)
        return known[0], list(known[1])

    def _request_problems(self, request: SpecRequest) -> tuple[bool, list[str]]:
        problems: list[str] = []
        for error in self.openapi.iter_request_errors(request):
            if isinstance(error, PathError):
                return False, [f"{request.method.upper()} {request.path} is not in the spec"]
            if not isinstance(error, SecurityValidationError):
                problems += describe(error)
        return True, problems

    def check_response(self, request: SpecRequest, response: SpecResponse) -> list[str] | None:
        """Problems with the response; None when the operation does not document its status."""
        key = (request.method, request.path, response.key)
        if key not in self._checked_responses:
            self._checked_responses[key] = self._response_problems(request, response)
        known = self._checked_responses[key]
        return None if known is None else list(known)

    def _response_problems(self, request: SpecRequest, response: SpecResponse) -> list[str] | None:
        problems: list[str] = []
        for error in self.openapi.iter_response_errors(request, response):
            if isinstance(error, ResponseFinderError):
                return None
            problems += describe(error)
        return problems


def describe(error: BaseException) -> list[str]:
    """Flatten an openapi-core error and its jsonschema causes into readable lines."""
    cause = error.__cause__
    schema_errors = getattr(cause, "schema_errors", None)
    if not schema_errors:
        detail = f": {cause}" if cause is not None else ""
        return [f"{error}{detail}"]
    lines = []
    for schema_error in schema_errors:
        where = "/".join(str(p) for p in schema_error.absolute_path) or "(root)"
        lines.append(f"{_what(error)} {where}: {schema_error.message}")
    return lines


def _template_pattern(served: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\\{(\w+)\\\}", "[^/]+", re.escape(served)) + "$")


def _what(error: BaseException) -> str:
    name = getattr(error, "name", None)
    if name:
        return f"parameter {name!r}"
    kind = type(error).__name__
    return "body" if "Body" in kind or "Data" in kind else kind


@functools.cache
def spec(name: str) -> Spec:
    """The compiled spec, built once per process."""
    return Spec(name, load_document(name))


def is_json(content_type: str) -> bool:
    return content_type.split(";", maxsplit=1)[0].strip().lower() in _JSON_TYPES
