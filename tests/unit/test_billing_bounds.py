"""From when and until when a machine is billed (issue 12: the ledger to the cent).

- Start, for a machine found by name (its create's answer lost, or the process that
  sent it killed before recording it): the earliest moment the create that made it can
  have gone out, as the API server holds it (`settle.persisted_bound`): the attempt's
  start, its token's creation, or the `gpuctl.io/creates-from` moment written on the
  request just before a create that followed creates known to have made nothing (a
  refused create retried, a lost answer settled). A later process, which knows none of
  this itself, reads the same bound. Twins fall back to the token's creation.
- End, for a recorded machine seen gone: the moment the answer saying so came, rounded
  up to the second (never before the cloud stopped billing it).
"""

from __future__ import annotations

import copy
import datetime
from decimal import Decimal
from typing import Any

import pytest

from gpuctl.api import FINALIZER, GPUNodeRequest
from gpuctl.controllers.request import settle, termination
from gpuctl.controllers.request.context import Ctx, Services, Settings
from gpuctl.providers.base import Instance, InstanceState, NotFoundError, RateLimitedError
from gpuctl.providers.capacity import CapacityCache
from gpuctl.runtime.client import ApiError
from gpuctl.runtime.store import Store

T0 = datetime.datetime(2026, 11, 29, 12, 0, tzinfo=datetime.UTC)
SECOND = datetime.timedelta(seconds=1)


