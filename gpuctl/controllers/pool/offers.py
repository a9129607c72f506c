"""The machines a pool may buy: every offer its requirements allow, ranked as a GNR ranks.

`gather` asks every GPUProvider for its whole catalog once per provisioning round
(served from each driver's price cache); a provider that cannot answer is skipped
and named. `candidates(pool, offers, blocked)` keeps the offers the pool allows and
ranks them with `selection.select`, the code path of the offer step and `gpuctl plan`:
offers are grouped by shape (GPU type, count, capacity type) and each group goes
through `select` with the pool's price cap, so availability, the capacity-error cache
and the tie-breaks (on-demand before spot at the same price, then provider, region)
are exactly the controller's.

A candidate carries the Node labels its machine would register with, which is what
pool requirements and pods' node selectors are matched against. Without a
`gpuctl.io/capacity-type` requirement a pool buys on-demand only (spot must be asked for).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Protocol

import attrs

from gpuctl.api import (
    LABEL_CAPACITY_TYPE,
    LABEL_GPU_COUNT,
    LABEL_GPU_TYPE,
    LABEL_INSTANCE_TYPE,
    LABEL_POOL,
    LABEL_PROVIDER,
    LABEL_REGION,
    LABEL_TOPOLOGY_REGION,
    GPUNodePool,
)
from gpuctl.controllers.drivers import ProviderUnavailableError
from gpuctl.controllers.pool.requirements import unmet
from gpuctl.controllers.request.nodes import label_value
from gpuctl.controllers.selection import CapacityPolicy, Want, select
from gpuctl.providers import catalog
from gpuctl.providers.base import Driver, Offer, ProviderError

# Every kubelet labels its Node with these; Grace Hopper (GH200) machines are arm64.
LABEL_OS = "kubernetes.io/os"
LABEL_ARCH = "kubernetes.io/arch"
ON_DEMAND_ONLY: dict[str, object] = {
    "key": LABEL_CAPACITY_TYPE,
    "operator": "In",
    "values": ["on-demand"],
}


class Drivers(Protocol):
    def names(self) -> list[str]: ...

    def get(self, name: str) -> Driver: ...


@attrs.frozen
class Candidate:
    offer: Offer
    labels: dict[str, str]  # the Node labels of a machine of this offer, in this pool

    @property
    def gpus(self) -> int:
        return self.offer.gpu_count

    @property
    def price(self) -> Decimal:
        return self.offer.price_per_hour

    def describe(self) -> str:
        o = self.offer
        return (
            f"{o.gpu_type} x{o.gpu_count} {o.capacity_type.value} on {o.provider} "
            f"({o.instance_type}, {o.native_region}) at ${o.price_per_hour}/h"
        )


def offer_labels(offer: Offer) -> dict[str, str]:
    """What gpuctl labels a machine of this offer with (request/nodes.py sets the same)."""
    return {
        LABEL_GPU_TYPE: offer.gpu_type,
        LABEL_GPU_COUNT: str(offer.gpu_count),
        LABEL_CAPACITY_TYPE: offer.capacity_type.value,
        LABEL_PROVIDER: offer.provider,
        LABEL_REGION: offer.region,
        LABEL_INSTANCE_TYPE: label_value(offer.instance_type),
        LABEL_TOPOLOGY_REGION: label_value(offer.native_region),
    }


def machine_labels(pool: GPUNodePool, offer: Offer) -> dict[str, str]:
    arch = "arm64" if offer.gpu_type.startswith("GH") else "amd64"
    return {
        **pool.spec.template.labels,
        **offer_labels(offer),
        LABEL_POOL: pool.name,
        LABEL_OS: "linux",
        LABEL_ARCH: arch,
    }


async def gather(drivers: Drivers) -> tuple[list[Offer], list[str]]:
    """Every provider's offers, and "<provider>: <why>" for each that could not answer."""

    async def one(name: str) -> list[Offer] | str:
        try:
            return await drivers.get(name).list_offers()
        except ProviderUnavailableError as err:
            return f"{name}: {err.message}"
        except ProviderError as err:  # rate limited, outage, auth: this round goes without it
            return f"{name}: {type(err).__name__}: {err.message}"

    offers: list[Offer] = []
    notes: list[str] = []
    for answer in await asyncio.gather(*(one(n) for n in drivers.names())):
        if isinstance(answer, str):
            notes.append(answer)
        else:
            offers.extend(answer)
    return offers, notes


def requirements_of(pool: GPUNodePool) -> list[dict[str, object]]:
    found: list[dict[str, object]] = [
        {"key": r.key.value, "operator": r.operator.value, "values": list(r.values)}
        for r in pool.spec.template.requirements
    ]
    if not any(r["key"] == LABEL_CAPACITY_TYPE for r in found):
        found.append(ON_DEMAND_ONLY)
    return found


def _memory_ok(pool: GPUNodePool, offer: Offer) -> bool:
    least = pool.spec.template.min_gpu_memory_gib
    if least is None:
        return True
    known = catalog.gpu_memory_gib(offer.gpu_type)
    return known is not None and known >= least


def candidates(
    pool: GPUNodePool, offers: Iterable[Offer], blocked: Callable[[Offer], bool]
) -> list[Candidate]:
    """The pool's candidate machines, cheapest first (ties as the offer step breaks them)."""
    requirements = requirements_of(pool)
    groups: dict[tuple[str, int, str], list[Offer]] = {}
    for offer in offers:
        if _memory_ok(pool, offer) and unmet(requirements, machine_labels(pool, offer)) is None:
            shape = (offer.gpu_type, offer.gpu_count, offer.capacity_type.value)
            groups.setdefault(shape, []).append(offer)
    ranked: list[tuple[int, Offer]] = []
    for (gpu_type, count, capacity), group in groups.items():
        want = Want(
            gpu_type=gpu_type,
            gpu_count=count,
            capacity=CapacityPolicy(capacity),
            max_price=pool.spec.template.max_price_per_hour,
        )
        ranked += enumerate(select(want, group, blocked).ranked)
    # Cheapest first; within a shape keep select's order (its tie-breaks).
    ranked.sort(key=lambda r: (r[1].price_per_hour, r[1].gpu_count, r[0]))
    return [Candidate(offer, machine_labels(pool, offer)) for _, offer in ranked]
