"""PodDisruptionBudgets as disruption reads them (Karpenter's utils/pdb).

A pod whose PDB allows no disruption now (`status.disruptionsAllowed` 0, as computed
by kube-controller-manager's disruption controller), or that two PDBs select (the
eviction API refuses those), blocks the voluntary disruption of its machine: the
machine is not a candidate, so no replacement is bought for it. A PDB with
`unhealthyPodEvictionPolicy: AlwaysAllow` never blocks an unready pod.
"""

from __future__ import annotations

from typing import Any

import attrs

from gpuctl.controllers.pool.disruption import pods
from gpuctl.controllers.pool.disruption.selectors import label_selector_matches

Obj = dict[str, Any]


@attrs.frozen
class Limit:
    namespace: str
    name: str
    selector: Obj | None
    disruptions_allowed: int
    always_evict_unhealthy: bool

    @classmethod
    def from_object(cls, pdb: Obj) -> Limit:
        spec, status = pdb.get("spec") or {}, pdb.get("status") or {}
        return cls(
            namespace=pdb["metadata"].get("namespace", ""),
            name=pdb["metadata"]["name"],
            selector=spec.get("selector"),
            disruptions_allowed=int(status.get("disruptionsAllowed") or 0),
            always_evict_unhealthy=spec.get("unhealthyPodEvictionPolicy") == "AlwaysAllow",
        )

    def selects(self, pod: Obj) -> bool:
        meta = pod["metadata"]
        labels = meta.get("labels") or {}
        return meta.get("namespace", "") == self.namespace and label_selector_matches(
            self.selector, labels
        )


def _unready(pod: Obj) -> bool:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "False")
    return False


def blocking(limits: list[Limit], pod: Obj) -> str | None:
    """Why evicting `pod` now would be refused by its PDBs, or None."""
    if not pods.is_workload(pod):
        return None  # never evicted: no PDB matters
    matching = [limit for limit in limits if limit.selects(pod)]
    if len(matching) > 1:
        names = ", ".join(sorted(f"{m.namespace}/{m.name}" for m in matching))
        return f"pod {pods.name(pod)} is selected by several PodDisruptionBudgets ({names})"
    for limit in matching:
        if limit.always_evict_unhealthy and _unready(pod):
            return None
        if limit.disruptions_allowed <= 0:
            return (
                f"PodDisruptionBudget {limit.namespace}/{limit.name} allows no disruption of "
                f"pod {pods.name(pod)}"
            )
    return None
