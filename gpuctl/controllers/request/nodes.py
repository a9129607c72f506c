"""The Node of a request's machine: found by label and provider ID, labelled, removed."""

from __future__ import annotations

from typing import Any

from gpuctl.api import (
    LABEL_GPU_COUNT,
    LABEL_INSTANCE_TYPE,
    LABEL_POOL,
    LABEL_REGION,
    LABEL_TOPOLOGY_REGION,
)
from gpuctl.controllers.request.context import Ctx
from gpuctl.runtime.client import is_not_found
from gpuctl.runtime.resources import NODES

INSTANCE_INDEX = "instance-name"  # index of the nodes store on label gpuctl.io/instance-name
REQUEST_INDEX = "request"  # index of the nodes store on label gpuctl.io/request


def node_labels(ctx: Ctx) -> dict[str, str]:
    """The machine's Node labels: `spec.node.labels` plus gpuctl's own.

    The same set goes into the join data (the kubelet registers with it) and is
    re-applied once the Node is Ready, so both sides cannot disagree. The well-known
    instance-type and region labels are among those a kubelet may set on itself under
    NodeRestriction; a cloud's names are made label values (at most 63 characters of
    [A-Za-z0-9_.-]). A pool's request also labels its Node with the pool.
    """
    spec, offer = ctx.request.spec, ctx.status.offer
    assert offer is not None
    labels = dict(spec.node.labels) if spec.node else {}
    labels.update(
        {
            "gpuctl.io/request": ctx.name,
            "gpuctl.io/instance-name": ctx.instance_name,
            "gpuctl.io/provider": offer.provider,
            "gpuctl.io/capacity-type": offer.capacity_type.value,
            "gpuctl.io/gpu-type": offer.gpu_type,
            LABEL_GPU_COUNT: str(offer.gpu_count),
            LABEL_REGION: offer.region,
            LABEL_INSTANCE_TYPE: label_value(offer.instance_type),
            LABEL_TOPOLOGY_REGION: label_value(offer.native_region),
        }
    )
    pool = ctx.request.metadata.labels.get(LABEL_POOL)
    if pool:
        labels[LABEL_POOL] = pool
    return labels


def label_value(text: str) -> str:
    """A cloud's name as a label value: at most 63 of [A-Za-z0-9_.-], alphanumeric ends."""
    kept = "".join(c if c.isascii() and (c.isalnum() or c in "_.-") else "_" for c in text)
    return kept[:63].strip("_.-")


def find_node(ctx: Ctx) -> dict[str, Any] | None:
    """The Node labelled with the attempt's instance name whose provider ID, if set, names it."""
    instance = ctx.status.instance
    for node in ctx.services.nodes.by_index(INSTANCE_INDEX, ctx.instance_name):
        provider_id = node.get("spec", {}).get("providerID", "")
        if not provider_id or instance is None or provider_id.endswith("/" + instance.id):
            return node
    return None


def is_ready(node: dict[str, Any]) -> bool:
    for condition in node.get("status", {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return False


def request_nodes(ctx: Ctx) -> list[dict[str, Any]]:
    return list(ctx.services.nodes.by_index(REQUEST_INDEX, ctx.name))


async def delete_node(ctx: Ctx, name: str) -> None:
    """Delete the Node; a missing one is fine. Not cordoned first: every caller has
    terminated the machine already and a Node goes at once (no finalizer), so a cordon
    would only be one more write with no window for it to matter."""
    try:
        await ctx.services.client.delete(NODES, name)
    except Exception as err:
        if not is_not_found(err):
            raise


async def delete_request_nodes(ctx: Ctx) -> None:
    names = {n["metadata"]["name"] for n in request_nodes(ctx)}
    if ctx.status.node_name:
        names.add(ctx.status.node_name)
    for name in sorted(names):
        await delete_node(ctx, name)
