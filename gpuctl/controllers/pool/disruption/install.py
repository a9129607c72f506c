"""Disruption on a built operator: its caches, client and Event recorder, two controllers.

`install(operator, settings)` runs at the end of `Operator._build`: it reuses the
operator's informers (GPUNodePools and Pods are the provisioner's; PodDisruptionBudgets
are added here if nobody watches them yet), builds the catalog-backed replacement
finder on the operator's drivers and capacity cache, and adds the disruption and drain
controllers to the manager (they run on the leader only, as every controller).
"""

from __future__ import annotations

import datetime
from typing import Any

from gpuctl.api import GPUNodePool
from gpuctl.controllers.pool import offers
from gpuctl.controllers.pool.disruption import planned
from gpuctl.controllers.pool.disruption.drain import PDBS
from gpuctl.controllers.pool.disruption.replacement import Finder
from gpuctl.controllers.pool.disruption.settings import DisruptionSettings
from gpuctl.controllers.pool.disruption.wiring import Sources, controllers
from gpuctl.controllers.resources import GPUNODEPOOLS
from gpuctl.runtime.informer import Informer, drop_managed_fields
from gpuctl.runtime.resources import PODS, Resource

Obj = dict[str, Any]


def wall_clock() -> datetime.datetime:
    """Disruption's clock, to the microsecond: the request controller's clock reads whole
    seconds (status timestamps), and a last pod event and a `now` both cut to the second
    let `consolidateAfter` run out up to a second early."""
    return datetime.datetime.now(datetime.UTC)


def install(operator: Any, settings: DisruptionSettings) -> None:
    """`operator`: a built gpuctl Operator (manager, informers, services)."""
    manager, informers, services = operator.manager, operator.informers, operator.services

    def informer(name: str, resource: Resource) -> Informer:
        if name not in informers:
            informers[name] = Informer(
                services.client, resource, name=name, transform=drop_managed_fields
            )
            manager.add_informer(informers[name])
        found: Informer = informers[name]
        return found

    async def catalog(pool: Obj) -> Finder:
        found, _ = await offers.gather(services.drivers)
        return planned.finder(GPUNodePool.from_dict(pool), found, services.capacity.blocked)

    sources = Sources(
        pools=informer("gpunodepools", GPUNODEPOOLS),
        requests=informers["gpunoderequests"],
        nodes=informers["nodes"],
        pods=informer("pods", PODS),
        pdbs=informer("poddisruptionbudgets", PDBS),
    )
    for controller in controllers(
        sources,
        client=services.client,
        events=services.events,
        settings=settings,
        clock=wall_clock,
        catalog=catalog,
    ):
        manager.add_controller(controller)
