"""Which machines may be disrupted voluntarily (Karpenter's NewCandidate).

A machine is a candidate when all of these hold; otherwise it is blocked, and why:
- its request is not being deleted nor already being disrupted;
- it is initialized (GPUs advertised, startup and ephemeral taints gone) and Ready
  (a launching or unhealthy machine is not judged);
- its GPUNodeRequest has no `gpuctl.io/do-not-disrupt: "true"` annotation (as
  Karpenter's on a NodeClaim; Node annotations are not cached, transforms.py);
- none of its pods has `gpuctl.io/do-not-disrupt: "true"`;
- none of its pods is held by a PodDisruptionBudget that allows no disruption now
  (or by several PDBs);
- no pending pod fits on it: a machine just Ready, or just freed, may be where the
  scheduler is about to put a waiting pod (Karpenter keeps nominated nodes out).
A blocked machine is never marked, tainted, drained nor replaced: a pod that must not
be evicted is never evicted by a voluntary disruption, and no money is spent on a
replacement that could not take its place.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import attrs

from gpuctl.controllers.pool.disruption import fit, keys, pdbs, pods
from gpuctl.controllers.pool.disruption.machines import Machine, Obj


@attrs.frozen
class Blocked:
    machine: Machine
    reason: str


def why_not(machine: Machine, limits: list[pdbs.Limit], pending: Sequence[Obj] = ()) -> str | None:
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
    return _nominated(machine, pending)


def _nominated(machine: Machine, pending: Sequence[Obj]) -> str | None:
    """A pending pod that fits it may be about to land there (Karpenter's nomination)."""
    if machine.node is None or not pending:
        return None
    room = fit.Room.of(machine.node, machine.pods)
    for pod in pending:
        if fit.fits_in(pod, room):
            return f"pending pod {pods.name(pod)} may be scheduled onto it"
    return None


def pending_pods(all_pods: Iterable[Obj]) -> list[Obj]:
    """Pods waiting for a Node (not bound, not terminating, not DaemonSet pods)."""
    return [
        p
        for p in all_pods
        if not (p.get("spec") or {}).get("nodeName")
        and pods.is_active(p)
        and not pods.is_daemonset(p)
        and (p.get("status") or {}).get("phase", "Pending") == "Pending"
    ]


def split(
    machines: list[Machine], limits: list[pdbs.Limit], pending: Sequence[Obj] = ()
) -> tuple[list[Machine], list[Blocked]]:
    candidates: list[Machine] = []
    blocked: list[Blocked] = []
    for machine in machines:
        reason = why_not(machine, limits, pending)
        if reason is None:
            candidates.append(machine)
        else:
            blocked.append(Blocked(machine, reason))
    return candidates, blocked
