"""Terminating: tear everything down, then release the finalizer `gpuctl.io/instance`.

Order matters for money safety: the finalizer goes only after the cloud reports the
machine gone (terminated, or unknown to it); a pool machine's Node is drained before
that (the `gpuctl.io/drain` finalizer goes first). The machine is the attempt's recorded
instance. The moment it is seen gone its billing stops (at the answer that said so,
rounded up: never before the cloud stopped billing it), written in a status update of
its own, so a slow or failing rest of the teardown bills nothing more. Once it is gone
(or when none was recorded: a crash or a lost status write between launch and
record), the attempt's deterministic name is looked up, and anything found is first
RECORDED — id, launch time, its time billed since the create that made it can have
gone out (`settle.billing_start`) — in a status write, and terminated only on the next
pass, so what it cost reaches the ledger whatever happens in between. A second
machine under the name is a
twin: billed, terminated at once and reported. When a create of the attempt may have
happened unseen (`settle.uncertain_since`), look-ups continue for
`Settings.launch_settle` before the machine is taken not to exist. Terminate is sent
once per poll (the drivers remember it). Every look of a teardown asks for an answer
sent after the teardown began in this process (`_since`), not for a call of its own:
requests torn down together share one list of the provider's machines where the
driver keeps one (`providers.snapshot`; RunPod, Lambda), and the look-up by name after
the machine is gone is served by the list that saw it go. Then what the clouds keep besides the
machines (Paperspace startup scripts), the Node and the bootstrap tokens, of every
attempt, are deleted. If the provider cannot be reached or configured, the request
stays Terminating (with an Event saying why): never drop a finalizer while a paid
machine may exist.
"""

from __future__ import annotations

import datetime

from gpuctl.api import FINALIZER, ConditionType, Phase
from gpuctl.controllers import cost, ledger
from gpuctl.controllers.pool.disruption.keys import DRAIN_FINALIZER
from gpuctl.controllers.request import launch, settle, tokens
from gpuctl.controllers.request.context import Ctx
from gpuctl.controllers.request.nodes import delete_request_nodes
from gpuctl.controllers.resources import GPUNODEREQUESTS
from gpuctl.providers.base import (
    Driver,
    Instance,
    InstanceState,
    NotFoundError,
    ProviderError,
    RateLimitedError,
)
from gpuctl.runtime.client import is_not_found
from gpuctl.runtime.reconcile import Result
from gpuctl.util.crashpoints import crash_point


def _since(ctx: Ctx) -> datetime.datetime:
    """When this process began the teardown: a look at the recorded machine wants an
    answer the cloud gave to a call sent after that. The moment stays put across
    requeues (rate-limit turns), so looks of requests torn down together are served by
    the same list. The driver adds its own bound: never an answer older than its
    terminate of the machine. (A stale "live" costs a terminate the driver sends at most
    once per poll; "gone" is final whenever it was seen.)"""
    return ctx.services.teardown_since.setdefault(ctx.name, ctx.now)


def _lookup_since(ctx: Ctx) -> datetime.datetime:
    """The look-up by name wants an answer sent after every create this process sent for
    the request: after the teardown began (no launch step runs once the request is
    deleted), rounded up, as the clock reads whole seconds. While a create may still be
    unlisted (`settle.uncertain_since`) every pass wants a new answer, so that
    `launch_settle` of look-ups really looked."""
    if settle.attempt_key(ctx) in ctx.services.launches.uncertain:
        return ctx.now + datetime.timedelta(seconds=1)
    return _since(ctx) + datetime.timedelta(seconds=1)


def _listed_by(ctx: Ctx) -> datetime.datetime | None:
    """From when the cloud's lists show the recorded machine, if known: it had joined the
    cluster (Ready) by `ready_at`, and lists lag a new machine by at most
    `launch_settle` (the bound the relaunch rule rests on). A list sent after that which
    does not show it says it is gone: a process restarted after a mass teardown does not
    ask for each machine it never listed by id."""
    ready_at = ctx.request.status.ready_at
    if ready_at is None or not _current_attempt_was_ready(ctx):
        return None
    return ready_at + ctx.settings.launch_settle


