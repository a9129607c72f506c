"""What disruption needs to know about a pod, as Karpenter's utils/pod reads it.

- a DaemonSet pod or a mirror (static) pod is not the machine's workload: a machine
  holding only those is empty, and drain leaves them (they go with the Node);
- a terminal pod (Succeeded/Failed) or one already terminating is ignored;
- `gpuctl.io/do-not-disrupt: "true"` blocks every voluntary disruption of its machine.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from gpuctl.controllers.pool.disruption.keys import DO_NOT_DISRUPT
from gpuctl.controllers.pool.disruption.quantity import parse_quantity

Obj = dict[str, Any]
MIRROR = "kubernetes.io/config.mirror"


def name(pod: Obj) -> str:
    meta = pod["metadata"]
    return f"{meta.get('namespace', '')}/{meta['name']}"


def is_daemonset(pod: Obj) -> bool:
    owners = pod["metadata"].get("ownerReferences") or []
    return any(o.get("kind") == "DaemonSet" and o.get("controller") for o in owners)


def is_mirror(pod: Obj) -> bool:
    return MIRROR in (pod["metadata"].get("annotations") or {})


def is_terminal(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def is_terminating(pod: Obj) -> bool:
    return pod["metadata"].get("deletionTimestamp") is not None


def is_active(pod: Obj) -> bool:
    return not is_terminal(pod) and not is_terminating(pod)


def is_workload(pod: Obj) -> bool:
    """A pod that makes its machine non-empty and that drain must move."""
    return is_active(pod) and not is_daemonset(pod) and not is_mirror(pod)


def do_not_disrupt(pod: Obj) -> bool:
    return (pod["metadata"].get("annotations") or {}).get(DO_NOT_DISRUPT) == "true"


def requests(pod: Obj) -> dict[str, Decimal]:
    """Effective requests: max(sum of containers, each init container), plus overhead."""
    spec = pod.get("spec") or {}
    total: dict[str, Decimal] = {}
    for container in spec.get("containers") or []:
        for key, value in _container_requests(container).items():
            total[key] = total.get(key, Decimal(0)) + value
    for container in spec.get("initContainers") or []:
        for key, value in _container_requests(container).items():
            total[key] = max(total.get(key, Decimal(0)), value)
    for key, value in (spec.get("overhead") or {}).items():
        total[key] = total.get(key, Decimal(0)) + parse_quantity(str(value))
    return total


def _container_requests(container: Obj) -> dict[str, Decimal]:
    resources = container.get("resources") or {}
    # A limit without a request is the request (for extended resources always).
    found = {k: parse_quantity(str(v)) for k, v in (resources.get("limits") or {}).items()}
    found.update({k: parse_quantity(str(v)) for k, v in (resources.get("requests") or {}).items()})
    return found
