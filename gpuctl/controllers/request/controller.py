"""The GPUNodeRequest lifecycle controller (Karpenter's nodeclaim/lifecycle, in our terms).

One reconcile:
1. a request being deleted goes to `termination` (and, once everything at the cloud
   is gone, loses its finalizer);
2. otherwise the finalizer `gpuctl.io/instance` is added FIRST — nothing is launched
   for a request that could be deleted without us noticing — and the reconcile goes
   on with the object the patch returned;
3. the steps run in order — `offer`, `launch`, `liveness`, `registration`,
   `initialization`, `nodehealth`, `lifetime` — each a small idempotent sub-reconciler that acts
   only when the status says it is its turn; a step that made a decision the next
   must not act on before it is persisted calls `ctx.stop()`: the status is written,
   and the steps run again at once on the object the write returned (at most
   `CHAINED_RUNS` runs per reconcile: offer chosen, launched, first poll), rather than
   after a trip through the work queue;
4. cost is brought up to date when the status is written anyway (a phase change, or
   any other change), never on a timer: a write that would change nothing but the
   cost figure does not happen. Whoever shows cost (`gpuctl cost`, the dashboard, the
   ledger, `gpuctl_accrued_cost_usd`) adds price x (now - `cost.updatedAt`) while a
   machine is recorded, so the figure is current without it. The status is written
   once, only if it changed, with optimistic concurrency -- except news about a booting
   machine (seen running, its Node registered, waiting for its GPUs), which is held
   back for at most `status_coalesce` to go out with the next write, Ready as a rule
   (`coalesce`: never a write money safety needs, never one with an Event);
5. Events queued by the steps are recorded only after that write: one per transition
   that matters (a phase change no step explained gets a `PhaseChanged` Event, except
   new -> Pending, Provisioning -> Joining and -> Ready, which the status tells). The
   way up has one Event, `Launched` (the money decision: cloud, instance, type,
   region, price); Ready is the phase, the Ready condition and `readyAt`.
A reconcile whose cached request is older than our own last status write of it does
nothing: the watch brings the newer one (and the next reconcile) shortly. Nor does one
whose cached request is the very copy whose finalizer this process released: that copy
is gone from the API server, and its DELETED event is on its way (the Node the teardown
deleted wakes the request once more before that event comes: without this, a quarter
of the teardowns of a 100-request run deleted the Node and the token again, read the
token and patched the finalizer again, all to 404s).
Results are merged (the soonest requeue wins). Provider and API errors are turned
into a status message and an Event, then re-raised so the work queue backs off.
A provider's rate limit is not an error: the reconcile runs in `ratelimit.nonblocking`,
so a call whose token is not there soon raises `RateLimitedError` before anything is
sent; the status so far is written and the key requeued for the token's time, without
an Event or back-off (and without holding a worker while waiting).
"""

from __future__ import annotations

import logging
from typing import Any

import attrs
from cachetools import LRUCache

from gpuctl.api import FINALIZER, GPUNodeRequest, GPUNodeRequestStatus, ObjectError, Phase
from gpuctl.controllers import cost
from gpuctl.controllers.drivers import ProviderUnavailableError
from gpuctl.controllers.request import (
    coalesce,
    initialization,
    launch,
    lifetime,
    liveness,
    nodehealth,
    offer,
    registration,
    settle,
    termination,
)
from gpuctl.controllers.request.context import NOW, Ctx, Services
from gpuctl.controllers.resources import GPUNODEREQUESTS
from gpuctl.providers.base import ProviderError, RateLimitedError
from gpuctl.providers.ratelimit import nonblocking
from gpuctl.runtime.client import ApiError, is_conflict, is_not_found
from gpuctl.runtime.reconcile import Result, TerminalError, merge_results
from gpuctl.runtime.status import StatusWriter
from gpuctl.runtime.store import Store
from gpuctl.util.crashpoints import crash_point

log = logging.getLogger(__name__)

# Requests whose finalizer this process released, remembered by key (LRU): a cached copy
# with the released resourceVersion is stale (the object is gone or changed since).
REMEMBERED_RELEASES = 4096

STEPS = (
    offer.reconcile,
    launch.reconcile,
    liveness.reconcile,
    registration.reconcile,
    initialization.reconcile,
    nodehealth.reconcile,
    lifetime.reconcile,
)


# Runs of the steps one reconcile chains when a step stops to persist a decision and
# asks to go on at once: offer chosen -> launched -> first poll of the machine.
CHAINED_RUNS = 3


