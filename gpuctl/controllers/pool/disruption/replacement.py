"""What replaces a machine: by default a machine like it (the same request spec).

Used when a disruption needs a new machine first (expiry, or consolidation onto a
cheaper one). The default, `same_shape`, asks for a machine like the one it
replaces — the same GPUNodeRequest spec, at the same price — which always holds its
pods; it is never cheaper, so it never makes a consolidation replace. The pool's
provisioning planner, when wired in, finds the cheapest offer for the exact pods.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from gpuctl.controllers.pool.disruption.command import Replacement
from gpuctl.controllers.pool.disruption.machines import Machine

Obj = dict[str, Any]
# (pool, the machine replaced, the pods to hold) -> the cheapest machine that holds them
Finder = Callable[[Obj, Machine, list[Obj]], Replacement | None]


def same_shape(pool: Obj, machine: Machine, pods: list[Obj]) -> Replacement | None:
    spec = copy.deepcopy(machine.obj.get("spec") or {})
    if not spec:
        return None
    offer = machine.status.get("offer") or {}
    what = f"{offer.get('gpuCount', '?')}x {offer.get('gpuType', 'GPU')} like {machine.name}"
    return Replacement(spec=spec, price=machine.price, description=f"{what} (${machine.price}/h)")
