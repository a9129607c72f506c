"""Which pods ask for new capacity, and how many GPUs they need (Karpenter's IsProvisionable).

A pod is provisionable when the kube-scheduler tried and failed to place it
(`PodScheduled=False`, reason `Unschedulable`), it is not bound, not nominated to a
Node by preemption (it will run there once victims leave), not terminating, not a
DaemonSet's pod (those follow Nodes, they never justify one) and it requests GPUs
(`nvidia.com/gpu`, or `amd.com/gpu` for AMD parts: `gpu_resources` says which, and
`requirements.wrong_gpu` keeps it to machines of that vendor).

GPUs requested: extended resources have no overcommit, so a container's request is
its limit when only the limit is set; the pod needs the sum over its containers, or
the largest init container's if that is more (init containers run one at a time).
"""

from __future__ import annotations

from typing import Any

from gpuctl.api.constants import GPU_RESOURCES as BY_VENDOR

GPU_RESOURCES = tuple(BY_VENDOR.values())

Obj = dict[str, Any]


def _requested(container: Obj) -> dict[str, int]:
    """GPU resource -> count the container asks for (its request, else its limit)."""
    resources = container.get("resources") or {}
    found: dict[str, int] = {}
    for source in (resources.get("limits") or {}, resources.get("requests") or {}):
        for name in GPU_RESOURCES:
            if name in source:
                found[name] = int(str(source[name]))  # integers only, as the API server enforces
    return found


def _count(container: Obj) -> int:
    return sum(_requested(container).values())


def gpu_resources(pod: Obj) -> set[str]:
    """The GPU resources the pod asks for (one, unless it mixes vendors)."""
    spec = pod.get("spec") or {}
    containers = [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]
    return {name for c in containers for name, n in _requested(c).items() if n > 0}


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