async def _recorded(ctx: Ctx, driver: Driver) -> Instance | None:
    """The recorded machine while the cloud still has it; None once it is gone."""
    assert ctx.status.instance is not None
    try:
        current = await driver.get(
            ctx.status.instance.id, since=_since(ctx), listed_by=_listed_by(ctx)
        )
    except NotFoundError:
        return None
    # Only TERMINATED is gone for good: a preempted machine can still bill until terminated.
    return None if current.state is InstanceState.TERMINATED else current


def _seen_gone(ctx: Ctx) -> datetime.datetime:
    """Until when a machine just seen gone is billed: the moment the answer saying so
    came, rounded up. The cloud stopped billing it at some point before that answer
    (and after the last one that showed it), so this never bills less than the cloud;
    `ctx.now` would (the reconcile began before the call, and the machine may have
    terminated in between). The clock reads whole seconds, floored: hence the second
    added. Billing until the terminate the cloud accepted plus a terminating time would
    be tighter, but no cloud documents how long terminating takes."""
    return max(ctx.now, ctx.services.clock()) + datetime.timedelta(seconds=1)


async def _may_have_unrecorded(ctx: Ctx) -> bool:
    """Whether a create of the current attempt may have made a machine no look-up has
    shown yet: uncertain, and for less than `launch_settle`."""
    key = settle.attempt_key(ctx)
    memory = ctx.services.launches
    met = key in memory.uncertain or key in memory.settled
    # Never met by this process: without a token no create was ever sent.
    if not met and not await tokens.token_exists(ctx, ctx.status.attempt):
        memory.settle(key)
        return False
    return settle.settle_wait(ctx, settle.uncertain_since(ctx)) > 0


async def machine_gone(ctx: Ctx) -> bool:
    offer = ctx.status.offer
    if offer is None:
        return True  # earlier attempts were terminated when they failed over
    driver = ctx.services.drivers.get(offer.provider)
    recorded = ctx.status.instance
    if launch.record_again(ctx) is not None:
        return False  # a machine whose record was lost: terminated on the next pass
    if recorded is not None:
        # The attempt's create has a known outcome: the machine status recorded.
        ctx.services.launches.settle(settle.attempt_key(ctx))
        # Each cloud call may wait for a rate-limit slot (the reconcile is requeued for
        # it). A look that showed the machine live is not made again before the
        # terminate it led to: that terminate goes first on the next pass (under
        # RunPod's 60 calls a minute, a mass teardown that looked again on every
        # requeue sent GETs and no DELETE for minutes). Otherwise look first: a
        # machine an earlier process terminated is seen gone with one call.
        # A look never follows a terminate in the same pass: a machine just terminated
        # is not done yet, and RunPod shows a deleted pod TERMINATED at once (billing
        # would stop before the cloud's terminating time has run).
        owed = ctx.services.terminate_owed
        machine = (ctx.name, recorded.id)
        if machine in owed:
            await _terminate(ctx, driver, recorded.id)
            return False
        current = await _recorded(ctx, driver)
        if current is not None:
            if recorded.state != current.native_state:
                ctx.event(
                    "Normal", "TerminatingInstance", f"terminating {current.name} ({current.id})"
                )
            recorded.state = current.native_state
            owed.add(machine)
            await _terminate(ctx, driver, current.id)
            return False
        owed.discard(machine)
        # The recorded machine is gone: its billing stops now. Bill up to this moment and
        # write it before anything else of the teardown (look-ups, clean-up, the ledger)
        # can fail or take long: each retry would otherwise bill the gone machine again,
        # and the ledger would record minutes the cloud never charged.
        ctx.status.cost = cost.accrue(ctx.status.cost, launch.running_price(ctx), _seen_gone(ctx))
        ctx.status.instance = None
        ctx.status.message = f"{recorded.name} ({recorded.id}) is gone; finishing the teardown"
        return False
    # Nothing (more) recorded: anything else under the attempt's name bills too. Once a
    # look-up found nothing and no create can be unlisted, this process knows the
    # attempt has no machine: a requeue (a later teardown call waiting for its
    # rate-limit slot) does not list the provider's machines again.
    key = settle.attempt_key(ctx)
    nothing = ctx.services.launches.nothing_there(key)
    listed = [] if nothing else await driver.find_all(ctx.instance_name, since=_lookup_since(ctx))
    found = [i for i in listed if recorded is None or i.id != recorded.id]
    if found:
        keep, twins = found[0], found[1:]
        # Beside a recorded machine, anything under its name is a twin.
        start = await settle.billing_start(ctx, twins=bool(twins) or recorded is not None)
        await launch.terminate_twins(ctx, driver, keep, twins, start)
        launch.record_found(ctx, keep, start)
        message = f"{keep.name} ({keep.id}, {keep.native_state}) found by name: recorded"
        if recorded is not None:  # the recorded machine existed: this one is a twin
            launch.report_twin(ctx, keep, recorded.id)
        ctx.status.message = f"{message}; terminating it"
        ctx.event("Normal", "FoundByName", f"{message}, terminating it next")
        return False
    if await _may_have_unrecorded(ctx):
        ctx.status.message = f"a create of {ctx.instance_name} may have happened; looking it up"
        return False
    ctx.services.launches.machines.discard(key)  # its machine is gone, no other exists
    return True


