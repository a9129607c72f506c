"""Fakes for the provider unit tests (no tests of its own).

`SpecCheckedTransport` validates every request a driver makes against the cloud's spec
(openapi-core) before sending it. `FakeCloud` binds 127.0.0.1 on a free port, records
every request, and answers with `handler(request)` when set, else from `script` (a queue
of `Reply`), else 404. The `*_instance`-style builders return answers valid per spec.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
from aiohttp import web
from openapi_core import OpenAPI
from openapi_core.exceptions import OpenAPIError
from openapi_core.testing import MockRequest
from werkzeug.datastructures import ImmutableMultiDict

from gpuctl.providers.http import HttpTransport
from gpuctl.providers.transport import Params


@attrs.frozen
class Reply:
    status: int = 200
    body: Any = None  # JSON-encoded unless bytes/str
    headers: dict[str, str] = attrs.field(factory=dict)
    delay: float = 0.0

    def response(self) -> web.Response:
        if isinstance(self.body, bytes):
            data = self.body
        elif isinstance(self.body, str):
            data = self.body.encode()
        elif self.body is None:
            data = b""
        else:
            data = json.dumps(self.body).encode()
        return web.Response(status=self.status, body=data, headers=self.headers)


@attrs.frozen
class Seen:
    method: str
    path: str
    query: list[tuple[str, str]]
    body: Any
    headers: dict[str, str]
    at: float


Handler = Callable[[Seen], Awaitable[Reply] | Reply]


class FakeCloud:
    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.script: list[Reply] = []
        self.handler: Handler | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> FakeCloud:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._serve)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[union-attr]
        port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        seen = Seen(
            method=request.method,
            path=request.path,
            query=list(request.query.items()),
            body=body,
            headers=dict(request.headers),
            at=asyncio.get_running_loop().time(),
        )
        self.seen.append(seen)
        if self.handler is not None:
            reply = self.handler(seen)
            if not isinstance(reply, Reply):
                reply = await reply
        elif self.script:
            reply = self.script.pop(0)
        else:
            reply = Reply(404, {"message": "no script"})
        if reply.delay:
            await asyncio.sleep(reply.delay)
        return reply.response()


@contextlib.asynccontextmanager
async def running() -> AsyncIterator[FakeCloud]:
    cloud = await FakeCloud().start()
    try:
        yield cloud
    finally:
        await cloud.stop()


# -- canned answers, valid per each cloud's spec -------------------------------------


def lambda_type(name: str, gpu: str, gpus: int, cents: int) -> dict[str, Any]:
    return {
        "name": name,
        "description": f"{gpus}x {gpu}",
        "gpu_description": gpu,
        "price_cents_per_hour": cents,
        "specs": {"vcpus": 8, "memory_gib": 64, "storage_gib": 512, "gpus": gpus},
    }


def lambda_instance(
    id: str, name: str, status: str = "active", region: str = "us-east-1"
) -> dict[str, Any]:
    action = {"available": True}
    return {
        "id": id,
        "name": name,
        "status": status,
        "ip": "198.51.100.2",
        "private_ip": "10.0.0.2",
        "ssh_key_names": ["gpuctl"],
        "file_system_names": [],
        "region": {"name": region, "description": "somewhere"},
        "instance_type": lambda_type("gpu_8x_h100_sxm5", "H100 (80 GB SXM5)", 8, 2392),
        "actions": dict.fromkeys(
            ("migrate", "rebuild", "restart", "cold_reboot", "terminate"), action
        ),
    }


def runpod_gpu(
    id: str, secure: float, community: float, centres: dict[str, str], max_count: int = 8
) -> dict[str, Any]:
    return {
        "id": id,
        "name": id.removeprefix("NVIDIA "),
        "pool": None,
        "manufacturer": "NVIDIA",
        "memory": 80,
        "secure": True,
        "community": True,
        "price": {"secure": secure, "community": community},
        "maxCount": {"secure": max_count, "community": max_count},
        "availability": "HIGH",
        "dataCenters": [
            {"id": dc, "name": dc, "availability": level} for dc, level in centres.items()
        ],
    }


def runpod_pod(
    id: str, name: str, status: str = "RUNNING", dc: str = "US-GA-1", interruptible: bool = False
) -> dict[str, Any]:
    return {
        "id": id,
        "name": name,
        "desiredStatus": status,
        "interruptible": interruptible,
        "costPerHr": 21.52,
        "publicIp": "203.0.113.9",
        "gpu": {"id": "NVIDIA H100 80GB HBM3", "count": 8},
        "machine": {"dataCenterId": dc, "gpuTypeId": "NVIDIA H100 80GB HBM3"},
        "lastStartedAt": "2026-01-01T00:00:00Z",
    }


def paperspace_machine(
    id: str, name: str, state: str = "ready", region: str = "ny2", deleted: bool = False
) -> dict[str, Any]:
    return {
        "id": id,
        "name": name,
        "state": state,
        "os": "Ubuntu 22.04",
        "machineType": "H100x8",
        "agentType": "LinuxMachine",
        "cpus": 128,
        "ram": 1,
        "storageTotal": 1,
        "storageUsed": 0,
        "region": region,
        "privateIp": "10.0.0.3",
        "networkId": None,
        "publicIp": "198.51.100.3",
        "publicIpType": "dynamic",
        "autoShutdownEnabled": False,
        "autoShutdownTimeout": None,
        "autoShutdownForce": None,
        "autoSnapshotEnabled": False,
        "autoSnapshotFrequency": None,
        "autoSnapshotSaveCount": None,
        "updatesPending": False,
        "restorePointEnabled": False,
        "restorePointFrequency": None,
        "restorePointSnapshotId": None,
        "usageRate": 47.6,
        "storageRate": 10,
        "dtCreated": "2026-01-01T00:00:00.000Z",
        "dtModified": "2026-01-01T00:00:00.000Z",
        "dtDeleted": "2026-01-01T01:00:00.000Z" if deleted else None,
        "reservation": None,
    }


def paperspace_script(id: str, name: str) -> dict[str, Any]:
    return {
        "id": id,
        "name": name,
        "description": None,
        "isEnabled": True,
        "isRunOnce": True,
        "assignedMachineIds": [],
        "dtCreated": "2026-01-01T00:00:00.000Z",
        "dtDeleted": None,
    }


def paperspace_event(machine_id: str) -> dict[str, Any]:
    return {
        "id": "ev1",
        "name": "create",
        "state": "new",
        "machineId": machine_id,
        "dtCreated": "2026-01-01T00:00:00.000Z",
        "dtStarted": None,
        "dtFinished": None,
        "error": None,
    }


# -- a transport that checks every request against the cloud's spec ------------------

_SPECS = {
    # (cloud, api) -> (spec file in the package, server host, server base path)
    ("lambda", ""): (
        "gpuctl/providers/lambdacloud/_generated/openapi.json",
        "https://cloud.lambda.ai",
        "",
    ),
    ("runpod", "v1"): (
        "gpuctl/providers/runpod/_generated/openapi_v1.json",
        "https://rest.runpod.io",
        "/v1",
    ),
    ("runpod", "v2"): (
        "gpuctl/providers/runpod/_generated/openapi_v2.json",
        "https://api.runpod.io",
        "",
    ),
    ("paperspace", ""): (
        "gpuctl/providers/paperspace/_generated/openapi.json",
        "https://api.paperspace.com",
        "/v1",
    ),
}
ROOT = Path(__file__).resolve().parents[2]


_dumps = json.dumps


@functools.cache
def spec(path: str) -> OpenAPI:
    return OpenAPI.from_file_path(str(ROOT / path))


def spec_for(cloud: str, path: str) -> tuple[OpenAPI, str, str]:
    api = ""
    if cloud == "runpod":
        api = "v2" if path.startswith("/v2/") else "v1"
    file, host, base = _SPECS[(cloud, api)]
    return spec(file), host, base


@attrs.define
class SpecCheckedTransport(HttpTransport):
    """An HttpTransport that first validates each request against the cloud's spec.

    Every request is recorded in `checked`; one the spec does not allow fails the test
    with AssertionError before anything is sent.
    """

    checked: list[str] = attrs.field(factory=list)

    @classmethod
    def wrap(cls, inner: HttpTransport) -> SpecCheckedTransport:
        return cls(**{f.name: getattr(inner, f.name) for f in attrs.fields(HttpTransport)})

    async def request(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        params: Params | None = None,
        json: Any = None,
    ) -> Any:
        api, host, base = spec_for(self.cloud, path)
        query = [
            (k, "true" if v is True else "false" if v is False else str(v))
            for k, value in (params or {}).items()
            for v in (value if isinstance(value, list | tuple) else [value])
        ]
        mock = MockRequest(
            host,
            method,
            base + path,
            headers={"Authorization": "Bearer key", "Content-Type": "application/json"},
            data=None if json is None else _dumps(json).encode(),
        )
        mock.parameters.query = ImmutableMultiDict(query)
        try:
            api.validate_request(mock)
        except OpenAPIError as error:
            detail = getattr(error, "__cause__", None) or error
            raise AssertionError(f"{method} {path} violates the spec: {detail}") from error
        self.checked.append(f"{method} {path}")
        return await super().request(method, path, operation=operation, params=params, json=json)
