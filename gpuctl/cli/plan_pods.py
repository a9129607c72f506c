"""`gpuctl plan -f deployment.yaml`: which pool and offer the provisioner would choose for pods.

The pods are those the file's workloads would create (`pool.workloads.pods_of`: Pods,
Deployments, ReplicaSets, StatefulSets, Jobs, CronJobs), pending as the kube-scheduler
leaves them. The pools are the file's GPUNodePools plus the cluster's (a pool in the
file wins over the cluster's of the same name); with a cluster, its pools' requests,
Nodes and pods count too (limits used, machines launching or with free GPUs), exactly
as a provisioning round reads them. Then `pool.planning.decide`, the function the
provisioner calls, makes the plan; nothing is created.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from gpuctl.api import GNP_KIND, LABEL_POOL, GPUNodePool, ObjectError
from gpuctl.cli import output
from gpuctl.cli.config import ConfigError, Source
from gpuctl.cli.offers import offer_json
from gpuctl.controllers.pool import pods as podinfo
from gpuctl.controllers.pool.binpack import Plan
from gpuctl.controllers.pool.offers import gather
from gpuctl.controllers.pool.planning import Snapshot, decide
from gpuctl.controllers.pool.workloads import pods_of
from gpuctl.controllers.resources import GPUNODEPOOLS, GPUNODEREQUESTS
from gpuctl.providers.base import Offer
from gpuctl.runtime.client import ApiError, TransportError
from gpuctl.runtime.resources import NODES, PODS

JSON = dict[str, Any]


def read_pods(documents: Iterable[JSON]) -> list[JSON]:
    """The provisionable pods the file's workloads would create."""
    return [p for p in pods_of(documents) if podinfo.provisionable(p)]


def read_pools(documents: Iterable[JSON]) -> list[GPUNodePool]:
    found = []
    for index, document in enumerate(documents):
        if isinstance(document, dict) and document.get("kind") == GNP_KIND:
            try:
                found.append(GPUNodePool.from_dict(document))
            except ObjectError as err:
                raise ConfigError(f"document {index + 1}: {err}") from err
    return found


async def plan_pods(
    source: Source,
    pods: Sequence[JSON],
    pools: Sequence[GPUNodePool],
    blocked: Callable[[Offer], bool],
) -> Plan:
    requests: list[JSON] = []
    nodes: dict[str, JSON] = {}
    bound: dict[str, list[JSON]] = {}
    every = {p.name: p for p in await _cluster_pools(source)}
    every.update({p.name: p for p in pools})
    if source.client is not None:
        try:
            requests = (
                await source.client.list_all(GPUNODEREQUESTS, label_selector=LABEL_POOL)
            ).items
            for node in (await source.client.list_all(NODES, label_selector=LABEL_POOL)).items:
                nodes[node["metadata"]["labels"].get("gpuctl.io/request", "")] = node
            for pod in (await source.client.list_all(PODS)).items:
                bound.setdefault((pod.get("spec") or {}).get("nodeName") or "", []).append(pod)
        except (ApiError, TransportError) as err:
            raise ConfigError(f"cannot read the cluster's pools' machines: {err}") from err
    if not every:
        raise ConfigError("no GPUNodePool in the file or the cluster: the pods would stay pending")
    offers, notes = await gather(source.drivers)
    snapshot = Snapshot(pods, sorted(every.values(), key=lambda p: p.name), requests, offers, notes)
    return decide(snapshot, blocked, nodes.get, lambda name: bound.get(name, []))


async def _cluster_pools(source: Source) -> list[GPUNodePool]:
    if source.client is None:
        return []
    try:
        listed = await source.client.list_all(GPUNODEPOOLS)
    except (ApiError, TransportError) as err:
        raise ConfigError(f"cannot list GPUNodePools: {err}") from err
    found = []
    for obj in listed.items:
        if not obj["metadata"].get("deletionTimestamp"):
            try:
                found.append(GPUNodePool.from_dict(obj))
            except ObjectError:
                continue  # the provisioner skips it too
    return found


def _pod(pod: JSON) -> str:
    return podinfo.key(pod)


def plan_json(result: Plan) -> JSON:
    return {
        "machines": [
            {
                "pool": m.pool.name,
                "offer": offer_json(m.choice.offer),
                "gpusUsed": m.used,
                "pods": [_pod(p) for p in m.pods],
            }
            for m in result.new
        ],
        "existing": dict(result.onto_existing),
        "unserved": dict(result.unserved),
    }


def render(result: Plan, pods: Sequence[JSON]) -> str:
    gpus = sum(podinfo.gpus(p) for p in pods)
    text = f"{len(pods)} pending pod(s) asking for {gpus} GPU(s)\n"
    rows: list[list[object]] = []
    for machine in result.new:
        offer = machine.choice.offer
        names = ", ".join(_pod(p) for p in machine.pods)
        rows.append([machine.pool.name, offer.provider, offer.native_region, offer.instance_type,
                     f"{offer.gpu_type} x{offer.gpu_count}", offer.capacity_type.value,
                     output.price(offer.price_per_hour), names])  # fmt: skip
    if rows:
        headers = ("pool", "provider", "native-region", "instance-type", "gpus", "capacity", "$/h")
        text += "\nNEW MACHINES\n" + output.table((*headers, "pods"), rows)
    for pod, request in sorted(result.onto_existing.items()):
        text += f"fits existing machine: {pod} -> gpunoderequest/{request}\n"
    for pod, why in sorted(result.unserved.items()):
        text += f"NO MACHINE: {pod}: {why}\n"
    return text
