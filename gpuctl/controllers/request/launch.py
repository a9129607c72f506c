"""Pending -> Provisioning: launch the recorded offer, exactly once per attempt.

Idempotence, in order:
1. the attempt's bootstrap token Secret has a deterministic name (from the request
   UID and attempt): found again after a crash, never duplicated;
2. the request is read fresh from the API server (a quorum read): a stale cache must
   not launch an attempt the server has already moved past -- unless the cached
   object is exactly what our own last status write returned (`ctx.fresh`);
3. before any create, the attempt's deterministic instance name is looked up
   (`Driver.find_all`) — unless this process created the attempt's token itself and
   has recorded no machine for it since (`LaunchMemory.nothing_there`: a create always
   follows its token, and every create this process sent got an answer or made the
   attempt uncertain), so nothing can exist under the name; whatever exists under it,
   in any state but terminated, is adopted — recorded with its time billed since the
   earliest moment the create that made it can have gone out (`settle.billing_start`)
   — and a second machine under the same name (a twin) is terminated at once, with a
   `DuplicateInstance` Event and `gpuctl_duplicate_instances_total`;
4. a create whose outcome is unknown is looked up once more, then recorded in status as
   `Launched=Unknown` (reason `LaunchOutcomeUnknown`, Event of the same name) before
   anything else happens; no create is sent again for that attempt until look-ups by
   name have found nothing for `Settings.launch_settle` (`settle`, rule 1);
5. an attempt this process did not start itself, with a token but no recorded machine,
   is uncertain too, from when the API server's records say every create of it had
   ended (`settle`, rule 2: the argument);
6. a machine this process recorded in a status write that was lost (a conflict) is
   recorded again from memory (`record_again`), not looked up: a list sent before the
   create does not show it.
So a crash, a lost answer or a lagging list between the cloud's create and the status
write leaves an instance the next reconcile adopts, not a second one.

Failures: capacity, quota, auth and invalid-request errors fail over (the offer is
marked in the capacity cache and a new attempt picks another); transient errors
retry the same attempt with backoff.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from gpuctl.api import (
    ConditionStatus,
    ConditionType,
    GPUProvider,
    InstanceStatus,
    Phase,
    registration_timeout,
    set_condition,
)
from gpuctl.controllers import bootstrap, cost, naming
from gpuctl.controllers.drivers import ProviderUnavailableError
from gpuctl.controllers.metrics import DUPLICATES, LAUNCHES
from gpuctl.controllers.request import settle, tokens
from gpuctl.controllers.request.context import Ctx, to_offer
from gpuctl.controllers.request.nodes import node_labels
from gpuctl.controllers.resources import GPUNODEREQUESTS
from gpuctl.providers.base import (
    AuthError,
    CapacityError,
    Driver,
    Instance,
    InstanceState,
    InvalidRequestError,
    JoinData,
    JoinMethod,
    LaunchOutcomeUnknownError,
    LaunchRequest,
    ProviderError,
    QuotaError,
    RateLimitedError,
)
from gpuctl.providers.ratelimit import INLINE_WAIT, priority
from gpuctl.runtime.client import is_already_exists
from gpuctl.runtime.reconcile import Result
from gpuctl.runtime.resources import SECRETS
from gpuctl.util.crashpoints import crash_point

log = logging.getLogger(__name__)

# Errors that end an attempt (fail over to another offer): metric result, condition reason.
_FAILOVER: tuple[tuple[type[ProviderError], str, str], ...] = (
    (CapacityError, "capacity", "CapacityError"),
    (QuotaError, "quota", "QuotaExceeded"),
    (AuthError, "auth", "AuthFailed"),
    (InvalidRequestError, "invalid", "LaunchRejected"),
)


def failover_kind(err: ProviderError) -> tuple[str, str] | None:
    for kind, result, reason in _FAILOVER:
        if isinstance(err, kind):
            return result, reason
    return None


async def ensure_token(
    ctx: Ctx, provider: GPUProvider
) -> tuple[bootstrap.Token, Mapping[str, Any]]:
    """The attempt's bootstrap token, a new one or the existing Secret's, and its Secret
    as the API server holds it (its metadata carries the attempt's billing bound).

    Create first (the Secret does not exist yet when the attempt is new) and read only
    when the create says it exists, or when this process made it already (a retried
    launch): no GET that answers 404 on every launch, no failed create on a retry."""
    client = ctx.services.client
    uid = ctx.request.metadata.uid or ""
    name = tokens.token_secret_name(uid, ctx.status.attempt)
    made_here = ctx.services.launches.tokens.get(settle.attempt_key(ctx))
    if made_here is not None:
        # A launch retried (rate limited, transient error): this process made the token
        # and kept the create's answer. Only expired tokens are cleaned up, and the token
        # lives the registration timeout past the launch: it is still there.
        return made_here
    if settle.attempt_key(ctx) in ctx.services.launches.settled:
        # This process made the token but no longer holds it: read it (deleted
        # meanwhile: make it again).
        held = await tokens.token_secret(ctx)
        if held is not None:
            return bootstrap.Token.from_secret(held), held
    token = bootstrap.Token(
        tokens.token_id(uid, ctx.status.attempt), bootstrap.Token.generate().secret
    )
    ttl = registration_timeout(ctx.request.spec, provider.spec) + ctx.settings.token_margin
    body = bootstrap.token_secret(
        token, request=ctx.name, attempt=ctx.status.attempt, expires=ctx.now + ttl
    )
    metadata: dict[str, Any] = body["metadata"]  # type: ignore[assignment]
    metadata["annotations"] = {**metadata.get("annotations", {}), tokens.BOUND_MARK: "1"}
    try:
        made = await client.create(SECRETS, body, namespace=bootstrap.TOKEN_NAMESPACE)
    except Exception as err:
        if not is_already_exists(err):
            raise
        # Made by an earlier reconcile or process: its secret is the one to use.
        secret = await client.get(SECRETS, name, namespace=bootstrap.TOKEN_NAMESPACE)
        return bootstrap.Token.from_secret(secret), secret
    # Every create of an attempt comes after its token: none was sent before this one --
    # unless an earlier token of the attempt expired and went (the attempt is older than
    # a token lives, the operator down meanwhile): then a create may have been sent
    # with it, and the attempt is looked up and settled as any uncertain one.
    if (
        ctx.now - settle.attempt_started(ctx) < ttl
        and settle.attempt_key(ctx) not in ctx.services.launches.uncertain
    ):
        ctx.services.launches.settle(settle.attempt_key(ctx))
    ctx.services.launches.tokens[settle.attempt_key(ctx)] = (token, made)
    return token, made


def _template(ctx: Ctx, provider: GPUProvider) -> str | None:
    ref = provider.spec.bootstrap.template_secret_ref
    if ref is None:
        return None
    secret = ctx.services.drivers.secret(ref.namespace, ref.name)
    data: Mapping[str, Any] = secret.get("data") or {}
    if ref.key not in data:
        raise ProviderUnavailableError(
            "TemplateMissing", f"Secret {ref.namespace}/{ref.name} has no key {ref.key!r}"
        )
    return base64.b64decode(data[ref.key]).decode()


def join_params(ctx: Ctx, provider: GPUProvider, token: bootstrap.Token) -> bootstrap.JoinParams:
    spec, boot = ctx.request.spec, provider.spec.bootstrap
    labels = node_labels(ctx)
    taints = tuple(
        f"{t.key}={t.value or ''}:{t.effect.value}" for t in (spec.node.taints if spec.node else [])
    )
    return bootstrap.JoinParams(
        api_server=boot.api_server_endpoint or ctx.settings.join_endpoint,
        token=token,
        ca_cert_hash=boot.ca_cert_hash or ctx.settings.ca_cert_hash,
        node_name=ctx.instance_name,
        labels=labels,
        taints=taints,
        kubernetes_version=boot.kubernetes_version or "",
        extra_args=tuple(boot.extra_args),
    )


def _render(
    ctx: Ctx, provider: GPUProvider, cloud_format: JoinMethod, token: bootstrap.Token
) -> JoinData:
    """The join payload in the form this cloud runs; a bootstrap the cloud cannot run
    makes the provider unusable (a condition and an Event), not a crash loop."""
    try:
        return bootstrap.render(
            bootstrap.Method(provider.spec.bootstrap.method.value),
            join_params(ctx, provider, token),
            _template(ctx, provider),
            cloud_format=cloud_format,
        )
    except ValueError as err:
        raise ProviderUnavailableError("BootstrapUnsupported", str(err)) from err


async def _check_fresh(ctx: Ctx) -> None:
    if ctx.fresh:  # the cached object is what our last status write returned
        return
    fresh = await ctx.services.client.get(GPUNODEREQUESTS, ctx.name)
    if fresh["metadata"].get("resourceVersion") != ctx.obj["metadata"].get("resourceVersion"):
        raise settle.StaleCacheError(ctx.name)


# -- what may exist at the cloud -----------------------------------------------------


def running_price(ctx: Ctx) -> Any:
    before = ctx.request.status  # as read: what was billed up to now
    return before.offer.price_per_hour if before.offer and before.instance else None


def bill_found(ctx: Ctx, instance: Instance, start: datetime.datetime) -> None:
    """Bill the time of a machine found by name that no status recorded: since `start`
    (`billing_start`), at the machine's own price where the cloud reports one. The bill
    lands with the status write of this reconcile (guarded by resourceVersion): a write
    that fails takes the bill with it, and the next reconcile finds and bills the machine
    again. A twin terminated at launch and still listed when the request is torn down is
    billed twice: an over-report, never an under-report."""
    offer = ctx.status.offer
    assert offer is not None
    price = instance.price_per_hour if instance.price_per_hour else offer.price_per_hour
    settled = cost.accrue(ctx.status.cost, running_price(ctx), ctx.now)
    ctx.status.cost = cost.add_interval(settled, price, start, ctx.now)


def record_instance(ctx: Ctx, instance: Instance, start: datetime.datetime | None = None) -> None:
    """Write the machine into status. The offer's price becomes the rate the cloud
    reports charging for it, where it does (RunPod's costPerHr, Paperspace's usageRate):
    the cost ledger bills what the cloud bills. `start`: when its bill starts (found by
    name), else now (the status write that records it starts the bill)."""
    # Remembered even if this write is lost: `record_again` records it from here.
    ctx.services.launches.record_machine(settle.attempt_key(ctx), instance, start or ctx.now)
    # The create's answer (or the list that found it) is this machine's first poll: a
    # poll at once asked a rate-limited cloud again, most often by id (a shared list sent
    # just before the create does not show it).
    ctx.services.last_poll[(ctx.name, instance.id)] = ctx.now
    ctx.status.instance = InstanceStatus(
        id=instance.id,
        name=instance.name,
        state=instance.native_state,
        public_ip=instance.public_ip,
        launched_at=instance.launched_at or ctx.now,
    )
    offer = ctx.status.offer
    if offer is not None and instance.price_per_hour and instance.price_per_hour > 0:
        offer.price_per_hour = instance.price_per_hour
    booting = instance.state in (InstanceState.PENDING, InstanceState.UNKNOWN)
    ctx.status.phase = Phase.PROVISIONING if booting else Phase.JOINING


def record_found(ctx: Ctx, instance: Instance, start: datetime.datetime) -> None:
    """Record a machine found by name (not from a create's answer) and bill its time so
    far; its launch time is the cloud's where reported, else the attempt's start."""
    bill_found(ctx, instance, start)
    record_instance(ctx, instance, start)
    assert ctx.status.instance is not None
    ctx.status.instance.launched_at = instance.launched_at or start
    ctx.services.launches.settle(settle.attempt_key(ctx))  # what the create made is found


def record_again(ctx: Ctx) -> Result | None:
    """Record again the attempt's machine this process recorded in a status write that
    was lost (`LaunchMemory.unwritten`), billed from when that write would have started
    its bill; None when there is none. Dropped once a status read back holds it."""
    memory, key = ctx.services.launches, settle.attempt_key(ctx)
    if ctx.request.status.instance is not None:  # as read: the record reached the server
        memory.unwritten.pop(key, None)
        return None
    unwritten = memory.unwritten.get(key)
    if unwritten is None or ctx.status.instance is not None:
        return None
    instance, start = unwritten
    record_found(ctx, instance, start)
    message = f"{instance.name} ({instance.id}): recorded again (the write recording it was lost)"
    ctx.status.message = message
    ctx.condition(ConditionType.LAUNCHED, True, "Launched", message)
    ctx.event("Normal", "Launched", f"attempt {ctx.status.attempt}: {message}")
    return ctx.stop()


async def terminate_twins(
    ctx: Ctx,
    driver: Driver,
    keep: Instance | None,
    twins: Sequence[Instance],
    start: datetime.datetime,
) -> None:
    """Terminate second machines under the attempt's name at once, billed from `start`
    (`billing_start(ctx, twins=True)`) and reported."""
    offer = ctx.status.offer
    assert offer is not None
    for twin in twins:
        bill_found(ctx, twin, start)
        await driver.terminate(twin.id)
        report_twin(ctx, twin, keep.id if keep is not None else None, "terminated")


def report_twin(ctx: Ctx, twin: Instance, kept: str | None, done: str = "terminating it") -> None:
    """A `DuplicateInstance` Warning and `gpuctl_duplicate_instances_total`."""
    offer = ctx.status.offer
    assert offer is not None
    DUPLICATES.labels(offer.provider).inc()
    keeping = f" besides {kept}" if kept else ""
    message = (
        f"{twin.name} ({twin.id}, {twin.native_state}) is a second machine under attempt "
        f"{ctx.status.attempt}'s name{keeping}: {done}"
    )
    log.warning(message, extra={"request": ctx.name, "instance": twin.name})
    ctx.event("Warning", "DuplicateInstance", message)


async def cleanup(ctx: Ctx, driver: Driver, name: str) -> None:
    """Best effort: what the cloud keeps for a machine that is gone or never came (a
    Paperspace startup script). It costs nothing, so a failure only logs."""
    try:
        await driver.cleanup(name)
    except ProviderError as err:
        log.info("cleanup of %s failed: %s", name, err, extra={"request": ctx.name})


def attempt_providers(ctx: Ctx) -> dict[int, str]:
    """The provider of each attempt status still tells: the current offer's, then one
    failed offer per earlier attempt, newest last (each attempt ends with exactly one)."""
    found: dict[int, str] = {}
    attempt = ctx.status.attempt
    if ctx.status.offer is not None:
        found[attempt] = ctx.status.offer.provider
        attempt -= 1
    for failed in reversed(ctx.status.failed_offers):
        if attempt < 1:
            break
        found[attempt] = failed.provider
        attempt -= 1
    return found


async def cleanup_attempts(ctx: Ctx, attempts: Iterable[int]) -> None:
    """`cleanup` for the machine names of these attempts, each on its own provider (a
    script still assigned to a live machine is kept by the driver)."""
    providers = attempt_providers(ctx)
    uid = ctx.request.metadata.uid or ""
    for attempt in attempts:
        provider = providers.get(attempt)
        if provider is None:
            continue
        try:
            driver = ctx.services.drivers.get(provider)
        except ProviderUnavailableError:
            continue
        name = naming.instance_name(ctx.settings.cluster_name, uid, attempt)
        await cleanup(ctx, driver, name)


async def _adopt(ctx: Ctx, driver: Driver, found: Sequence[Instance], how: str) -> Result:
    offer = ctx.status.offer
    assert offer is not None
    keep, twins = found[0], found[1:]
    start = await settle.billing_start(ctx, twins=bool(twins))
    await terminate_twins(ctx, driver, keep, twins, start)
    record_found(ctx, keep, start)
    LAUNCHES.labels(offer.provider, offer.capacity_type.value, "adopted").inc()
    message = f"{keep.name} ({keep.id}, {keep.native_state}) {how}: adopted"
    ctx.status.message = message
    ctx.condition(ConditionType.LAUNCHED, True, "Adopted", message)
    ctx.event("Normal", "Adopted", message)
    return ctx.stop()


def _outcome_unknown(ctx: Ctx, err: ProviderError) -> Result:
    """Record, before anything else happens, that a create of this attempt went out with
    no answer: status says Launched=Unknown since then, and no create is sent again
    until look-ups by name found nothing for `launch_settle`."""
    window = ctx.settings.launch_settle.total_seconds()
    message = (
        f"attempt {ctx.status.attempt}: the create of {ctx.instance_name} got no answer "
        f"({err.message}); looking it up by name for {window:g}s before any relaunch"
    )
    set_condition(
        ctx.status.conditions,
        ConditionType.LAUNCHED,
        ConditionStatus.UNKNOWN,
        "LaunchOutcomeUnknown",
        message,
        observed_generation=ctx.request.metadata.generation,
        now=ctx.now,
    )
    ctx.status.message = message
    ctx.event("Warning", "LaunchOutcomeUnknown", message)
    ctx.stop()
    return Result(requeue_after=min(window, settle.recheck_interval(ctx)))


async def create_within(driver: Driver, request: LaunchRequest, deadline: float) -> Instance:
    """`driver.create`, abandoned at `deadline` (event-loop time, taken before the bound
    was checked): an abandoned create may have happened (`LaunchOutcomeUnknownError`).
    This is what bounds when a create of the attempt can still be at work at the cloud,
    whatever the driver does before its POST (`creates_quiet`)."""
    try:
        async with asyncio.timeout_at(deadline):
            return await driver.create(request)
    except TimeoutError as err:
        raise LaunchOutcomeUnknownError(
            f"the create of {request.name} did not end in time: abandoned "
            "(the create may have happened)",
            code="timeout",
            provider=request.offer.provider,
        ) from err


async def _after_unknown_outcome(
    ctx: Ctx, driver: Driver, name: str, err: LaunchOutcomeUnknownError
) -> Result:
    # Remembered before anything else can fail (the look-up may be rate limited). The
    # window counts from the failed answer, not from the reconcile's start: a create
    # that hung until its timeout may have made the machine just before it.
    ctx.services.launches.doubt(settle.attempt_key(ctx), settle.answer_failed(ctx))
    try:
        with priority():  # it may be listed already: any list sent since the answer
            found = await driver.find_all(name, since=ctx.services.clock())
    except ProviderError:
        found = []  # looked up again on the settle polls
    if found:
        return await _adopt(ctx, driver, found, "found by name after a create with no answer")
    result = _outcome_unknown(ctx, err)
    crash_point("after-launch-unknown")  # the cloud may have it; status does not know
    return result


async def _create_failed(
    ctx: Ctx, driver: Driver, request: LaunchRequest, err: ProviderError
) -> Result:
    """A create the cloud answered with an error (nothing made): capacity, quota, auth
    and invalid requests fail over to another offer; anything else is raised (retried)."""
    offer = ctx.status.offer
    assert offer is not None
    kind = failover_kind(err)
    LAUNCHES.labels(
        offer.provider, offer.capacity_type.value, kind[0] if kind else "transient"
    ).inc()
    if kind is None:
        raise err  # transient, nothing created: the same attempt again, with backoff
    reason = kind[1]
    ctx.services.capacity.mark(request.offer, reason)
    await cleanup(ctx, driver, request.name)
    message = f"{offer.provider} {offer.instance_type} in {offer.native_region}: {err.message}"
    ctx.condition(ConditionType.LAUNCHED, False, reason, message)
    ctx.event("Warning", reason, f"attempt {ctx.status.attempt}: {message}; failing over")
    ctx.fail_offer(reason, err.message)
    return ctx.stop()


def await_slot(ctx: Ctx) -> None:
    """While the create waits for the rate-limit slot reserved for it, a wake-up (the
    watch event of the request's own write, a Node event) sends nothing: without this,
    each one re-read the request (`_check_fresh`) and re-wrote `creates-from`
    (`persist_bound`), whose watch event woke it again, until the slot came (3.8 patches
    and 3.3 GETs per request in a 1,000-request burst). The reservation stays the
    holder's; the create at the slot's time claims it."""
    slot = ctx.services.launches.slots.get(settle.attempt_key(ctx))
    if slot is None:
        return
    left = slot - time.monotonic()
    if left > INLINE_WAIT:
        raise _waits_for_slot(ctx, left)
    del ctx.services.launches.slots[settle.attempt_key(ctx)]


def _waits_for_slot(ctx: Ctx, seconds: float) -> RateLimitedError:
    """The create waits `seconds` for its slot: the controller requeues for then."""
    return RateLimitedError(
        f"the create of {ctx.instance_name} waits for its rate-limit slot", retry_after=seconds
    )


def remember_slot(ctx: Ctx, err: RateLimitedError) -> None:
    ctx.services.launches.slots[settle.attempt_key(ctx)] = time.monotonic() + err.delay


def slot_first(ctx: Ctx, driver: Driver) -> None:
    """An attempt begun this moment (its offer chosen in this reconcile's chain) takes
    its create's rate-limit slot before it makes its token: the token, made at the slot,
    then dates the attempt's billing bound (`persisted_bound`) within `BOUND_SLACK` of
    the create, and the create writes no `creates-from` (made first, the token was older
    than that whenever the create waited for its slot: 51 patches in 100 launches). Not
    for an older attempt: one an earlier process began may still have to settle, and
    its reserved slot would go unused meanwhile."""
    if settle.attempt_key(ctx) in ctx.services.launches.tokens:
        return
    if ctx.now - settle.attempt_started(ctx) > settle.BOUND_SLACK:
        return
    with priority():  # the slot the create would take: it claims this reservation
        wait = driver.launch_slot()
    if wait > INLINE_WAIT:
        err = _waits_for_slot(ctx, wait)
        remember_slot(ctx, err)
        raise err


async def reconcile(ctx: Ctx) -> Result | None:
    offer = ctx.status.offer
    if offer is None:
        return None
    again = record_again(ctx)
    if again is not None:
        return again  # no look-up: one sent before the create would not list it
    if ctx.status.instance is not None:
        return None
    await_slot(ctx)
    provider = ctx.services.drivers.provider(offer.provider)
    driver = ctx.services.drivers.get(offer.provider)
    slot_first(ctx, driver)
    token, secret = await ensure_token(ctx, provider)
    join = _render(ctx, provider, driver.capabilities.join_method, token)
    await _check_fresh(ctx)
    request = LaunchRequest(
        name=ctx.instance_name,
        offer=to_offer(offer),
        join=join,
        tags={"gpuctl-cluster": ctx.settings.cluster_name, "gpuctl-request": ctx.name},
    )
    labels = (offer.provider, offer.capacity_type.value)
    # A look-up lists the provider's machines (a cost that grows with them): skipped when
    # nothing can be there, as in the first launch of an attempt this process began.
    nothing = ctx.services.launches.nothing_there(settle.attempt_key(ctx))
    # The look-ups and the create of a launch take the earliest rate-limit slot
    # reserved by others (`ratelimit.priority`): a request waits on them, not on polls
    # and teardowns queued at a rate-limited cloud. The look may be served by a list
    # of the provider's machines shared with other callers (`providers.snapshot`), but
    # only by one sent at or after this reconcile began: the settle rule below counts
    # this look as made at `ctx.now` or later.
    with priority():
        found = [] if nothing else await driver.find_all(request.name, since=ctx.now)
    if found:
        return await _adopt(ctx, driver, found, "found by name")
    since = settle.uncertain_since(ctx, settle.creates_quiet(ctx, provider, secret))
    wait = settle.settle_wait(ctx, since)
    if since is not None and wait > 0:
        until = since + ctx.settings.launch_settle
        ctx.status.message = (
            f"attempt {ctx.status.attempt}: a create of {request.name} may have happened; "
            f"looking it up by name until {until:%H:%M:%S}Z before launching again"
        )
        return Result(requeue_after=min(wait, settle.recheck_interval(ctx)))
    ctx.services.launches.settle(settle.attempt_key(ctx))  # listed long enough: nothing exists
    if ctx.status.attempt > 1:  # the last attempt's machine is gone, or going: its leftovers
        await cleanup_attempts(ctx, [ctx.status.attempt - 1])
    deadline = asyncio.get_running_loop().time() + settle.create_budget(
        provider
    )  # before the check
    await settle.persist_bound(ctx, secret)
    crash_point("before-launch")
    try:
        with priority():
            instance = await create_within(driver, request, deadline)
        crash_point("after-launch")
    except LaunchOutcomeUnknownError as err:
        LAUNCHES.labels(*labels, "unknown").inc()
        return await _after_unknown_outcome(ctx, driver, request.name, err)
    except RateLimitedError as err:
        remember_slot(ctx, err)
        raise  # nothing was sent: the controller requeues for the token
    except ProviderError as err:
        return await _create_failed(ctx, driver, request, err)
    LAUNCHES.labels(*labels, "success").inc()
    record_instance(ctx, instance)
    message = (
        f"{instance.name} ({instance.id}) on {offer.provider} {offer.instance_type} "
        f"in {offer.native_region}, {offer.capacity_type.value} at ${offer.price_per_hour:.2f}/h"
    )
    ctx.status.message = f"launched {message}"
    ctx.condition(ConditionType.LAUNCHED, True, "Launched", message)
    # The offer's one Event: what was chosen shows here (and in OfferAvailable).
    ctx.event("Normal", "Launched", f"attempt {ctx.status.attempt}: {message}")
    return ctx.stop()
