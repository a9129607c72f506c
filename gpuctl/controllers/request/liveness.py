"""Is the machine still there? Provisioning, Joining and Ready poll the cloud.

A machine that is gone (preempted, terminated, unknown to the cloud) or broken
(failed, stopped) while the request still wants it is an interruption: the broken
one is terminated, its Node cordoned and deleted, the offer marked in the capacity
cache when it was spot, and the request goes to Interrupted; the offer step then
provisions a replacement as a new attempt. Polls are throttled per request
(`joining_poll` before Ready, `ready_poll` after) because every poll is a cloud call. A
poll the provider's rate limit has no token for yet is put off to the token's time
(`RateLimitedError`), and the later steps run without it. A Ready machine whose Node is
Ready is polled only with a token nobody else waits for (`ratelimit.spare_only`): its
Node already says it runs (a machine preempted or terminated takes its Node's heartbeat
with it, and from then on its polls take their turn), and those polls, one per machine
per `ready_poll`, would otherwise queue ahead of launches and teardowns. Without a spare
token the poll is skipped until the next `ready_poll`. A poll wants an answer to a call
sent at most half an interval before it became due, not a call of its own: a driver
that keeps one list of all its machines (`providers.snapshot`; RunPod, Lambda) serves
many polls with one call.

The poll throttle is in memory: a restarted operator meets every machine unpolled. A
Ready machine whose Node is Ready is then taken as polled at a moment of the last
`ready_poll` fixed by its key (`_spread`), so the first polls of a new process spread
over the interval instead of all going at its start: under RunPod's 60 calls a minute
and a restart every ~15 s (issue 12's chaos suite), each new process spent the cloud's
minute on polls of machines its Nodes said were running, and launches waited for the
next minute. Its state in status is then at most two intervals old (one before the
restart, one after); the Node still says it runs, and a machine that stops takes its
Node's heartbeat with it, after which it is polled every `joining_poll`.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib

from gpuctl.api import CapacityType, ConditionType, Phase
from gpuctl.controllers.metrics import INTERRUPTIONS
from gpuctl.controllers.request.context import Ctx, to_offer
from gpuctl.controllers.request.nodes import delete_request_nodes, find_node, is_ready
from gpuctl.controllers.request.tokens import delete_token
from gpuctl.providers.base import Instance, InstanceState, NotFoundError, RateLimitedError
from gpuctl.providers.ratelimit import spare_only
from gpuctl.runtime.reconcile import Result

_BROKEN = (InstanceState.FAILED, InstanceState.STOPPED)


def _interval(ctx: Ctx) -> float:
    if ctx.status.phase == Phase.READY and _node_healthy(ctx):
        return ctx.settings.ready_poll
    # Before Ready, or a Node that stopped being Ready: the machine may be gone, and the
    # cloud says so before the Node's grace period ends; ask it sooner.
    return ctx.settings.joining_poll


def _node_healthy(ctx: Ctx) -> bool:
    node = find_node(ctx)
    return node is not None and is_ready(node)


def _due(ctx: Ctx) -> datetime.datetime | None:
    """None when no poll is due; else the oldest answer the poll accepts: one to a call
    sent at most half an interval before the poll became due (the first poll: since
    now). So one list of the provider's machines serves every poll due within half an
    interval of it, and a machine's state is never older than 1.5 intervals."""
    instance = ctx.status.instance
    assert instance is not None
    key = (ctx.name, instance.id)
    interval = datetime.timedelta(seconds=_interval(ctx))
    last = ctx.services.last_poll.get(key)
    if last is None and ctx.status.phase == Phase.READY and _node_healthy(ctx):
        last = ctx.services.last_poll[key] = ctx.now - _spread(key, interval)
    if last is not None and ctx.now - last < interval:
        return None
    ctx.services.last_poll[key] = ctx.now
    return ctx.now if last is None else last + interval / 2


def _spread(key: tuple[str, str], interval: datetime.timedelta) -> datetime.timedelta:
    """A share of `interval` fixed by `key` (not random: every process spreads alike)."""
    digest = hashlib.sha256("/".join(key).encode()).digest()
    return interval * (int.from_bytes(digest[:8], "big") / 2**64)


async def reconcile(ctx: Ctx) -> Result | None:
    instance = ctx.status.instance
    offer = ctx.status.offer
    due = None if instance is None or offer is None else _due(ctx)
    if instance is None or offer is None or due is None:
        return None
    driver = ctx.services.drivers.get(offer.provider)
    spare = ctx.status.phase == Phase.READY and _node_healthy(ctx)
    try:
        with spare_only() if spare else contextlib.nullcontext():
            current: Instance | None = await driver.get(instance.id, since=due)
    except NotFoundError:
        current = None
    except RateLimitedError as err:
        if spare:
            return None  # no spare token: the next poll is in `ready_poll`
        # No token for the poll yet (it is reserved): poll then, and let the steps that
        # need no cloud call (the Node registered, Ready) go on meanwhile.
        del ctx.services.last_poll[(ctx.name, instance.id)]
        return Result(requeue_after=err.delay)
    if current is None or current.state.gone or current.state in _BROKEN:
        return await interrupted(ctx, current)
    instance.state = current.native_state
    instance.public_ip = current.public_ip or instance.public_ip
    if ctx.status.phase == Phase.PROVISIONING and current.state == InstanceState.RUNNING:
        ctx.status.phase = Phase.JOINING
    return None


async def interrupted(
    ctx: Ctx, current: Instance | None, *, reason: str = "InstanceLost", why: str = ""
) -> Result:
    """The machine is lost to the request: terminate what still exists, delete its Node,
    and go to Interrupted so the offer step provisions a replacement."""
    instance, offer = ctx.status.instance, ctx.status.offer
    assert instance is not None and offer is not None
    if current is not None and current.state is not InstanceState.TERMINATED:
        # A preempted machine may still exist and bill (RunPod keeps a reclaimed spot pod
        # and its disk until it is terminated): terminate whatever is not yet gone for good.
        await ctx.services.drivers.get(offer.provider).terminate(current.id)
    await delete_request_nodes(ctx)
    await delete_token(ctx, ctx.status.attempt)
    state = current.native_state if current is not None else "not found"
    why = why or f"is gone (state {state})"
    if offer.capacity_type == CapacityType.SPOT:
        ctx.services.capacity.mark(to_offer(offer), "Interrupted")
    INTERRUPTIONS.labels(offer.provider, offer.capacity_type.value).inc()
    message = (
        f"{instance.name or instance.id} on {offer.provider} ({offer.capacity_type.value}) "
        f"{why}; provisioning a replacement"
    )
    ctx.status.interruptions += 1
    ctx.condition(ConditionType.INTERRUPTED, True, reason, message)
    ctx.condition(ConditionType.READY, False, "Interrupted", message)
    ctx.condition(ConditionType.REGISTERED, False, "Interrupted", message)
    ctx.event("Warning", "Interrupted", message)
    ctx.fail_offer("Interrupted", message)
    ctx.status.phase = Phase.INTERRUPTED
    ctx.status.message = message
    return ctx.stop()


def forget(ctx: Ctx) -> None:
    """Drop the poll throttle of a request (it was deleted)."""
    for key in [k for k in ctx.services.last_poll if k[0] == ctx.name]:
        del ctx.services.last_poll[key]
