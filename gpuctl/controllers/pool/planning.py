"""One provisioning decision from a snapshot of the cluster: the provisioner's and `gpuctl plan`'s.

`decide(snapshot, blocked, node_of, pods_on)` turns what a round read (pending pods,
pools, the pools' GPUNodeRequests, every provider's offers) into a `binpack.Plan`: each
pool's candidates (`offers.candidates`, the offer step's ranking), its usage against
its limits (`limits.usage`), the machines that exist or are launching
(`inflight.existing`), then the packing. The provisioner acts on the plan; `gpuctl
plan -f deployment.yaml` prints it: what one shows is what the other does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs

from gpuctl.api import LABEL_POOL, GPUNodePool
from gpuctl.controllers.pool.binpack import Plan, PoolView, plan
from gpuctl.controllers.pool.inflight import existing
from gpuctl.controllers.pool.limits import usage
from gpuctl.controllers.pool.offers import candidates
from gpuctl.providers.base import Offer

Obj = dict[str, Any]


@attrs.frozen
class Snapshot:
    pending: Sequence[Obj]  # provisionable pods
    pools: Sequence[GPUNodePool]  # not being deleted
    requests: Sequence[Obj]  # the pools' GPUNodeRequests (label gpuctl.io/pool)
    offers: Sequence[Offer]
    notes: Sequence[str] = ()  # "<provider>: <why>" for providers that could not answer


def taint_json(taint: Any) -> Obj:
    found: Obj = {"key": taint.key, "effect": taint.effect.value}
    if taint.value is not None:
        found["value"] = taint.value
    return found


def pool_view(pool: GPUNodePool, snapshot: Snapshot, blocked: Callable[[Offer], bool]) -> PoolView:
    mine = [r for r in snapshot.requests if r["metadata"]["labels"].get(LABEL_POOL) == pool.name]
    template = pool.spec.template
    why = "no offer matches the pool's requirements"
    if template.max_price_per_hour is not None:
        why += f" under ${template.max_price_per_hour}/h"
    if snapshot.notes:
        why += " (unavailable: " + "; ".join(snapshot.notes) + ")"
    return PoolView(
        name=pool.name,
        weight=pool.spec.weight or 0,
        candidates=candidates(pool, snapshot.offers, blocked),
        taints=[taint_json(t) for t in template.taints],
        limits=pool.spec.limits,
        used=usage(mine),
        why_no_candidates=why,
    )


def decide(
    snapshot: Snapshot,
    blocked: Callable[[Offer], bool],
    node_of: Callable[[str], Obj | None],
    pods_on: Callable[[str], Iterable[Obj]],
) -> Plan:
    """`node_of(request name)`: its Node or None; `pods_on(node name)`: the pods bound there."""
    views = [pool_view(pool, snapshot, blocked) for pool in snapshot.pools]
    startup = {
        p.name: [taint_json(t) for t in p.spec.template.startup_taints] for p in snapshot.pools
    }
    machines = existing(snapshot.requests, node_of, pods_on, lambda name: startup.get(name, []))
    return plan(snapshot.pending, views, machines)
