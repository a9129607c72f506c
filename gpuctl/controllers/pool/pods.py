"""Which pods ask for new capacity, and how many GPUs they need (Karpenter's IsProvisionable).

A pod is provisionable when the kube-scheduler tried and failed to place it
(`PodScheduled=False`, reason `Unschedulable`), it is not bound, not nominated to a
Node by preemption (it will run there once victims leave), not terminating, not a
DaemonSet's pod (those follow Nodes, they never justify one) and it requests GPUs
(`nvidia.com/gpu`, or `amd.com/gpu` where the catalog has AMD parts; none does today).

GPUs requested: extended resources have no overcommit, so a container's request is
its limit when only the limit is set; the pod needs the sum over its containers, or
the largest init container's if that is more (init containers run one at a time).
"""

from __future__ import annotations

from typing import Any

GPU_RESOURCES = ("nvidia.com/gpu",)

Obj = dict[str, Any]


def _count(container: Obj) -> int:
    resources = container.get("resources") or {}
    found = 0
    for source in (resources.get("limits") or {}, resources.get("requests") or {}):
        for name in GPU_RESOURCES:
            if name in source:
                found = int(str(source[name]))  # integers only, as the API server enforces
    return found


def gpus(pod: Obj) -> int:
    spec = pod.get("spec") or {}
    running = sum(_count(c) for c in spec.get("containers") or [])
    init = max((_count(c) for c in spec.get("initContainers") or []), default=0)
    return max(running, init)


def unschedulable(pod: Obj) -> bool:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "PodScheduled":
            return bool(
                condition.get("status") == "False" and condition.get("reason") == "Unschedulable"
            )
    return False


def _daemonset_pod(pod: Obj) -> bool:
    owners = pod["metadata"].get("ownerReferences") or []
    return any(o.get("kind") == "DaemonSet" for o in owners)


def provisionable(pod: Obj) -> bool:
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    return (
        not spec.get("nodeName")
        and not status.get("nominatedNodeName")
        and pod["metadata"].get("deletionTimestamp") is None
        and status.get("phase", "Pending") == "Pending"
        and unschedulable(pod)
        and not _daemonset_pod(pod)
        and gpus(pod) > 0
    )


def key(pod: Obj) -> str:
    meta = pod["metadata"]
    return f"{meta.get('namespace', '')}/{meta['name']}"
