"""Would these pods fit on those Nodes? A small scheduling simulation.

What the kube-scheduler's filters would say, for the things a GPU pool's pods use:
the Node is schedulable (not cordoned), every NoSchedule/NoExecute taint is
tolerated, `nodeSelector` and required node affinity hold, and the requests fit in
what is left of `status.allocatable` (requests of the active pods already bound
there, DaemonSet pods included, are taken off; so is the pod count). Pods are
placed largest first (GPUs, then CPU, then memory), each on the fullest Node it
fits: a first-fit-decreasing packing, as Karpenter's simulation prefers existing
capacity. Pod (anti-)affinity and topology spread are not simulated; the real
scheduler has the last word, and a replacement is bought when pods do not fit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

import attrs

from gpuctl.controllers.pool.disruption import pods
from gpuctl.controllers.pool.disruption.keys import GPU_RESOURCES
from gpuctl.controllers.pool.disruption.quantity import parse_quantity
from gpuctl.controllers.pool.requirements import rejects

Obj = dict[str, Any]


@attrs.define
class Room:
    """One Node and what is still free on it."""

    name: str
    labels: dict[str, str]
    taints: list[Obj]
    free: dict[str, Decimal]

    @classmethod
    def of(cls, node: Obj, bound: Iterable[Obj]) -> Room:
        allocatable = (node.get("status") or {}).get("allocatable") or {}
        free = {k: parse_quantity(str(v)) for k, v in allocatable.items()}
        for pod in bound:
            if pods.is_active(pod):
                for key, value in pods.requests(pod).items():
                    free[key] = free.get(key, Decimal(0)) - value
                free["pods"] = free.get("pods", Decimal(0)) - 1
        return cls(
            name=node["metadata"]["name"],
            labels=dict(node["metadata"].get("labels") or {}),
            taints=list((node.get("spec") or {}).get("taints") or []),
            free=free,
        )

    def take(self, pod: Obj) -> None:
        for key, value in pods.requests(pod).items():
            self.free[key] = self.free.get(key, Decimal(0)) - value
        self.free["pods"] = self.free.get("pods", Decimal(0)) - 1


def allowed_on(pod: Obj, room: Room) -> bool:
    """Taints, nodeSelector and required node affinity (not resources): the
    provisioner's scheduler predicates (`requirements.rejects`)."""
    return rejects(pod, room.labels, room.taints) is None


def fits_in(pod: Obj, room: Room) -> bool:
    if room.free.get("pods", Decimal(1)) < 1:
        return False
    for key, value in pods.requests(pod).items():
        if value > 0 and room.free.get(key, Decimal(0)) < value:
            return False
    return allowed_on(pod, room)


def _gpus(amounts: dict[str, Decimal]) -> Decimal:
    """GPUs of any vendor (a pod or a Node has one vendor's)."""
    return sum((amounts.get(name, Decimal(0)) for name in GPU_RESOURCES), Decimal(0))


def _size(pod: Obj) -> tuple[Decimal, Decimal, Decimal]:
    req = pods.requests(pod)
    zero = Decimal(0)
    return (_gpus(req), req.get("cpu", zero), req.get("memory", zero))


def place(moving: Sequence[Obj], rooms: list[Room]) -> list[Obj]:
    """Place `moving` onto `rooms` (taking their room); returns the pods that did not fit."""
    left: list[Obj] = []
    for pod in sorted(moving, key=_size, reverse=True):
        fitting = [room for room in rooms if fits_in(pod, room)]
        if not fitting:
            left.append(pod)
            continue
        fullest = min(fitting, key=lambda r: (_gpus(r.free), r.name))
        fullest.take(pod)
    return left


def schedulable(node: Obj) -> bool:
    return not (node.get("spec") or {}).get("unschedulable")
