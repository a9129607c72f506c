"""Planned machine -> GPUNodeRequest owned by the pool; created once, whatever happens.

The request asks for exactly the planned offer's shape: its GPU type and count,
capacity type and provider, at most its price (`maxPricePerHour`), in the regions where
that shape holds all its pods, so the offer step picks that offer (or one as cheap) and
the pool's USD/h limit counted before the launch holds after it. When that offer fails
(no capacity) the request fails over to the same shape in another of those regions at
no higher price; when none is left it waits with `OfferAvailable=False` and the pool
controller deletes it, and the next round re-plans the pods without the failed offers
(the capacity cache blocks them), as Karpenter deletes a NodeClaim that cannot launch.
(Two instance types of one shape differ only in their instance-type label: a pod that
selects one by that label may see the other, the scheduler then keeps it pending and
the next round plans it again.)

Ownership (`members.py`): label `gpuctl.io/pool` and a controller ownerReference to
the pool, so deleting the pool makes the garbage collector delete its requests, each
of which tears its machine down through the request lifecycle.

Name: `<pool>-<digest of the offer and the uids of the pods planned onto it>`. A
round repeated for the same pods and offer (an operator killed after the create but
before it saw the answer) computes the same name, and the API server refuses the
second create: the same pods never buy two machines through this path either.
"""

from __future__ import annotations

import hashlib
from typing import Any

from gpuctl.api import GPUNodePool, Region, format_price
from gpuctl.controllers.pool import members
from gpuctl.controllers.pool.binpack import NewMachine

Obj = dict[str, Any]
MAX_NAME = 63  # the name is also the gpuctl.io/request label value of its Node
REGIONS = frozenset(r.value for r in Region)


def request_name(pool: str, machine: NewMachine) -> str:
    offer = machine.choice.offer
    uids = sorted(str(p["metadata"].get("uid", "")) for p in machine.pods)
    seed = "|".join([*offer.key, str(offer.gpu_count), offer.instance_type, *uids])
    digest = hashlib.sha256(seed.encode()).hexdigest()[:10]
    head = pool[: MAX_NAME - len(digest) - 1].rstrip("-.")
    return f"{head}-{digest}"


def _taints(pool: GPUNodePool) -> list[Obj]:
    template = pool.spec.template
    found = []
    for taint in [*template.taints, *template.startup_taints]:
        item: Obj = {"key": taint.key, "effect": taint.effect.value}
        if taint.value is not None:
            item["value"] = taint.value
        found.append(item)
    return found


def _regions(machine: NewMachine) -> list[str]:
    """Every region where the planned shape, from the planned provider, holds all its pods.

    The offer step takes the cheapest of them (the planned offer, or one as cheap) and,
    when that one has no capacity, fails over to the next at no higher price without the
    pool's help. Empty when one of them is a region the CRD does not know (any region).
    """
    chosen = machine.choice.offer
    found = sorted(
        {
            c.offer.region
            for c in machine.options
            if (c.offer.provider, c.offer.gpu_type, c.offer.gpu_count, c.offer.capacity_type)
            == (chosen.provider, chosen.gpu_type, chosen.gpu_count, chosen.capacity_type)
            and c.price <= chosen.price_per_hour
        }
    )
    return found if all(r in REGIONS for r in found) else []


def request_body(pool: GPUNodePool, machine: NewMachine) -> Obj:
    """The GPUNodeRequest for one planned machine (disruption replacements use it too)."""
    offer = machine.choice.offer
    template = pool.spec.template
    spec: Obj = {
        "gpu": {"type": offer.gpu_type, "count": offer.gpu_count},
        "capacityType": offer.capacity_type.value,
        "maxPricePerHour": format_price(offer.price_per_hour),
        "providers": [offer.provider],
        "placement": "cheapest",
    }
    regions = _regions(machine)
    if regions:
        spec["regions"] = regions
    node: Obj = {}
    if template.labels:
        node["labels"] = dict(template.labels)
    if template.taints or template.startup_taints:
        node["taints"] = _taints(pool)
    if node:
        spec["node"] = node
    if template.registration_timeout:
        spec["registrationTimeout"] = template.registration_timeout
    uid = pool.metadata.uid or ""  # read from the API server: always set
    return members.request(request_name(pool.name, machine), pool.name, uid, spec)