async def _terminate(ctx: Ctx, driver: Driver, instance_id: str) -> None:
    """The owed terminate (sent once per poll at most by the driver). Waiting for its
    rate-limit slot it stays owed: it goes first on the next pass. Failed otherwise (a
    5xx, a timeout: the cloud may have acted), the next pass looks first: a terminate
    answered 502 after RunPod deleted the pod was sent again, answered 400, and the
    GET confirming it waited out RunPod's minute (chaos seed 5: seen gone 64 s late,
    1.2 cents over), where a shared list would have shown it gone at once."""
    machine = (ctx.name, instance_id)
    try:
        await driver.terminate(instance_id)
    except RateLimitedError:
        raise
    except ProviderError:
        ctx.services.terminate_owed.discard(machine)
        raise
    ctx.services.terminate_owed.discard(machine)
    crash_point("after-terminate")


async def _delete_tokens(ctx: Ctx) -> None:
    """Every attempt's token but one already gone: the current attempt's was deleted
    in the reconcile that made it Ready (before that status write), so a request whose
    current machine was Ready has none left to delete (no DELETE that answers 404)."""
    last = ctx.status.attempt
    if _current_attempt_was_ready(ctx):
        last -= 1
    for attempt in range(1, last + 1):
        await tokens.delete_token(ctx, attempt)


def _current_attempt_was_ready(ctx: Ctx) -> bool:
    """Whether the current attempt's machine was Ready: `readyAt` (kept when the machine
    is cleared from status once seen gone) is no older than its launch, or, with the
    machine cleared, than the attempt's start (an earlier attempt's Ready came before
    the failover that began this one). Without the second case a teardown's last pass,
    after the write that cleared the machine, deleted the Ready attempt's token again
    (a DELETE answered 404: one per teardown in the lifecycle benchmark)."""
    before = ctx.request.status  # as read: the machine may be cleared from the copy
    if before.ready_at is None:
        return False
    instance = before.instance
    if instance is not None and instance.launched_at is not None:
        return before.ready_at >= instance.launched_at
    return before.ready_at >= settle.attempt_started(ctx)


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
    if DRAIN_FINALIZER in ctx.request.metadata.finalizers:
        # A pool machine's Node is drained before the machine goes (the drain
        # controller, controllers/pool/disruption/termination.py, removes it).
        ctx.status.message = "waiting for the Node to be drained"
        return Result(requeue_after=ctx.settings.termination_poll), False
    had_machine = ctx.status.instance is not None
    if not await machine_gone(ctx):
        if had_machine and ctx.status.instance is None:
            return Result(requeue=True), False  # its bill is written: go on at once
        poll = ctx.settings.termination_poll
        if ctx.status.instance is None:  # only looking the name up: as the launch step does
            poll = max(poll, settle.recheck_interval(ctx))
        return Result(requeue_after=poll), False
    # Every attempt's machine is gone: what the clouds keep besides machines goes too.
    await launch.cleanup_attempts(ctx, range(1, ctx.status.attempt + 1))
    await delete_request_nodes(ctx)
    await _delete_tokens(ctx)
    await ledger.record(ctx)  # what it cost outlives the request
    ctx.services.launches.forget(ctx.request.metadata.uid or "")
    ctx.services.teardown_since.pop(ctx.name, None)
    return Result(), True
