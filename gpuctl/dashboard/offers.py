"""The Offers page: what `gpuctl plan` would choose for a GPU type, count and capacity type.

`plan(...)` builds the GPUNodeRequest the form describes and runs
`gpuctl.controllers.planning.plan_one` — the function `gpuctl plan` runs, which calls
the offer step's own `choose` — with the same providers (the operator's
`DriverPool`) and the capacity cache rebuilt from the requests' recorded failures
(`capacity_from`, as `gpuctl plan` does). So the ranking, the chosen offer and every
rejection reason are the controller's. "What would it cost": the chosen offer's
$/h times the hours typed in.

`catalog(...)` lists every offer of every provider (from the drivers' price caches:
one catalog fetch per TTL however many viewers), cheapest first as `gpuctl offers`
sorts, with the providers that could not answer.
"""

from __future__ import annotations

import asyncio
import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from gpuctl.api import GPUNodeRequest, ObjectError
from gpuctl.controllers.drivers import ProviderUnavailableError
from gpuctl.controllers.planning import capacity_from, plan_one
from gpuctl.controllers.request.offer import Drivers
from gpuctl.dashboard.fmt import price, usd
from gpuctl.providers import catalog as gpu_catalog
from gpuctl.providers.base import CapacityType, Offer, ProviderError
from gpuctl.providers.capacity import DEFAULT_TTL_SECONDS

JSON = dict[str, Any]
CAPACITY_TYPES = ("on-demand", "spot", "spot-or-on-demand")
MAX_HOURS = Decimal(24 * 366)
PROVIDER_TIMEOUT = 20.0


class FormError(ValueError):
    """The form's values do not make a valid request."""


def offer_json(offer: Offer) -> JSON:
    return {
        "provider": offer.provider,
        "cloud": offer.cloud,
        "region": offer.region,
        "nativeRegion": offer.native_region,
        "gpuType": offer.gpu_type,
        "gpuCount": offer.gpu_count,
        "instanceType": offer.instance_type,
        "capacityType": offer.capacity_type.value,
        "pricePerHour": price(offer.price_per_hour),
        "available": offer.available,
    }


def form_request(gpu: str, count: str, capacity: str) -> GPUNodeRequest:
    """The GPUNodeRequest the form describes; FormError naming the bad field."""
    if capacity not in CAPACITY_TYPES:
        raise FormError(f"capacity: one of {', '.join(CAPACITY_TYPES)}")
    try:
        gpus = int(count)
    except ValueError:
        raise FormError("count: a whole number of GPUs") from None
    body = {
        "apiVersion": "gpuctl.io/v1alpha1",
        "kind": "GPUNodeRequest",
        "metadata": {"name": "what-if"},
        "spec": {"gpu": {"type": gpu, "count": gpus}, "capacityType": capacity},
    }
    try:
        return GPUNodeRequest.from_dict(body)
    except ObjectError as err:
        raise FormError(str(err)) from err


def parse_hours(text: str) -> Decimal:
    try:
        hours = Decimal(text or "1")
    except InvalidOperation:
        raise FormError("hours: a number") from None
    if not hours.is_finite() or hours < 0 or hours > MAX_HOURS:
        raise FormError(f"hours: between 0 and {MAX_HOURS}")
    return hours


async def plan(
    request: GPUNodeRequest,
    hours: Decimal,
    drivers: Drivers,
    requests: list[JSON],
    now: datetime.datetime,
) -> JSON:
    capacity = capacity_from(requests, DEFAULT_TTL_SECONDS, now)
    result = await plan_one(request, drivers, capacity)
    chosen = result.selection.chosen
    return {
        "want": result.want.describe(),
        "hours": str(hours),
        "chosen": offer_json(chosen) if chosen is not None else None,
        "costUSD": usd(chosen.price_per_hour * hours) if chosen is not None else None,
        "message": result.selection.message,
        "ranked": [
            {**offer_json(o), "rank": n, "costUSD": usd(o.price_per_hour * hours)}
            for n, o in enumerate(result.selection.ranked, 1)
        ],
        "rejected": [
            {**offer_json(r.offer), "reason": r.reason} for r in result.selection.rejected
        ],
        "unavailable": [{"provider": p, "message": m} for p, m in result.unavailable],
        "blocked": [
            {
                "provider": e.provider,
                "nativeRegion": e.native_region,
                "gpuType": e.gpu_type,
                "capacityType": e.capacity_type,
                "reason": e.reason,
            }
            for e in result.blocked
        ],
    }


async def catalog(drivers: Drivers) -> JSON:
    """Every provider's offers, cheapest first, and the providers that failed."""

    async def one(name: str) -> list[Offer] | JSON:
        try:
            listing = drivers.get(name).list_offers()
            return await asyncio.wait_for(listing, PROVIDER_TIMEOUT)
        except ProviderUnavailableError as err:
            return {"provider": name, "reason": err.reason, "message": err.message}
        except ProviderError as err:
            return {"provider": name, "reason": type(err).__name__, "message": err.message}
        except TimeoutError:
            return {"provider": name, "reason": "Timeout", "message": "no answer in time"}

    offers: list[Offer] = []
    failures: list[JSON] = []
    for answer in await asyncio.gather(*(one(n) for n in drivers.names())):
        if isinstance(answer, dict):
            failures.append(answer)
        else:
            offers.extend(answer)
    offers.sort(
        key=lambda o: (
            o.price_per_hour,
            o.capacity_type is CapacityType.SPOT,
            o.provider,
            o.region,
            o.native_region,
            o.instance_type,
            o.gpu_count,
        )
    )
    return {
        "gpuTypes": gpu_catalog.gpu_types(),
        "offers": [offer_json(o) for o in offers],
        "unavailable": failures,
    }
