"""A pool's machines as disruption sees them: plain data read from the cluster.

One `Machine` per GPUNodeRequest of the pool: its price, age, Node, the pods bound
to that Node and the disruption state written on the request (annotations). Built
fresh from the informers' caches at every reconcile: nothing about a disruption is
kept only in memory.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import attrs

from gpuctl.controllers.pool.disruption import keys, pods
from gpuctl.controllers.request.nodes import is_ready
from gpuctl.providers import catalog

Obj = dict[str, Any]

# Taints Kubernetes itself puts on a Node that is not serving yet (Karpenter's
# KnownEphemeralTaints). The node lifecycle controller removes not-ready a moment
# after the Node turns Ready: until then no pending pod can land there, and the
# machine would look empty when it is only about to take the pods it was bought for.
EPHEMERAL_TAINTS = frozenset(
    {
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
        "node.cloudprovider.kubernetes.io/uninitialized",
    }
)


def parse_time(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def format_time(when: datetime.datetime) -> str:
    """Microseconds, as metav1.MicroTime: a clock written in whole seconds would let
    `consolidateAfter` run out up to a second early."""
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def node_ready(node: Obj | None) -> bool:
    return node is not None and is_ready(node)


@attrs.frozen
class Machine:
    obj: Obj  # the GPUNodeRequest as cached
    node: Obj | None
    pods: tuple[Obj, ...]  # bound to its Node, every kind
    startup_taints: tuple[str, ...] = ()  # the pool's: keys something removes at start

    @property
    def meta(self) -> Obj:
        return dict(self.obj["metadata"])

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def annotations(self) -> dict[str, str]:
        return dict(self.obj["metadata"].get("annotations") or {})

    @property
    def status(self) -> Obj:
        return dict(self.obj.get("status") or {})

    @property
    def created(self) -> datetime.datetime | None:
        return parse_time(self.obj["metadata"].get("creationTimestamp"))

    @property
    def price(self) -> Decimal:
        offer = self.status.get("offer") or {}
        return Decimal(str(offer.get("pricePerHour") or 0))

    @property
    def deleting(self) -> bool:
        return self.obj["metadata"].get("deletionTimestamp") is not None

    @property
    def disruption(self) -> str | None:
        return self.annotations.get(keys.DISRUPTION)

    @property
    def replaces(self) -> str | None:
        return self.annotations.get(keys.REPLACES)

    @property
    def initialized(self) -> bool:
        """Its Node was Ready once and advertises the GPUs bought (Karpenter's Initialized:
        extended resources registered). Until the device plugin reports them no pod
        can land, so an "empty" machine then is only a machine not ready for pods yet."""
        if not self.status.get("readyAt") or self.node is None:
            return False
        taints = (self.node.get("spec") or {}).get("taints") or []
        if any(t.get("key") in self.startup_taints for t in taints):
            return False  # Karpenter's Initialized waits for startup taints to go too
        if any(t.get("key") in EPHEMERAL_TAINTS for t in taints):
            return False  # ... and for the known ephemeral ones (a Node just Ready)
        offer = self.status.get("offer") or {}
        want = int(offer.get("gpuCount") or 0)
        resource = catalog.gpu_resource(str(offer.get("gpuType", "")))  # the vendor's
        allocatable = (self.node.get("status") or {}).get("allocatable") or {}
        return int(str(allocatable.get(resource, "0")) or 0) >= want

    @property
    def ready(self) -> bool:
        return self.status.get("phase") == "Ready" and node_ready(self.node)

    @property
    def node_name(self) -> str | None:
        return str(self.node["metadata"]["name"]) if self.node is not None else None

    @property
    def workload(self) -> list[Obj]:
        return [p for p in self.pods if pods.is_workload(p)]

    @property
    def empty(self) -> bool:
        return not self.workload

    def last_pod_event(self) -> datetime.datetime | None:
        """When its pods last changed (annotation), else when it became Ready."""
        return parse_time(self.annotations.get(keys.LAST_POD_EVENT)) or parse_time(
            self.status.get("readyAt")
        )


def pods_digest(bound: Sequence[Obj]) -> str:
    """A short stable digest of the set of workload pods (their uids)."""
    uids = sorted(str(p["metadata"].get("uid", "")) for p in bound if pods.is_workload(p))
    return hashlib.sha256(",".join(uids).encode()).hexdigest()[:16]


def build(
    requests: Sequence[Obj],
    nodes: Mapping[str, Obj],
    pods_by_node: Mapping[str, Sequence[Obj]],
    startup_taints: Sequence[str] = (),
) -> list[Machine]:
    """Machines of the given requests; `nodes` maps request name -> its Node."""
    found = []
    for obj in requests:
        node = nodes.get(obj["metadata"]["name"])
        bound = pods_by_node.get(node["metadata"]["name"], ()) if node is not None else ()
        found.append(Machine(obj, node, tuple(bound), tuple(startup_taints)))
    return sorted(found, key=lambda m: m.name)
