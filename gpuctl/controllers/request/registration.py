"""Provisioning/Joining: wait for the machine's Node, up to the registration timeout.

The Node is the one labelled `gpuctl.io/instance-name=<attempt's name>` whose provider
ID (when the kubelet set one) ends in the instance id. Boot times differ a lot by
cloud and machine size, so the timeout is per provider (GPUProvider
`registrationTimeout`, else the cloud's default), overridable per request. On
timeout the machine is terminated, its offer marked in the capacity cache, and a
new attempt starts.

The Registered condition is dated by the Node's creationTimestamp: its write may be
held back a little (news about a booting machine goes out with the Ready write,
`coalesce`), and `kubectl describe` still shows when the Node registered.
"""

from __future__ import annotations

import datetime
from typing import Any

from gpuctl.api import ConditionType, Phase, registration_timeout, set_condition
from gpuctl.api.convert import parse_time
from gpuctl.controllers.request.context import Ctx, to_offer
from gpuctl.controllers.request.nodes import delete_request_nodes, find_node, is_ready
from gpuctl.controllers.request.tokens import delete_token
from gpuctl.runtime.reconcile import Result


async def reconcile(ctx: Ctx) -> Result | None:
    instance, offer = ctx.status.instance, ctx.status.offer
    if instance is None or offer is None or ctx.status.phase == Phase.READY:
        return None
    if ctx.status.phase == Phase.INTERRUPTED:
        return None
    node = find_node(ctx)
    if node is not None:
        name = node["metadata"]["name"]
        ctx.status.node_name = name
        set_condition(
            ctx.status.conditions,
            ConditionType.REGISTERED,
            True,
            "Registered",
            f"Node {name} registered",
            observed_generation=ctx.request.metadata.generation,
            now=registered_at(ctx, node),
        )
        if ctx.status.phase == Phase.PROVISIONING:
            ctx.status.phase = Phase.JOINING
        if is_ready(node):
            return None  # initialization takes it from here
    provider = ctx.services.drivers.provider(offer.provider)
    timeout = registration_timeout(ctx.request.spec, provider.spec)
    launched = instance.launched_at or ctx.now
    left = (launched + timeout - ctx.now).total_seconds()
    if left > 0:
        return Result(requeue_after=max(0.05, min(ctx.settings.joining_poll, left)))
    return await give_up(ctx, f"no Ready Node within {timeout} of launch")


def registered_at(ctx: Ctx, node: dict[str, Any]) -> datetime.datetime:
    """When the Node registered: its creationTimestamp (the kubelet creates it), so the
    Registered condition tells the same time however late its write goes out; now, if
    the Node does not say (or says a time to come: clocks differ)."""
    try:
        created = parse_time(node["metadata"].get("creationTimestamp"))
    except ValueError:
        return ctx.now
    return min(created, ctx.now)


async def give_up(ctx: Ctx, why: str) -> Result:
    instance, offer = ctx.status.instance, ctx.status.offer
    assert instance is not None and offer is not None
    await ctx.services.drivers.get(offer.provider).terminate(instance.id)
    await delete_request_nodes(ctx)
    await delete_token(ctx, ctx.status.attempt)
    ctx.services.capacity.mark(to_offer(offer), "RegistrationTimeout")
    message = f"{instance.name or instance.id} on {offer.provider}: {why}; terminated, retrying"
    ctx.condition(ConditionType.REGISTERED, False, "RegistrationTimeout", message)
    ctx.event("Warning", "RegistrationTimeout", message)
    ctx.fail_offer("RegistrationTimeout", why)
    ctx.status.message = message
    return ctx.stop()