# Phase changes the status alone tells well enough: a new request's first phase, the
# machine being up while its Node joins (the Registered condition dates it), and the
# machine Ready (the way up's one Event is `Launched`: the Ready condition dates Ready,
# `readyAt` and the message say how long after the launch it took).
_QUIET = {
    (None, Phase.PENDING),
    (Phase.PROVISIONING, Phase.JOINING),
    (Phase.PROVISIONING, Phase.READY),
    (Phase.JOINING, Phase.READY),
}


def _unexplained(before: Phase | None, after: Phase | None) -> bool:
    """A phase change that deserves its own `PhaseChanged` Event."""
    return before != after and (before or None, after) not in _QUIET


class RequestReconciler:
    def __init__(self, requests: Store, services: Services, status: StatusWriter) -> None:
        self.requests = requests
        self.services = services
        self.status_writer = status
        # key -> resourceVersion of the copy whose finalizer this process released
        self._released: LRUCache[str, str] = LRUCache(REMEMBERED_RELEASES)
        # key -> a status held back (news about a booting machine: `coalesce`)
        self.holds = coalesce.Holds()

    async def reconcile(self, key: str) -> Result:
        obj = self.requests.get(key)
        if obj is None:
            self.holds.drop(key)
            return Result()  # gone: its finalizer already ran
        if self._released.get(key) == obj["metadata"].get("resourceVersion"):
            return Result()  # released: the API server has moved on, the watch follows
        try:
            request = GPUNodeRequest.from_dict(obj)
        except ObjectError as err:
            raise TerminalError(f"GPUNodeRequest {key}: {err}") from err
        with nonblocking(f"gpunoderequest/{key}"):
            return await self._reconcile(obj, request)

    async def _reconcile(self, obj: dict[str, Any], request: GPUNodeRequest) -> Result:
        if self.status_writer.behind(GPUNODEREQUESTS, obj):
            # The cache has not caught up with our own last status write: acting on it
            # would redo what that write recorded and meet a 409. The write's watch
            # event is on its way and brings the request back.
            return Result()
        if request.metadata.deletion_timestamp is None and FINALIZER not in (
            request.metadata.finalizers
        ):
            # Go on with what the patch returned: the server's current object, so the
            # steps need not wait for the watch to bring it back (one reconcile less).
            obj = await self._add_finalizer(obj, request.name)
            request = GPUNodeRequest.from_dict(obj)
        for _ in range(CHAINED_RUNS):
            ctx = Ctx(
                obj=obj,
                request=request,
                # What this process holds back for it, if the cache has not moved on.
                status=self.holds.start(request.name, obj, request),
                now=self.services.clock(),
                services=self.services,
                # Our own last status write is what the cache holds: as fresh as a quorum read.
                fresh=self.status_writer.written_last(GPUNODEREQUESTS, obj),
            )
            result = await self._run(ctx)
            # A step stopped to have its decision written and asked to go on at once
            # (`ctx.stop()`): go on with the object that write returned, which is what
            # the watch would bring, without a trip through the work queue.
            if not (ctx.stopped and result == NOW and ctx.written is not None):
                break
            obj, request = ctx.written, GPUNodeRequest.from_dict(ctx.written)
        return result

    async def _run(self, ctx: Ctx) -> Result:
        before = ctx.request.status  # as read; ctx.status is the working copy
        error: Exception | None = None
        result = Result()
        try:
            if ctx.request.metadata.deletion_timestamp is not None:
                result, released = await termination.reconcile(ctx)
                if released:
                    self._accrue(ctx, before)
                    try:
                        await termination.release(ctx)
                    except ApiError as err:
                        if not is_conflict(err):
                            raise
                        return Result(requeue_after=0.2)  # stale copy: read again, then release
                    self._released[ctx.name] = ctx.obj["metadata"]["resourceVersion"]
                    self.holds.drop(ctx.name)
                    liveness.forget(ctx)
                    await self._record_events(ctx)
                    return Result()
            else:
                result = await self._steps(ctx)
        except settle.StaleCacheError:
            return Result(requeue_after=0.5)
        except RateLimitedError as err:
            # Not an error: come back when the provider's token is ours (it is reserved).
            log.debug("%s", err, extra={"request": ctx.name})
            result = Result(requeue_after=err.delay)
        except ProviderUnavailableError as err:
            error = err
            self._note(ctx, err.reason, err.message)
        except ProviderError as err:
            error = err
            self._note(ctx, "ProviderError", f"{type(err).__name__}: {err.message}")
        ctx.status.observed_generation = ctx.request.metadata.generation
        if _unexplained(before.phase, ctx.status.phase) and not ctx.pending_events:
            # One Event per transition that matters: a step that moved the phase said why
            # in its own Event (Launched, Ready, Terminating, Interrupted, ...); this is
            # for the rest.
            ctx.event(
                "Normal",
                "PhaseChanged",
                f"{before.phase or 'new'} -> {ctx.status.phase}: {ctx.status.message or ''}",
            )
        held = self.holds.hold(ctx, error=error is not None)
        if held is not None:
            # News about a booting machine only: it goes out with the next write, or on
            # its own when the window ends (come back then).
            return merge_results(result, Result(requeue_after=held))
        # Billed only into a status that is written: a held one is not, and accruing into
        # it rounded the figure (4 places) at every reconcile of the hold instead of once.
        self._accrue(ctx, before)
        crash_point("before-status-write")
        try:
            await self._write(ctx)
            crash_point(f"after-status-write-{ctx.status.phase}")
        except ApiError as err:
            if is_not_found(err):
                return Result()  # deleted meanwhile: nothing left to record
            if not is_conflict(err):
                raise
            # Our copy was stale (the cache lags our own last write): read again soon.
            log.debug("status conflict; requeue", extra={"request": ctx.name})
            return Result(requeue_after=0.2)
        await self._record_events(ctx)
        if error is not None:
            raise error
        return result

    async def _steps(self, ctx: Ctx) -> Result:
        results: list[Result] = []
        for step in STEPS:
            outcome = await step(ctx)
            if outcome is not None:
                results.append(outcome)
            if ctx.stopped:
                break
        return merge_results(*results, self._poll(ctx))

    def _poll(self, ctx: Ctx) -> Result:
        """Come back to watch a machine; a request with none waits for its steps' own delay.

        A Pending request without an offer is re-checked on the offer step's backoff,
        a Failed one only when it changes: polling them would be load for nothing.
        """
        settings = self.services.settings
        if ctx.status.instance is None:
            return Result()
        if ctx.status.phase == Phase.READY:
            return Result(requeue_after=settings.ready_poll)
        return Result(requeue_after=settings.joining_poll)

    def _note(self, ctx: Ctx, reason: str, message: str) -> None:
        ctx.status.message = message
        ctx.event("Warning", reason, message)
        log.warning("%s", message, extra={"request": ctx.name, "reason": reason})

    def _accrue(self, ctx: Ctx, before: GPUNodeRequestStatus) -> None:
        """Bill the time since the last update at the price in force before this reconcile,
        when the status is written anyway: first, at a phase change, or with any other
        change (the figure rides along for free). Nothing else changed: no write just for
        the cost (its readers add the running part themselves)."""
        price = None
        if before.offer is not None and before.instance is not None:
            price = before.offer.price_per_hour
        written_anyway = before.phase != ctx.status.phase or (
            price is not None and ctx.status != before
        )
        if ctx.status.cost is None or written_anyway:
            ctx.status.cost = cost.accrue(ctx.status.cost, price, ctx.now)

    async def _write(self, ctx: Ctx) -> None:
        status = attrs.evolve(ctx.request, status=ctx.status).status_to_dict()
        ctx.written = await self.status_writer.update_status(GPUNODEREQUESTS, ctx.obj, status)
        if ctx.written is not None:
            self.holds.drop(ctx.name)  # what was held went out with it

    async def _record_events(self, ctx: Ctx) -> None:
        for type_, reason, message in ctx.pending_events:
            await self.services.events.record(ctx.obj, type_, reason, message)
            log.info(
                "%s: %s",
                reason,
                message,
                extra={"request": ctx.name, "event": type_, "phase": str(ctx.status.phase)},
            )

    async def _add_finalizer(self, obj: dict[str, Any], name: str) -> dict[str, Any]:
        """Add the finalizer, guarded by resourceVersion so no concurrent change is lost;
        the object as the server now has it."""
        metadata = obj["metadata"]
        patch = {
            "metadata": {
                "finalizers": [*(metadata.get("finalizers") or []), FINALIZER],
                "resourceVersion": metadata["resourceVersion"],
            }
        }
        updated = await self.services.client.patch(GPUNODEREQUESTS, name, patch)
        crash_point("after-finalizer")
        return updated
