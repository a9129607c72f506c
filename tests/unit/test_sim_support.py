"""Helpers for the simulator's tests: an HTTP client that checks every answer itself.

`CloudClient.call` sends a request to a simulated cloud and validates the
response against the provider's spec with its own openapi-core instance (built
here from the package's spec files, independent of the simulator's validator),
or against the cloud's documented error model for statuses the operation does
not document. Tests therefore fail on any off-spec answer even if the
simulator's own check were broken.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import attrs
from openapi_core import Config, OpenAPI
from openapi_core.templating.paths.exceptions import PathError
from openapi_core.templating.responses.exceptions import ResponseFinderError
from openapi_core.testing import MockRequest, MockResponse

from gpuctl.providers.crusoe import signing
from gpuctl.sim import Simulator

FILES = {
    "lambda": ("lambdacloud", "openapi.json"),
    "runpod-v1": ("runpod", "openapi_v1.json"),
    "runpod-v2": ("runpod", "openapi_v2.json"),
    "paperspace": ("paperspace", "openapi.json"),
    "crusoe": ("crusoe", "openapi.json"),
    "hyperstack": ("hyperstack", "openapi.json"),
    "digitalocean": ("digitalocean", "openapi.json"),
}


@cache
def document(name: str) -> dict[str, Any]:
    package, filename = FILES[name]
    path = resources.files("gpuctl.providers").joinpath(package, "_generated", filename)
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@cache
def openapi(name: str) -> OpenAPI:
    config = Config(
        spec_validator_cls=None,
        extra_media_type_deserializers={"application/problem+json": json.loads},
    )
    return OpenAPI.from_dict(document(name), config=config)


def spec_name(cloud: str, path: str) -> str:
    if cloud == "runpod":
        return "runpod-v2" if path.startswith("/v2/") else "runpod-v1"
    return cloud


def auth_headers(
    cloud: str,
    token: str,
    method: str,
    path: str,
    params: Mapping[str, str] | list[tuple[str, str]] | None,
) -> dict[str, str]:
    """A bearer token, Hyperstack's `api_key` header, or for Crusoe (`<key ID>:<secret>`)
    the request's signature."""
    if not token:
        return {}
    if cloud == "hyperstack":
        return {"api_key": token}
    if cloud != "crusoe":
        return {"Authorization": f"Bearer {token}"}
    key_id, _, secret = token.partition(":")
    pairs = list(params.items()) if isinstance(params, Mapping) else list(params or [])
    return signing.headers(key_id, secret, method, path, pairs)


@attrs.frozen
class Answer:
    status: int
    body: Any
    headers: Mapping[str, str]
    content_type: str


def error_format_problems(cloud: str, answer: Answer) -> list[str]:
    """The cloud's documented error model, for statuses an operation does not list."""
    body = answer.body
    if cloud == "lambda":
        ok = isinstance(body, dict) and set(body) == {"error"}
        ok = ok and isinstance(body["error"].get("code"), str)
        return [] if ok and isinstance(body["error"].get("message"), str) else ["lambda error"]
    if cloud == "runpod":
        ok = answer.content_type == "application/problem+json" and isinstance(body, dict)
        ok = ok and body.get("status") == answer.status
        return [] if ok and isinstance(body.get("title"), str) else ["runpod problem+json"]
    if cloud == "hyperstack":  # ErrorResponseModel; its 500 has no body
        ok = body is None and answer.status == 500
        ok = ok or (isinstance(body, dict) and body.get("status") is False)
        return [] if ok else ["hyperstack error"]
    ok = isinstance(body, dict) and isinstance(body.get("message"), str)
    code = "id" if cloud == "digitalocean" else "code"
    return [] if ok and isinstance(body.get(code), str) else [f"{cloud} error"]


class CloudClient:
    """Calls one simulated cloud with its key and validates each answer."""

    def __init__(self, sim: Simulator, cloud: str, session: aiohttp.ClientSession) -> None:
        self.sim = sim
        self.cloud = cloud
        self.session = session
        self.problems: list[str] = []

    async def call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, str] | list[tuple[str, str]] | None = None,
        key: str | None = None,
        raw: bytes | None = None,
    ) -> Answer:
        token = self.sim.api_key(self.cloud) if key is None else key
        headers = auth_headers(self.cloud, token, method, path, params)
        data = raw if raw is not None else (None if json_body is None else json.dumps(json_body))
        if data is not None:
            headers["Content-Type"] = "application/json"
        url = self.sim.endpoint(self.cloud) + path
        async with self.session.request(
            method, url, params=params, data=data, headers=headers
        ) as response:
            text = await response.text()
            answer = Answer(
                status=response.status,
                body=json.loads(text) if text else None,
                headers=dict(response.headers),
                content_type=response.content_type,
            )
        problems = self.validate(method, path, params, data, headers, answer, text)
        assert not problems, f"{method} {path} answered off-spec: {problems}"
        return answer

    def validate(
        self,
        method: str,
        path: str,
        params: Any,
        data: str | bytes | None,
        headers: Mapping[str, str],
        answer: Answer,
        text: str,
    ) -> list[str]:
        name = spec_name(self.cloud, path)
        server = urlsplit(document(name)["servers"][0]["url"])
        request = MockRequest(
            f"{server.scheme}://{server.netloc}",
            method,
            path,
            args=dict(params or {}),
            headers=dict(headers),
            data=data.encode() if isinstance(data, str) else data,
        )
        response = MockResponse(
            text.encode(), answer.status, dict(answer.headers), answer.content_type
        )
        problems: list[str] = []
        for error in openapi(name).iter_response_errors(request, response):
            if isinstance(error, (ResponseFinderError, PathError)):
                return error_format_problems(self.cloud, answer)
            problems.append(f"{error}: {error.__cause__}")
        return problems


def no_violations(sim: Simulator) -> None:
    responses = [v for v in sim.violations if v.direction == "response"]
    assert not responses, f"the simulator answered off-spec: {responses}"
