"""When an attempt may have a machine nobody recorded, and from when such a machine is
billed: the rules the launch step (`launch`) and the teardown (`termination`) share.

1. A create whose outcome is unknown (timeout, dropped connection, 5xx after sending,
   unreadable answer, or the whole driver create abandoned after `CREATE_TIMEOUTS`
   request timeouts) makes its attempt uncertain from when its answer failed
   (`answer_failed`). No create is sent again for that attempt until look-ups by name
   have found nothing for `Settings.launch_settle` (clouds list eventually
   consistently); meanwhile the launch step lists again five times per `launch_settle`
   (`recheck_interval`), and adopts the machine at the first sighting.
2. An attempt this process did not start itself, with a token but no recorded machine
   (an earlier process may have been killed after its create), is uncertain too; its
   settle window starts at the moment the API server's records say every create of the
   attempt had ended (`creates_quiet`), or at this process's first look, whichever is
   earlier (`uncertain_since`). The argument (`creates_quiet`): every create is
   preceded by a check, at wall time t, that the bound the API server holds
   (`persisted_bound`) is at least t - `BOUND_SLACK` (else the create writes t first,
   `persist_bound`, and is sent only once that write is confirmed); the clocks read
   whole seconds, so the check's true time is below t + 1 s; and the create (its driver
   steps, its POST, reading its answer) is abandoned `CREATE_TIMEOUTS` request timeouts
   after a moment taken before the check (`launch.create_within`). So every create of
   the attempt, in any process, was done at the cloud before bound + `BOUND_SLACK` + 1 s
   + `CREATE_TIMEOUTS` x the provider's request timeout, whenever the process sending it
   was SIGKILLed: killed before the write is confirmed, it sent nothing; after it, the
   bound is already there. The bound only grows within an attempt: the token's creation
   is fixed, the annotation is rewritten only with a later time for the same attempt,
   and a process reads it from a quorum read (`launch._check_fresh`). Where the bound
   is unknown the window starts at the first look: no token Secret, a `creates-from` of
   this attempt that cannot be read, or a token made by an older version that did not
   keep the bound (no `tokens.BOUND_MARK` on it; such a version may have sent a create
   long after the token without writing anything). Clocks of the operator and the API
   server are taken to agree to well under `launch_settle` (NTP).
3. A machine found by name is billed from the same bound (`billing_start`): the
   earliest moment the create that made it can have gone out, as the API server holds
   it, so any process reads the same figure whichever one sent the create.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from gpuctl.api import ConditionStatus, ConditionType, GPUProvider, get_condition
from gpuctl.api.convert import format_time
from gpuctl.controllers.drivers import driver_config
from gpuctl.controllers.request.context import Ctx
from gpuctl.controllers.request.tokens import BOUND_MARK, token_secret
from gpuctl.controllers.resources import GPUNODEREQUESTS
from gpuctl.providers.base import ProviderError
from gpuctl.providers.http import RetryPolicy, retry_policy_for
from gpuctl.runtime.client import is_conflict

# On the request, "<attempt> <time>": no create of that attempt that may have made a
# machine went out before the time (`persist_bound`, `persisted_bound`).
CREATES_FROM = "gpuctl.io/creates-from"
# A create this much later than the bound the API server holds writes a new one first.
BOUND_SLACK = datetime.timedelta(seconds=2)
# The clocks read whole seconds (floored): a moment read as t came before t + 1 s.
CLOCK_GRAIN = datetime.timedelta(seconds=1)
# A driver create (its steps before the POST, the POST, reading the answer) is abandoned
# this many of the provider's request timeouts after it began: its outcome is unknown.
CREATE_TIMEOUTS = 2


class StaleCacheError(Exception):
    """The cached request is behind the API server; retry once the cache catches up."""


def attempt_key(ctx: Ctx) -> tuple[str, int]:
    return (ctx.request.metadata.uid or "", ctx.status.attempt)


def attempt_started(ctx: Ctx) -> datetime.datetime:
    """The earliest moment a create of the current attempt can have gone out: when its
    offer was chosen (OfferAvailable turned True) or, for a later attempt, when the last
    one failed over, whichever is later. Billing a machine found by name from here never
    under-reports it: not every cloud reports when a machine was created."""
    times = []
    chosen = get_condition(ctx.status.conditions, ConditionType.OFFER_AVAILABLE)
    if chosen is not None and chosen.status == ConditionStatus.TRUE:
        times.append(chosen.last_transition_time)
    if ctx.status.failed_offers:
        times.append(ctx.status.failed_offers[-1].at)
    found = [t for t in times if t is not None]
    return max(found) if found else ctx.now


def _time(raw: object) -> datetime.datetime | None:
    """An RFC 3339 time; None when absent or unreadable (an annotation someone edited)."""
    if not raw:
        return None
    try:
        moment = datetime.datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def persisted_bound(ctx: Ctx, secret: Mapping[str, Any] | None) -> datetime.datetime:
    """The earliest moment a create of the current attempt that may have made a machine
    can have been sent, as the API server holds it (any process may read it):

    - the attempt's start (`attempt_started`); with the token Secret gone (deleted with
      the attempt's end) and nothing written, nothing tighter is known;
    - when the attempt's bootstrap token was made: every create comes after it;
    - the request's `gpuctl.io/creates-from` annotation for this attempt, when later:
      written by `persist_bound` just before a create sent once every earlier create of
      the attempt was known to have made nothing (refused by the cloud, or looked up by
      name for `launch_settle` without a find: the rule that lets a create go out)."""
    times = [attempt_started(ctx)]
    made = _time(((secret or {}).get("metadata") or {}).get("creationTimestamp"))
    if made is not None:
        times.append(made)
    annotations: Mapping[str, Any] = ctx.obj.get("metadata", {}).get("annotations") or {}
    attempt, _, moment = str(annotations.get(CREATES_FROM) or "").partition(" ")
    if attempt == str(ctx.status.attempt) and (written := _time(moment)) is not None:
        times.append(min(written, ctx.now))  # never a bound in the future
    return max(times)


async def billing_start(ctx: Ctx, *, twins: bool = False) -> datetime.datetime:
    """From when a machine found by name under the current attempt's name is billed: the
    earliest moment the create that made it can have gone out (`persisted_bound`). This
    never under-reports it, and a create that waited (rate limits, refused creates
    retried, a lost answer looked up for `launch_settle`, a restart's settle) does not
    bill the wait. With twins (two machines under one name) a create was taken to have
    made nothing and did: the tighter bounds rest on that rule, so both are billed from
    the attempt's start or its token's creation."""
    secret = await token_secret(ctx)
    if not twins:
        return persisted_bound(ctx, secret)
    made = _time(((secret or {}).get("metadata") or {}).get("creationTimestamp"))
    start = attempt_started(ctx)
    return max(start, made) if made is not None else start


async def persist_bound(ctx: Ctx, secret: Mapping[str, Any]) -> None:
    """Just before a create (every earlier create of the attempt is known to have made
    nothing): write on the request that no create of this attempt that may make a
    machine went out before now, so whichever process later finds the machine by name
    bills it from here (`persisted_bound`), even if this one is killed before it records
    the machine. Only when the bound the API server holds is more than `BOUND_SLACK`
    older (creates refused and retried, an attempt settled after a lost answer or a
    restart): the first create of an attempt, sent right after its token was made,
    writes nothing. An annotation, guarded by resourceVersion, on an object gpuctl may
    patch already (no permission to patch kube-system's Secrets); the status write at
    the end of this reconcile goes on from the object the patch returned."""
    now = ctx.services.clock()
    if now - persisted_bound(ctx, secret) <= BOUND_SLACK:
        return
    metadata = ctx.obj["metadata"]
    value = f"{ctx.status.attempt} {format_time(now)}"
    patch = {
        "metadata": {
            "annotations": {CREATES_FROM: value},
            "resourceVersion": metadata["resourceVersion"],
        }
    }
    try:
        ctx.obj = await ctx.services.client.patch(GPUNODEREQUESTS, ctx.name, patch)
    except Exception as err:
        if is_conflict(err):
            raise StaleCacheError(ctx.name) from err
        raise


def request_timeout(provider: GPUProvider) -> float:
    """The provider's HTTP request timeout in seconds (option `requestTimeoutSeconds`)."""
    try:
        return retry_policy_for(driver_config(provider, "")).timeout
    except ProviderError:  # an unreadable option: the driver refuses to build anyway
        return RetryPolicy().timeout


def create_budget(provider: GPUProvider) -> float:
    """Seconds a driver create may take in all before it is abandoned (`create_within`)."""
    return CREATE_TIMEOUTS * request_timeout(provider)


def creates_quiet(
    ctx: Ctx, provider: GPUProvider, secret: Mapping[str, Any] | None
) -> datetime.datetime | None:
    """The moment after which no create of the current attempt, sent by any process,
    can still be at work at the cloud, from what the API server holds: the bound
    (`persisted_bound`) + `BOUND_SLACK` + `CLOCK_GRAIN` + the create budget (the
    argument is in the module docstring, point 5). None when it cannot be known: no
    token Secret, a token made by a version that did not keep the bound (no
    `BOUND_MARK`), or a `creates-from` of this attempt that cannot be read."""
    if secret is None:
        return None
    marks: Mapping[str, Any] = (secret.get("metadata") or {}).get("annotations") or {}
    if BOUND_MARK not in marks:
        return None
    annotations: Mapping[str, Any] = ctx.obj.get("metadata", {}).get("annotations") or {}
    attempt, _, moment = str(annotations.get(CREATES_FROM) or "").partition(" ")
    if attempt == str(ctx.status.attempt) and _time(moment) is None:
        return None  # this attempt's bound, unreadable: an earlier one would be unsafe
    budget = datetime.timedelta(seconds=create_budget(provider))
    return persisted_bound(ctx, secret) + BOUND_SLACK + CLOCK_GRAIN + budget


def uncertain_since(ctx: Ctx, quiet: datetime.datetime | None = None) -> datetime.datetime | None:
    """Since when the current attempt may have a machine nobody recorded (see
    `LaunchMemory`); None when it certainly has none beyond what status says. An
    attempt met for the first time is uncertain since `quiet` (`creates_quiet`: every
    create of it had ended by then) or since now, whichever is earlier: an attempt
    whose last create is long past is settled by one look-up that finds nothing."""
    memory, key = ctx.services.launches, attempt_key(ctx)
    if key in memory.uncertain:
        return memory.uncertain[key]
    if key in memory.settled:
        return None
    since = ctx.now if quiet is None else min(ctx.now, quiet)
    memory.doubt(key, since)
    return since


def settle_wait(ctx: Ctx, since: datetime.datetime | None) -> float:
    """Seconds still to wait before an attempt uncertain since `since` may be taken to
    have no machine (look-ups by name found none for `launch_settle`); 0: done."""
    if since is None:
        return 0.0
    return max(0.0, (since + ctx.settings.launch_settle - ctx.now).total_seconds())


def recheck_interval(ctx: Ctx) -> float:
    """Seconds between look-ups while an attempt is uncertain: five per `launch_settle`,
    no more often than `joining_poll` (each is a list call, within the cloud's limits)."""
    return max(ctx.settings.joining_poll, ctx.settings.launch_settle.total_seconds() / 5)


def answer_failed(ctx: Ctx) -> datetime.datetime:
    """When a create's answer failed: now, rounded up (the clock reads whole seconds)."""
    return max(ctx.now, ctx.services.clock() + CLOCK_GRAIN)
