"""Replacements from the provisioner's planner: the cheapest machine that holds the pods.

With the providers' catalogs at hand (gathered once per pass, only when a machine is
due for expiry or consolidation), a replacement is what the provisioner would buy for
the machine's pods if they were pending: `binpack.plan` over the pool's candidate
offers (its requirements, price cap and taints), accepted only when all the pods fit
ONE new machine; its request is the provisioner's own (`launcher.request_body`), so a
replacement is indistinguishable from a machine provisioned for those pods. The pool's
limits are not applied: a replacement is launched to let a dearer (consolidation) or
an expired machine go, so the pool is back within them once it is done. Without a
catalog answer it falls back to a machine like the one replaced (`same_shape`).
"""

from __future__ import annotations

from collections.abc import Callable

from gpuctl.api import GPUNodePool
from gpuctl.controllers.pool import binpack, launcher, offers
from gpuctl.controllers.pool.disruption.command import Replacement
from gpuctl.controllers.pool.disruption.machines import Machine, Obj
from gpuctl.controllers.pool.disruption.replacement import Finder, same_shape
from gpuctl.controllers.pool.limits import Usage
from gpuctl.providers.base import Offer


def finder(pool: GPUNodePool, catalog: list[Offer], blocked: Callable[[Offer], bool]) -> Finder:
    taints = [
        {"key": t.key, "effect": t.effect.value, **({"value": t.value} if t.value else {})}
        for t in pool.spec.template.taints
    ]
    view = binpack.PoolView(
        name=pool.name,
        weight=pool.spec.weight or 0,
        candidates=offers.candidates(pool, catalog, blocked),
        taints=taints,
        limits=None,
        used=Usage(),
    )

    def find(pool_obj: Obj, machine: Machine, moving: list[Obj]) -> Replacement | None:
        result = binpack.plan(moving, [view], existing=[])
        if result.unserved or result.onto_existing or len(result.new) != 1:
            return same_shape(pool_obj, machine, moving)
        chosen = result.new[0]
        body = launcher.request_body(pool, chosen)
        return Replacement(
            spec=body["spec"], price=chosen.choice.price, description=chosen.choice.describe()
        )

    return find
