"""Which machines may be disrupted voluntarily (Karpenter's NewCandidate).

A machine is a candidate when all of these hold; otherwise it is blocked, and why:
- its request is not being deleted nor already being disrupted;
- it is initialized and Ready (a launching or unhealthy machine is not judged);
- its GPUNodeRequest has no `gpuctl.io/do-not-disrupt: "true"` annotation (as
  Karpenter's on a NodeClaim; Node annotations are not cached, transforms.py);
- none of its pods has `gpuctl.io/do-not-disrupt: "true"`;
- none of its pods is held by a PodDisruptionBudget that allows no disruption now
  (or by several PDBs).
A blocked machine is never marked, tainted, drained nor replaced: a pod that must not
be evicted is never evicted by a voluntary disruption, and no money is spent on a
replacement that could not take its place.
"""

from __future__ import annotations

import attrs

from gpuctl.controllers.pool.disruption import keys, pdbs, pods
from gpuctl.controllers.pool.disruption.machines import Machine


@attrs.frozen
class Blocked:
    machine: Machine
    reason: str


def why_not(machine: Machine, limits: list[pdbs.Limit]) -> str | None:
    """Why `machine` may not be disrupted now, or None when it is a candidate."""
    if machine.deleting:
        return "it is being deleted"
    if machine.disruption:
        return f"it is already being disrupted ({machine.disruption})"
    if not machine.initialized or not machine.ready:
        return "it is not initialized and Ready"
    if machine.annotations.get(keys.DO_NOT_DISRUPT) == "true":
        return f"GPUNodeRequest {machine.name} has {keys.DO_NOT_DISRUPT}"
    for pod in machine.workload:
        if pods.do_not_disrupt(pod):
            return f"pod {pods.name(pod)} has {keys.DO_NOT_DISRUPT}"
    for pod in machine.workload:
        blocker = pdbs.blocking(limits, pod)
        if blocker:
            return blocker
    return None


def split(machines: list[Machine], limits: list[pdbs.Limit]) -> tuple[list[Machine], list[Blocked]]:
    candidates: list[Machine] = []
    blocked: list[Blocked] = []
    for machine in machines:
        reason = why_not(machine, limits)
        if reason is None:
            candidates.append(machine)
        else:
            blocked.append(Blocked(machine, reason))
    return candidates, blocked
