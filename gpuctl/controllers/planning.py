"""What the controller would choose for a request, without launching: `gpuctl plan`'s core.

Shared by `gpuctl plan` and the dashboard's Offers page so both rank exactly as the
offer step does: `offer.unknown_gpu_type`, then `offer.choose` — the function the
offer step calls — with a capacity cache rebuilt from what the cluster records.

The capacity cache: the operator keeps it in memory, so it is rebuilt here from the
failures each request keeps in `status.failedOffers` (the operator marks an offer
exactly when it fails over from it; an on-demand interruption is not marked): every
such failure younger than the TTL, marked at the time it happened, keyed like
`Offer.key` by (provider, native region, the request's GPU type, capacity type).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import attrs

from gpuctl.api import CapacityType, GPUNodeRequest, ObjectError
from gpuctl.controllers.request.offer import Drivers, choose, unknown_gpu_type, want_of
from gpuctl.controllers.selection import Selection, Want
from gpuctl.providers import base
from gpuctl.providers.capacity import CapacityCache, CapacityEntry

JSON = dict[str, Any]


@attrs.frozen
class Plan:
    request: GPUNodeRequest
    want: Want
    selection: Selection
    unavailable: tuple[tuple[str, str], ...]  # (provider, why)
    blocked: tuple[CapacityEntry, ...]  # the capacity cache plan used


def capacity_from(requests: Iterable[JSON], ttl: float, now: datetime.datetime) -> CapacityCache:
    """The operator's capacity cache as its recorded failures imply (module docstring)."""
    marks: list[tuple[datetime.datetime, base.Offer, str]] = []
    for obj in requests:
        try:
            request = GPUNodeRequest.from_dict(obj)
        except ObjectError:
            continue  # the controller skips it too
        for failed in request.status.failed_offers:
            if failed.capacity_type is None or failed.region is None:
                continue
            if failed.reason == "Interrupted" and failed.capacity_type != CapacityType.SPOT:
                continue
            at = min(failed.at, now)
            if (now - at).total_seconds() >= ttl:
                continue
            offer = base.Offer(
                provider=failed.provider,
                cloud="",
                region="",
                native_region=failed.region,
                gpu_type=request.spec.gpu.type,
                gpu_count=request.spec.gpu.count,
                instance_type=failed.instance_type or "",
                capacity_type=base.CapacityType(failed.capacity_type.value),
                price_per_hour=Decimal(0),
            )
            marks.append((at, offer, failed.reason))
    clock = [now.timestamp()]
    cache = CapacityCache(ttl, timer=lambda: clock[0])
    for at, offer, reason in sorted(marks, key=lambda m: m[0]):
        clock[0] = at.timestamp()  # marked when it happened: expires ttl after that
        cache.mark(offer, reason)
    clock[0] = now.timestamp()
    return cache


def _split_note(note: str) -> tuple[str, str]:
    """gather_offers' notes read "<provider>: <why>"."""
    provider, _, why = note.partition(": ")
    return provider, why


async def plan_one(request: GPUNodeRequest, drivers: Drivers, capacity: CapacityCache) -> Plan:
    want = want_of(request)
    unknown = unknown_gpu_type(request)
    if unknown is not None:  # the offer step fails such a request before asking anyone
        return Plan(request, want, Selection((), (), unknown), (), ())
    selection, notes = await choose(request, drivers, capacity.blocked)
    unavailable = tuple(_split_note(n) for n in notes)
    return Plan(request, want, selection, unavailable, tuple(capacity.entries()))
