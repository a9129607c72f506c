"""Pending: choose an offer and record it in status BEFORE anything is launched.

Runs when the request has no current offer (new, failed over, interrupted). It asks
every allowed provider for offers of the GPU type and count (concurrently; a
provider that cannot answer is skipped and named in the message), lets
`selection.select` rank them, and records the winner with a new attempt number.
The controller writes that status before the launch step may run, so a crash
after this point relaunches nothing new: the launch step finds the attempt's
instance by its deterministic name.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from gpuctl.api import ConditionType, GPUNodeRequest, Phase
from gpuctl.controllers.drivers import ProviderUnavailableError
from gpuctl.controllers.request.context import Ctx, from_offer
from gpuctl.controllers.selection import CapacityPolicy, Placement, Selection, Want, select
from gpuctl.providers import catalog
from gpuctl.providers.base import Driver, Offer, ProviderError, RateLimitedError
from gpuctl.runtime.reconcile import Result

NO_OFFER_MIN_DELAY = 10.0
NO_OFFER_MAX_DELAY = 300.0


class Drivers(Protocol):
    """Where offers come from: the operator's `DriverPool`, or `gpuctl plan`'s providers."""

    def names(self) -> list[str]: ...

    def get(self, name: str) -> Driver: ...


def want_of(request: GPUNodeRequest) -> Want:
    spec = request.spec
    return Want(
        gpu_type=spec.gpu.type,
        gpu_count=spec.gpu.count,
        capacity=CapacityPolicy(spec.capacity_type.value),
        max_price=spec.max_price_per_hour,
        providers=tuple(spec.providers),
        regions=tuple(r.value for r in spec.regions),
        placement=Placement(spec.placement.value),
    )


async def gather_offers(drivers: Drivers, want: Want) -> tuple[list[Offer], list[str]]:
    """Offers of every allowed provider, and a note for each provider that could not answer."""
    names = list(want.providers) or drivers.names()

    async def one(name: str) -> list[Offer] | str:
        try:
            driver = drivers.get(name)
            return await driver.list_offers(gpu_type=want.gpu_type, gpu_count=want.gpu_count)
        except ProviderUnavailableError as err:
            return f"{name}: {err.message}"
        except RateLimitedError:
            raise  # choose once every allowed provider answered: requeued for the token
        except ProviderError as err:
            return f"{name}: {type(err).__name__}: {err.message}"

    offers: list[Offer] = []
    notes: list[str] = []
    for answer in await asyncio.gather(*(one(n) for n in names)):
        if isinstance(answer, str):
            notes.append(answer)
        else:
            offers.extend(answer)
    return offers, notes


def unknown_gpu_type(request: GPUNodeRequest) -> str | None:
    """Why the request's GPU type cannot be served (not in the catalog), or None."""
    gpu = request.spec.gpu.type
    if gpu in catalog.gpu_types():
        return None
    return f"unknown GPU type {gpu!r}; known: {', '.join(catalog.gpu_types())}"


async def choose(
    request: GPUNodeRequest, drivers: Drivers, blocked: Callable[[Offer], bool]
) -> tuple[Selection, list[str]]:
    """The selection for `request` and the notes of providers that could not answer.

    The one code path from a request to its offer: the step below and `gpuctl plan`
    both call it, so what plan shows is what the controller does.
    """
    want = want_of(request)
    offers, notes = await gather_offers(drivers, want)
    selection = select(want, offers, blocked)
    if notes and selection.chosen is None:
        selection = Selection(
            selection.ranked,
            selection.rejected,
            selection.message + "; unavailable: " + "; ".join(notes),
        )
    return selection, notes


def _no_offer_delay(ctx: Ctx) -> float:
    """Back off while nothing fits: half the time spent waiting so far, 10 s to 5 min."""
    since = ctx.now
    for condition in ctx.status.conditions:
        if condition.type == ConditionType.OFFER_AVAILABLE and condition.reason == "NoOffer":
            since = condition.last_transition_time
    waited = (ctx.now - since).total_seconds()
    return min(NO_OFFER_MAX_DELAY, max(NO_OFFER_MIN_DELAY, waited / 2))


def _fail(ctx: Ctx, reason: str, message: str) -> Result:
    ctx.status.phase = Phase.FAILED
    ctx.status.message = message
    ctx.condition(ConditionType.READY, False, reason, message)
    ctx.event("Warning", reason, message)
    return Result()


async def reconcile(ctx: Ctx) -> Result | None:
    if ctx.status.offer is not None or ctx.status.phase == Phase.FAILED:
        return None
    unknown = unknown_gpu_type(ctx.request)
    if unknown is not None:
        return _fail(ctx, "UnknownGPUType", unknown)
    selection, _ = await choose(ctx.request, ctx.services.drivers, ctx.services.capacity.blocked)
    chosen = selection.chosen
    if chosen is None:
        ctx.status.phase = Phase.PENDING
        ctx.status.message = selection.message
        ctx.condition(ConditionType.OFFER_AVAILABLE, False, "NoOffer", selection.message)
        ctx.event("Warning", "NoOffer", selection.message)  # repeats aggregate into one Event
        return Result(requeue_after=_no_offer_delay(ctx))
    ctx.status.attempt += 1
    ctx.status.offer = from_offer(chosen)
    ctx.status.instance = None
    ctx.status.node_name = None
    ctx.status.phase = Phase.PENDING
    ctx.status.message = f"launching {selection.message}"
    ctx.condition(ConditionType.OFFER_AVAILABLE, True, "OfferSelected", selection.message)
    ctx.condition(ConditionType.LAUNCHED, False, "Launching", f"attempt {ctx.status.attempt}")
    # No Event of its own: the choice is in the OfferAvailable condition, and the
    # attempt's Launched (or failover) Event names the offer (one Event per transition).
    return ctx.stop()
