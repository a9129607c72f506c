"""Terminating: tear everything down, then release the finalizer `gpuctl.io/instance`.

Order matters for money safety: the finalizer goes only after the cloud reports the
machine gone (terminated, or unknown to it). The machine is the attempt's recorded
instance or, when a crash came between launch and status write, the one found by
the attempt's deterministic name. Then the Node and the bootstrap tokens of every
attempt are deleted. If the provider cannot be reached or configured, the request
stays Terminating (with an Event saying why): never drop a finalizer while a paid
machine may exist.
"""

from __future__ import annotations

from gpuctl.api import FINALIZER, ConditionType, Phase
from gpuctl.controllers import ledger
from gpuctl.controllers.request.context import Ctx
from gpuctl.controllers.request.launch import delete_token
from gpuctl.controllers.request.nodes import delete_request_nodes
from gpuctl.controllers.resources import GPUNODEREQUESTS
from gpuctl.providers.base import Instance, InstanceState, NotFoundError
from gpuctl.runtime.client import is_not_found
from gpuctl.runtime.reconcile import Result
from gpuctl.util.crashpoints import crash_point


async def _current(ctx: Ctx) -> Instance | None:
    """The live machine of the current attempt, or None when there is none."""
    offer = ctx.status.offer
    if offer is None:
        return None  # earlier attempts were terminated when they failed over
    driver = ctx.services.drivers.get(offer.provider)
    if ctx.status.instance is None:
        return await driver.find(ctx.instance_name)
    try:
        current = await driver.get(ctx.status.instance.id)
    except NotFoundError:
        return None
    # Only TERMINATED is gone for good: a preempted machine can still bill until terminated.
    return None if current.state is InstanceState.TERMINATED else current


async def machine_gone(ctx: Ctx) -> bool:
    current = await _current(ctx)
    if current is None:
        ctx.status.instance = None
        return True
    offer = ctx.status.offer
    assert offer is not None
    if ctx.status.instance is None or ctx.status.instance.state != current.native_state:
        ctx.event("Normal", "TerminatingInstance", f"terminating {current.name} ({current.id})")
    await ctx.services.drivers.get(offer.provider).terminate(current.id)
    crash_point("after-terminate")
    if ctx.status.instance is not None:
        ctx.status.instance.state = current.native_state
    return False


async def _delete_tokens(ctx: Ctx) -> None:
    for attempt in range(1, ctx.status.attempt + 1):
        await delete_token(ctx, attempt)


async def release(ctx: Ctx) -> None:
    """Remove our finalizer, guarded by resourceVersion (a stale view must not release)."""
    kept = [f for f in ctx.request.metadata.finalizers if f != FINALIZER]
    patch = {
        "metadata": {
            "finalizers": kept or None,
            "resourceVersion": ctx.obj["metadata"]["resourceVersion"],
        }
    }
    try:
        await ctx.services.client.patch(GPUNODEREQUESTS, ctx.name, patch)
    except Exception as err:
        if not is_not_found(err):  # gone already: an earlier reconcile released it
            raise


async def reconcile(ctx: Ctx) -> tuple[Result, bool]:
    """Returns (result, released): released means the object is going away now."""
    if FINALIZER not in ctx.request.metadata.finalizers:
        return Result(), False
    if ctx.status.phase != Phase.TERMINATING:
        ctx.status.phase = Phase.TERMINATING
        ctx.status.message = "terminating the machine"
        ctx.condition(ConditionType.READY, False, "Terminating", "the request is being deleted")
        ctx.event("Normal", "Terminating", "request deleted; terminating its machine")
    if not await machine_gone(ctx):
        return Result(requeue_after=ctx.settings.termination_poll), False
    await delete_request_nodes(ctx)
    await _delete_tokens(ctx)
    await ledger.record(ctx)  # what it cost outlives the request
    return Result(), True
