"""A launch retried by this process (rate limited, a transient error) uses the token
Secret its own create answered: no GET per retry (issue 13: API calls per request).
A process that did not keep it (a restart) reads it; a token made elsewhere is read."""

from __future__ import annotations

import base64
import copy
from typing import Any

from gpuctl.api import GPUProvider
from gpuctl.controllers.request import launch, settle, tokens
from gpuctl.providers.base import Instance, InstanceState
from gpuctl.runtime.client import ApiError
from tests.unit.test_billing_bounds import T0, make_ctx, request_obj
from tests.unit.test_concurrency import provider


class Secrets:
    """The kube-system token Secrets, counting the calls."""

    def __init__(self) -> None:
        self.held: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []

    async def create(self, resource: Any, body: Any, *, namespace: str | None = None) -> Any:
        self.calls.append("create")
        name = body["metadata"]["name"]
        if name in self.held:
            raise ApiError(409, "AlreadyExists", "exists", {})
        stored = copy.deepcopy(body)  # as the API server keeps it: stringData -> data
        stored["data"] = {
            k: base64.b64encode(v.encode()).decode() for k, v in stored.pop("stringData").items()
        }
        self.held[name] = stored
        return copy.deepcopy(stored)

    async def get(self, resource: Any, name: str, *, namespace: str | None = None) -> Any:
        self.calls.append("get")
        if name not in self.held:
            raise ApiError(404, "NotFound", "gone", {})
        return copy.deepcopy(self.held[name])

    async def delete(self, resource: Any, name: str, *, namespace: str | None = None) -> Any:
        self.calls.append("delete")
        self.held.pop(name, None)


async def test_a_retried_launch_reuses_the_token_its_own_create_answered() -> None:
    secrets = Secrets()
    gpus = GPUProvider.from_dict(provider("p", "lambda"))
    ctx = make_ctx(secrets, T0, request_obj())
    first, _ = await launch.ensure_token(ctx, gpus)
    again, _ = await launch.ensure_token(ctx, gpus)  # the create was rate limited: retried
    assert again == first and secrets.calls == ["create"]

    # Another process (a restart) knows nothing: the create says it exists, it reads it.
    other = make_ctx(secrets, T0, request_obj())
    found, _ = await launch.ensure_token(other, gpus)
    assert found == first and secrets.calls == ["create", "create", "get"]


MACHINE = Instance("i-1", "m", InstanceState.PENDING, "booting")


async def test_the_kept_token_goes_with_its_attempt() -> None:
    secrets = Secrets()
    gpus = GPUProvider.from_dict(provider("p", "lambda"))
    ctx = make_ctx(secrets, T0, request_obj())
    await launch.ensure_token(ctx, gpus)
    assert settle.attempt_key(ctx) in ctx.services.launches.tokens
    await tokens.delete_token(ctx, ctx.status.attempt)
    assert ctx.services.launches.tokens == {}
    await launch.ensure_token(ctx, gpus)
    ctx.services.launches.record_machine(settle.attempt_key(ctx), MACHINE, T0)
    assert ctx.services.launches.tokens == {}
