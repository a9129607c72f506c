"""A machine whose status write was lost is recorded again, never created twice.

A create answered, the status write recording the machine conflicted (409: the cached
copy lagged), and the retry's look-up by name was served by a list sent before the
create: it found nothing, and the attempt was settled (every create had an answer), so
a second create went out under the same name (seen in a clean-clone `make test`: the
leak collector took the first machine as an orphan). The launch step now records the
machine again from `LaunchMemory.unwritten`, billed from when the lost write would have
started its bill; a teardown does the same before it looks anything up.
"""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

from gpuctl.api import GPUNodeRequest
from gpuctl.controllers.request import launch, settle, termination
from gpuctl.controllers.request.context import Ctx
from gpuctl.providers.base import Instance, InstanceState
from tests.unit.test_billing_bounds import SECOND, T0, Client, Drivers, make_ctx, request_obj

MACHINE = Instance("m-1", "gpuctl-c1-x-1", InstanceState.PENDING, "booting", launched_at=T0)


class NoCallDriver:
    """Any cloud call fails the test: a stale list would miss the machine anyway."""

    async def find_all(self, name: str, since: Any = None) -> list[Instance]:
        raise AssertionError("looked up by name")

    async def create(self, request: Any) -> Instance:
        raise AssertionError("created a second machine")


def again(first: Ctx, obj: dict[str, Any], seconds: int) -> Ctx:
    """The next reconcile of the same process, reading `obj` as the cache has it."""
    request = GPUNodeRequest.from_dict(obj)
    return Ctx(obj, request, copy.deepcopy(request.status), T0 + seconds * SECOND, first.services)


def launched(seconds: int = 0) -> Ctx:
    """This process's create answered with MACHINE; the write recording it was lost."""
    ctx = make_ctx(Client(None), T0 + seconds * SECOND, request_obj(), Drivers(NoCallDriver()))
    launch.record_instance(ctx, MACHINE)
    return ctx


async def test_the_retry_records_the_machine_again_without_a_second_create() -> None:
    first = launched()
    ctx = again(first, request_obj(), 3)
    result = await launch.reconcile(ctx)
    assert result is not None and ctx.stopped
    assert ctx.status.instance is not None and ctx.status.instance.id == "m-1"
    assert ctx.status.instance.launched_at == T0
    # Billed from when the lost write would have started the bill: 3 s at $3.60/h.
    assert ctx.status.cost is not None and ctx.status.cost.accrued_usd == Decimal("0.0030")
    assert [reason for _, reason, _ in ctx.pending_events] == ["Launched"]


async def test_a_status_read_back_with_the_machine_ends_the_memory() -> None:
    first = launched()
    obj = request_obj(instance=True)
    obj["status"]["phase"] = "Provisioning"
    assert await launch.reconcile(again(first, obj, 5)) is None
    assert first.services.launches.unwritten == {}
    assert settle.attempt_key(first) in first.services.launches.machines


async def test_a_teardown_records_the_lost_machine_before_it_looks_anything_up() -> None:
    first = launched()
    ctx = again(first, request_obj(deleted=True), 4)
    assert not await termination.machine_gone(ctx)
    assert ctx.status.instance is not None and ctx.status.instance.id == "m-1"
    assert ctx.status.cost is not None and ctx.status.cost.accrued_usd == Decimal("0.0040")


async def test_a_new_attempt_is_not_given_the_old_machine() -> None:
    first = launched()
    obj = request_obj()
    obj["status"]["attempt"] = 2
    ctx = again(first, obj, 5)
    assert launch.record_again(ctx) is None
