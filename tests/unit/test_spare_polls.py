"""Polls of machines whose Node already says they run use spare rate-limit tokens only.

Under RunPod's 60 calls a minute, 60 Ready machines polled every 30 s took the whole
budget, and launches (and teardowns) waited a minute behind the polls for their slot
(issue 12's convergence under faults). `ratelimit.spare_only()` lets a call go only
with a token no reservation waits for, and takes and reserves nothing otherwise;
liveness polls a Ready machine with a Ready Node that way and skips the poll when none
is spare.
"""

from __future__ import annotations

import copy
import datetime
from typing import Any

import pytest

from gpuctl.api import GPUNodeRequest
from gpuctl.controllers import naming
from gpuctl.controllers.request import liveness
from gpuctl.controllers.request.context import Ctx, Services, Settings
from gpuctl.controllers.request.nodes import INSTANCE_INDEX
from gpuctl.providers.base import Instance, InstanceState, RateLimitedError
from gpuctl.providers.capacity import CapacityCache
from gpuctl.providers.ratelimit import (
    _SPARE,
    AccountLimiter,
    OpClass,
    RateLimits,
    nonblocking,
    spare_only,
)
from gpuctl.runtime.store import Store, label_index
from tests.unit.test_providers_ratelimit import Clock
from tests.unit.test_rate_limited_reconcile import deleted_request

NOW = datetime.datetime(2026, 11, 29, 12, 0, tzinfo=datetime.UTC)


async def test_a_spare_only_call_never_goes_ahead_of_a_reservation() -> None:
    clock = Clock()
    limiter = AccountLimiter(RateLimits(overall_per_second=1.0), clock=clock)
    with nonblocking("poll"), spare_only():
        await limiter.acquire(OpClass.READ)  # the burst's token is spare: it goes
    with nonblocking("launch"), pytest.raises(RateLimitedError) as launch:
        await limiter.acquire(OpClass.LAUNCH)  # reserves the next slot, 1 s away
    assert launch.value.delay == pytest.approx(1.0)
    clock.now += 1.0
    with nonblocking("poll"), spare_only(), pytest.raises(RateLimitedError) as poll:
        await limiter.acquire(OpClass.READ)  # the token that came is the launch's
    assert poll.value.delay == pytest.approx(1.0) and limiter.reserved == 1
    with nonblocking("launch"):
        await limiter.acquire(OpClass.LAUNCH)  # its slot, untouched by the poll
    clock.now += 1.0
    with nonblocking("poll"), spare_only():
        await limiter.acquire(OpClass.READ)  # spare again
    assert limiter.reserved == 0


class Driver:
    def __init__(self, limited: bool) -> None:
        self.limited = limited
        self.spare: list[bool] = []

    async def get(self, instance_id: str, since: Any = None) -> Any:
        self.spare.append(_SPARE.get())  # what the HTTP layer's acquire() sees
        if self.limited:
            raise RateLimitedError("no spare token", retry_after=40.0, provider="p")
        return Instance(instance_id, "n", InstanceState.RUNNING, "RUNNING")


class Drivers:
    def __init__(self, driver: Driver) -> None:
        self.driver = driver

    def get(self, name: str) -> Driver:
        return self.driver


def ready_node(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "resourceVersion": "1",
            "labels": {"gpuctl.io/instance-name": name},
        },
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }


def ctx_for(driver: Driver, *, node_ready: bool) -> Ctx:
    obj = deleted_request()
    del obj["metadata"]["deletionTimestamp"]
    name = naming.instance_name("c1", obj["metadata"]["uid"], 1)
    obj["status"]["nodeName"] = name
    nodes = Store()
    nodes.add_indexer(INSTANCE_INDEX, label_index("gpuctl.io/instance-name"))
    if node_ready:
        nodes.add(ready_node(name))
    services = Services(
        client=None,  # type: ignore[arg-type]
        events=None,  # type: ignore[arg-type]
        drivers=Drivers(driver),  # type: ignore[arg-type]
        capacity=CapacityCache(60),
        nodes=nodes,
        settings=Settings("c1", "gpuctl-system", "https://k:6443", "sha256:x"),
        clock=lambda: NOW,
    )
    request = GPUNodeRequest.from_dict(obj)
    return Ctx(obj, request, copy.deepcopy(request.status), NOW, services)


async def test_a_ready_machine_with_a_ready_node_is_polled_with_spare_tokens_only() -> None:
    driver = Driver(limited=True)
    ctx = ctx_for(driver, node_ready=True)
    assert ctx.status.instance is not None
    key = (ctx.name, ctx.status.instance.id)
    ctx.services.last_poll[key] = NOW - datetime.timedelta(minutes=1)  # a poll is due
    assert await liveness.reconcile(ctx) is None  # skipped: no requeue for a slot
    assert driver.spare == [True]
    assert ctx.services.last_poll  # the next poll comes after `ready_poll`
    # Its Node not Ready: the machine may be gone; the poll takes its turn.
    driver = Driver(limited=True)
    ctx = ctx_for(driver, node_ready=False)
    result = await liveness.reconcile(ctx)
    assert result is not None and result.requeue_after == 40.0
    assert driver.spare == [False]