def stamp(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def request_obj(*, deleted: bool = False, instance: bool = False) -> dict[str, Any]:
    status: dict[str, Any] = {
        "phase": "Pending",
        "attempt": 1,
        "offer": {
            "provider": "p",
            "cloud": "lambda",
            "region": "us-west",
            "nativeRegion": "us-west-1",
            "instanceType": "gpu_1x_a10",
            "gpuType": "A10-24GB",
            "gpuCount": 1,
            "capacityType": "on-demand",
            "pricePerHour": "3.60",
        },
        "conditions": [
            {
                "type": "OfferAvailable",
                "status": "True",
                "reason": "OfferSelected",
                "message": "chosen",
                "lastTransitionTime": stamp(T0),
            }
        ],
        "cost": {"accruedUSD": "0.0000", "since": stamp(T0), "updatedAt": stamp(T0)},
    }
    if instance:
        status["phase"] = "Ready"
        status["instance"] = {"id": "i-1", "name": "n", "launchedAt": stamp(T0)}
    metadata: dict[str, Any] = {
        "name": "r1",
        "uid": "0b0e5a3c-1111-2222-3333-444455556666",
        "generation": 1,
        "resourceVersion": "7",
        "finalizers": [FINALIZER],
    }
    if deleted:
        metadata["deletionTimestamp"] = stamp(T0)
    return {
        "apiVersion": "gpuctl.io/v1alpha1",
        "kind": "GPUNodeRequest",
        "metadata": metadata,
        "spec": {"gpu": {"type": "A10-24GB", "count": 1}},
        "status": status,
    }


class Client:
    """The token Secret and the request, as the API server would hold them."""

    def __init__(self, secret: dict[str, Any] | None, obj: dict[str, Any] | None = None) -> None:
        self.secret = secret
        self.obj = obj
        self.patches: list[dict[str, Any]] = []

    async def get(self, resource: Any, name: str, *, namespace: str | None = None) -> Any:
        if self.secret is None:
            raise ApiError(404, "NotFound", "gone", {})
        return copy.deepcopy(self.secret)

    async def patch(self, resource: Any, name: str, body: Any) -> Any:
        assert self.obj is not None
        meta = self.obj["metadata"]
        if body["metadata"]["resourceVersion"] != meta["resourceVersion"]:
            raise ApiError(409, "Conflict", "the object has been modified", {})
        self.patches.append(body)
        meta.setdefault("annotations", {}).update(body["metadata"]["annotations"])
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
        return copy.deepcopy(self.obj)


def secret(made: datetime.datetime) -> Any:
    return {"metadata": {"name": "bootstrap-token-x", "creationTimestamp": stamp(made)}}


def annotated(obj: dict[str, Any], value: str) -> dict[str, Any]:
    obj["metadata"]["annotations"] = {settle.CREATES_FROM: value}
    return obj


def make_ctx(client: Any, now: datetime.datetime, obj: dict[str, Any], drivers: Any = None) -> Ctx:
    clock = [now]
    services = Services(
        client=client,
        events=None,  # type: ignore[arg-type]
        drivers=drivers,
        capacity=CapacityCache(60),
        nodes=Store(),
        settings=Settings("c1", "gpuctl-system", "https://k:6443", "sha256:x"),
        clock=lambda: clock[0],
    )
    request = GPUNodeRequest.from_dict(obj)
    return Ctx(obj, request, copy.deepcopy(request.status), now, services)


async def test_a_found_machine_is_billed_from_the_latest_bound_the_api_server_holds() -> None:
    obj = request_obj()
    # No token: the attempt's start.
    assert await settle.billing_start(make_ctx(Client(None), T0 + 300 * SECOND, obj)) == T0
    # The token, made 40 s into the attempt (a create waited for it).
    made = T0 + 40 * SECOND
    ctx = make_ctx(Client(secret(made)), T0 + 300 * SECOND, obj)
    assert await settle.billing_start(ctx) == made
    # Creates refused or settled after a lost answer: the moment written before the
    # create that followed. Any process reads it (nothing of this one's memory is used).
    later = T0 + 180 * SECOND
    obj = annotated(request_obj(), f"1 {stamp(later)}")
    ctx = make_ctx(Client(secret(made)), T0 + 300 * SECOND, obj)
    assert await settle.billing_start(ctx) == later
    # Twins: a create taken to have made nothing did; back to the token's creation.
    assert await settle.billing_start(ctx, twins=True) == made
    # Written for another attempt: not this one's; unreadable: ignored.
    for value in (f"2 {stamp(later)}", "1 yesterday", "1 2026-11-29T12:03:00"):
        obj = annotated(request_obj(), value)
        ctx = make_ctx(Client(secret(made)), T0 + 300 * SECOND, obj)
        assert await settle.billing_start(ctx) == made


async def test_the_bound_is_written_before_a_create_only_when_it_moved() -> None:
    made = T0 + 10 * SECOND
    # The first create, right after its token: nothing written.
    client = Client(secret(made), request_obj())
    assert client.obj is not None
    await settle.persist_bound(
        make_ctx(client, made + settle.BOUND_SLACK, client.obj), secret(made)
    )
    assert client.patches == []
    # A create retried (or sent after a settle) a minute later: the moment goes on the
    # request before the create, guarded by its resourceVersion, so a process that
    # finds the machine bills from here; this reconcile goes on from the patched object.
    now = made + 60 * SECOND
    ctx = make_ctx(client, now, copy.deepcopy(client.obj))
    await settle.persist_bound(ctx, secret(made))
    assert [p["metadata"]["annotations"] for p in client.patches] == [
        {settle.CREATES_FROM: f"1 {stamp(now)}"}
    ]
    assert ctx.obj["metadata"]["resourceVersion"] == "8"
    fresh = make_ctx(Client(secret(made)), now + 120 * SECOND, copy.deepcopy(client.obj))
    assert await settle.billing_start(fresh) == now
    # A stale copy: no write, read again (never a bound the server did not check).
    stale = make_ctx(client, now + 60 * SECOND, request_obj())
    with pytest.raises(settle.StaleCacheError):
        await settle.persist_bound(stale, secret(made))


class GoneDriver:
    """The recorded machine is gone; answering takes 3.4 s on the clock."""

    def __init__(self, clock: list[datetime.datetime]) -> None:
        self.clock = clock

    async def terminate(self, instance_id: str) -> None:
        """The driver finds out itself that the machine is gone."""

    async def get(self, instance_id: str, since: Any = None, listed_by: Any = None) -> Any:
        self.clock[0] += datetime.timedelta(seconds=3)  # the clock reads whole seconds
        raise NotFoundError("no such machine")


class Drivers:
    def __init__(self, driver: Any) -> None:
        self.driver = driver

    def get(self, name: str) -> Any:
        return self.driver


async def test_billing_ends_when_the_answer_saying_gone_came_rounded_up() -> None:
    obj = request_obj(deleted=True, instance=True)
    now = T0 + 100 * SECOND
    clock = [now]
    ctx = make_ctx(Client(None), now, obj, Drivers(GoneDriver(clock)))
    ctx.services.clock = lambda: clock[0]
    assert not await termination.machine_gone(ctx)  # billed, written first
    assert ctx.status.instance is None
    assert ctx.status.cost is not None
    # 104 s at $3.60/h: until the answer (now + 3 s, whole seconds) plus the second the
    # floored clock may hide; never `now`, before the call, when the machine may still
    # have been terminating.
    assert ctx.status.cost.updated_at == now + 4 * SECOND
    assert ctx.status.cost.accrued_usd == Decimal("0.1040")


class QueuedDriver:
    """The machine is live; every other call waits for a rate-limit slot."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.turn = 0

    def _limited(self, call: str) -> None:
        self.turn += 1
        if self.turn % 2 == 0:
            raise RateLimitedError(f"{call}: rate limit", retry_after=30.0, provider="p")
        self.calls.append(call)

    async def terminate(self, instance_id: str) -> None:
        if "terminate" not in self.calls:  # once per poll, as the drivers' TerminateLog
            self._limited("terminate")

    async def get(self, instance_id: str, since: Any = None, listed_by: Any = None) -> Any:
        self._limited("get")
        return Instance(instance_id, "n", InstanceState.TERMINATING, "terminating")

    async def find_all(self, name: str, since: Any = None) -> list[Instance]:
        self._limited("find_all")
        return []


async def test_a_teardown_waiting_for_rate_limit_slots_makes_progress_on_every_turn() -> None:
    # A look that showed the machine live was made again by every requeue while the
    # terminate it led to waited for its slot: under RunPod's 60 calls a minute a mass
    # teardown sent GETs and no DELETE for minutes. The owed terminate goes first.
    obj = request_obj(deleted=True, instance=True)
    driver = QueuedDriver()
    ctx = make_ctx(Client(None), T0, obj, Drivers(driver))
    with pytest.raises(RateLimitedError):  # looked: live; the terminate waits
        await termination.machine_gone(ctx)
    assert driver.calls == ["get"]
    assert not await termination.machine_gone(ctx)  # the terminate went; look next pass
    assert driver.calls == ["get", "terminate"]
    with pytest.raises(RateLimitedError):  # the look waits for its slot
        await termination.machine_gone(ctx)
    assert not await termination.machine_gone(ctx)  # looked: terminating
    assert driver.calls == ["get", "terminate", "get"]
