"""Cordon a pool machine's Node and evict its pods (Karpenter's termination drain).

- cordon: the `gpuctl.io/disrupted:NoSchedule` taint and `spec.unschedulable`, so
  nothing new lands while it drains;
- evict, with the Eviction API (policy/v1), every workload pod: the API server
  checks PodDisruptionBudgets, and a 429 means one forbids it now — retried at the
  next pass, never forced;
- never evicted: DaemonSet and mirror pods (they go with the Node; Karpenter v1
  evicts DaemonSet pods last, gpuctl leaves them as `kubectl drain
  --ignore-daemonsets` does), and pods with `gpuctl.io/do-not-disrupt: "true"`:
  the drain waits for them to finish (as Karpenter's does) unless the operator's
  drain grace period is set and over, when what is left is deleted;
- drained: no workload pod left on the Node (terminal ones do not count).
"""

from __future__ import annotations

import logging
from typing import Any

from gpuctl.controllers.pool.disruption import keys, pods
from gpuctl.controllers.pool.disruption.metrics import EVICTIONS
from gpuctl.runtime.client import ApiError, Client, is_not_found
from gpuctl.runtime.resources import NODES, PODS, Resource

log = logging.getLogger(__name__)

Obj = dict[str, Any]
PDBS = Resource("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", namespaced=True)
TAINT = {"key": keys.DISRUPTED_TAINT, "effect": "NoSchedule"}


def has_taint(node: Obj) -> bool:
    taints = (node.get("spec") or {}).get("taints") or []
    return any(t.get("key") == keys.DISRUPTED_TAINT for t in taints)


def to_evict(bound: list[Obj]) -> list[Obj]:
    """The pods drain evicts: workload pods without do-not-disrupt."""
    return [p for p in bound if pods.is_workload(p) and not pods.do_not_disrupt(p)]


def waiting(bound: list[Obj]) -> list[Obj]:
    """The pods the drain waits for: every workload pod not yet terminal."""
    return [
        p
        for p in bound
        if not pods.is_terminal(p) and not pods.is_mirror(p) and not pods.is_daemonset(p)
    ]


async def taint(client: Client, node: Obj, *, cordon: bool) -> None:
    """Add the disrupted taint (and cordon), guarded by resourceVersion."""
    spec = node.get("spec") or {}
    if has_taint(node) and (not cordon or spec.get("unschedulable")):
        return
    taints = [t for t in spec.get("taints") or [] if t.get("key") != keys.DISRUPTED_TAINT]
    patch: Obj = {
        "metadata": {"resourceVersion": node["metadata"]["resourceVersion"]},
        "spec": {"taints": [*taints, TAINT]},
    }
    if cordon:
        patch["spec"]["unschedulable"] = True
    await client.patch(NODES, node["metadata"]["name"], patch)


async def untaint(client: Client, node: Obj) -> None:
    """Take the disrupted taint off again (a disruption given up)."""
    if not has_taint(node):
        return
    taints = (node.get("spec") or {}).get("taints") or []
    kept = [t for t in taints if t.get("key") != keys.DISRUPTED_TAINT]
    patch = {
        "metadata": {"resourceVersion": node["metadata"]["resourceVersion"]},
        "spec": {"taints": kept or None},
    }
    await client.patch(NODES, node["metadata"]["name"], patch)


async def evict(client: Client, pod: Obj) -> str | None:
    """Ask the Eviction API to evict `pod`; the refusal's message if it was refused."""
    meta = pod["metadata"]
    body = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": meta["name"], "namespace": meta.get("namespace")},
        "deleteOptions": {"preconditions": {"uid": meta.get("uid")}},
    }
    try:
        await client.create(PODS, body, subresource="eviction")
    except ApiError as err:
        if is_not_found(err):
            return None  # gone already
        if err.status == 429:  # a PodDisruptionBudget forbids it now: later
            EVICTIONS.labels("refused").inc()
            return err.message or "a PodDisruptionBudget forbids the eviction now"
        if err.status == 409:  # the uid changed: another pod by that name, not ours
            return None
        raise
    EVICTIONS.labels("evicted").inc()
    return None


async def force_delete(client: Client, pod: Obj) -> None:
    meta = pod["metadata"]
    try:
        await client.delete(
            PODS, meta["name"], namespace=meta.get("namespace"), uid=meta.get("uid")
        )
        EVICTIONS.labels("deleted").inc()
    except ApiError as err:
        if not is_not_found(err) and err.status != 409:
            raise


async def drain(client: Client, node: Obj, bound: list[Obj], *, force: bool) -> list[str]:
    """One drain pass over `node`; returns what it still waits for (empty: drained).

    `force`: the grace period is over; remaining pods are deleted, not evicted.
    """
    await taint(client, node, cordon=True)
    refused: dict[str, str] = {}
    for pod in to_evict(bound) if not force else waiting(bound):
        if force:
            await force_delete(client, pod)
            continue
        if pods.is_terminating(pod):
            continue  # evicted already: waiting for it to stop
        message = await evict(client, pod)
        if message:
            refused[pods.name(pod)] = message
    left = []
    for pod in waiting(bound):
        name = pods.name(pod)
        if name in refused:
            left.append(f"{name} (eviction refused: {refused[name]})")
        elif pods.do_not_disrupt(pod) and not force:
            left.append(f"{name} ({keys.DO_NOT_DISRUPT})")
        else:
            left.append(f"{name} (stopping)")
    return left
