"""The capacity a pool already has or is buying, as the planner sees it.

One `Existing` per GPUNodeRequest of a pool that can still take pods: not Failed, not
being deleted, not being disrupted (annotation `gpuctl.io/disruption`), and whose Node,
if registered, is not cordoned. Its labels and taints are the Node's once it
registered; before that, what the machine will register with: the chosen offer's
labels (or the request's own shape before an offer is chosen) and the template's
taints as the request carries them. Taints that go away by themselves are left out, as
Karpenter does: the pool's startup taints and the Node lifecycle's own (not-ready,
unreachable, uninitialized): a joining Node has them all. Its free GPUs are its count
minus the GPUs of the active pods bound to its Node.

Counting launching machines here is what keeps a second machine from being bought for
pods that are only waiting for the first one to join.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from typing import Any

from gpuctl.api import (
    LABEL_CAPACITY_TYPE,
    LABEL_GPU_COUNT,
    LABEL_GPU_TYPE,
    LABEL_POOL,
    LABEL_PROVIDER,
    LABEL_REGION,
)
from gpuctl.controllers.pool import pods as podinfo
from gpuctl.controllers.pool.binpack import Existing
from gpuctl.controllers.pool.limits import counts
from gpuctl.controllers.pool.offers import offer_labels
from gpuctl.providers.base import CapacityType, Offer

Obj = dict[str, Any]
DISRUPTION = "gpuctl.io/disruption"  # set by the disruption controller on a machine it removes
EPHEMERAL_TAINTS = frozenset(
    {
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
        "node.cloudprovider.kubernetes.io/uninitialized",
    }
)


def _offer(status_offer: Obj) -> Offer:
    return Offer(
        provider=str(status_offer.get("provider", "")),
        cloud=str(status_offer.get("cloud", "")),
        region=str(status_offer.get("region", "")),
        native_region=str(status_offer.get("nativeRegion", "")),
        gpu_type=str(status_offer.get("gpuType", "")),
        gpu_count=int(status_offer.get("gpuCount") or 0),
        instance_type=str(status_offer.get("instanceType", "")),
        capacity_type=CapacityType(status_offer.get("capacityType", "on-demand")),
        price_per_hour=Decimal(str(status_offer.get("pricePerHour") or 0)),
    )


def planned_labels(request: Obj) -> dict[str, str]:
    """The labels the request's machine will register with (gpuctl's and the template's)."""
    spec, status = request.get("spec") or {}, request.get("status") or {}
    labels = dict((spec.get("node") or {}).get("labels") or {})
    labels[LABEL_POOL] = request["metadata"]["labels"][LABEL_POOL]
    if status.get("offer"):
        labels.update(offer_labels(_offer(status["offer"])))
        return labels
    gpu = spec.get("gpu") or {}
    labels[LABEL_GPU_TYPE] = str(gpu.get("type", ""))
    labels[LABEL_GPU_COUNT] = str(gpu.get("count", ""))
    labels[LABEL_CAPACITY_TYPE] = str(spec.get("capacityType", "on-demand"))
    for key, field in ((LABEL_PROVIDER, "providers"), (LABEL_REGION, "regions")):
        allowed = spec.get(field) or []
        if len(allowed) == 1:
            labels[key] = str(allowed[0])
    return labels


def usable(request: Obj, node: Obj | None) -> bool:
    meta = request["metadata"]
    if not counts(request) or meta.get("deletionTimestamp"):
        return False
    if DISRUPTION in (meta.get("annotations") or {}):
        return False
    return node is None or not (node.get("spec") or {}).get("unschedulable")


def requested_gpus(bound: Iterable[Obj]) -> int:
    active = (
        p for p in bound if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
    )
    return sum(podinfo.gpus(p) for p in active)


def lasting_taints(taints: Iterable[Obj], startup: Iterable[Obj]) -> list[Obj]:
    passing = {(t.get("key"), t.get("effect")) for t in startup}
    return [
        t
        for t in taints
        if t.get("key") not in EPHEMERAL_TAINTS and (t.get("key"), t.get("effect")) not in passing
    ]


def existing(
    requests: Sequence[Obj],
    node_of: Callable[[str], Obj | None],
    pods_on: Callable[[str], Iterable[Obj]],
    startup_taints: Callable[[str], Iterable[Obj]] = lambda _: (),
) -> list[Existing]:
    """`node_of(request name)`: its Node or None; `pods_on(node name)`: pods bound there;
    `startup_taints(pool name)`: the pool's startup taints."""
    found = []
    for request in requests:
        name = request["metadata"]["name"]
        node = node_of(name)
        if not usable(request, node):
            continue
        spec = request.get("spec") or {}
        gpus = int((spec.get("gpu") or {}).get("count") or 0)
        if node is not None:
            labels = dict(node["metadata"].get("labels") or {})
            # Until the request labels its Node, the GPU type (the vendor) is the request's.
            labels.setdefault(LABEL_GPU_TYPE, str((spec.get("gpu") or {}).get("type", "")))
            taints = list((node.get("spec") or {}).get("taints") or [])
            gpus -= requested_gpus(pods_on(node["metadata"]["name"]))
        else:
            labels = planned_labels(request)
            taints = list((spec.get("node") or {}).get("taints") or [])
        pool = labels[LABEL_POOL]
        taints = lasting_taints(taints, startup_taints(pool))
        found.append(Existing(name, pool, labels, taints, gpus))
    return found
