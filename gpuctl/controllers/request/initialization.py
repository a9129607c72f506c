"""Joining -> Ready: the Node is Ready and advertises its GPUs; label and taint it.

Like Karpenter's initialization, a Ready kubelet is not enough: the machine is Ready
only once the Node's allocatable GPU resource (registered by the device plugin, which
starts after the kubelet) covers the offer's GPU count — before that no GPU pod can be
scheduled on it. The resource is the GPU type's vendor's (`catalog.gpu_resource`):
`nvidia.com/gpu`, or `amd.com/gpu` for AMD parts such as MI300X-192GB.

Labels: `spec.node.labels` plus gpuctl's own (request, instance name, provider,
capacity type, GPU type). Taints: `spec.node.taints` added to whatever the Node has.
Provider ID: `gpuctl://<cloud>/<region>/<instance id>` when the kubelet set none.
Both are patched only when missing, so re-running changes nothing. Once Ready,
the Ready condition follows the Node's own readiness, and the attempt's bootstrap
token is deleted: it served its one join and must not serve another. Ready records no
Event of its own (the way up's one Event is `Launched`, the money decision): the
phase, the Ready condition's lastTransitionTime, `readyAt` and the message ("Node X
Ready 19s after launch") say it. Its write carries whatever news of the booting
machine was held back (`coalesce`).
"""

from __future__ import annotations

from typing import Any

from gpuctl.api import ConditionType, Phase
from gpuctl.api.constants import GPU_RESOURCE_NVIDIA
from gpuctl.controllers.metrics import LAUNCH_TO_READY
from gpuctl.controllers.request.context import Ctx
from gpuctl.controllers.request.nodes import find_node, is_ready, node_labels
from gpuctl.controllers.request.tokens import delete_token
from gpuctl.providers import catalog
from gpuctl.runtime.reconcile import Result
from gpuctl.runtime.resources import NODES


def provider_id(ctx: Ctx) -> str:
    """`gpuctl://<cloud>/<native region>/<instance id>`: what a cloud-controller-manager
    would set. The kubelet cannot (the id is the cloud's answer to the launch, after the
    join data was written), so gpuctl sets it once, from "" (the only change the API
    server allows)."""
    offer, instance = ctx.status.offer, ctx.status.instance
    assert offer is not None and instance is not None
    return f"gpuctl://{offer.cloud}/{offer.native_region}/{instance.id}"


def _patch(ctx: Ctx, node: dict[str, Any]) -> dict[str, Any]:
    patch: dict[str, Any] = {}
    spec: dict[str, Any] = {}
    if not node.get("spec", {}).get("providerID"):
        spec["providerID"] = provider_id(ctx)
    current = node["metadata"].get("labels") or {}
    missing = {k: v for k, v in node_labels(ctx).items() if current.get(k) != v}
    if missing:
        patch["metadata"] = {"labels": missing}
    taints = list(node.get("spec", {}).get("taints") or [])
    have = {(t.get("key"), t.get("effect")) for t in taints}
    wanted = ctx.request.spec.node.taints if ctx.request.spec.node else []
    added = [
        {"key": t.key, "effect": t.effect.value, **({"value": t.value} if t.value else {})}
        for t in wanted
        if (t.key, t.effect.value) not in have
    ]
    if added:
        spec["taints"] = taints + added
    if spec:
        patch["spec"] = spec
    return patch


def gpus_advertised(node: dict[str, Any], resource: str = GPU_RESOURCE_NVIDIA) -> int:
    allocatable = node.get("status", {}).get("allocatable") or {}
    try:
        return int(allocatable.get(resource, "0"))
    except ValueError:
        return 0


async def reconcile(ctx: Ctx) -> Result | None:
    offer = ctx.status.offer
    if ctx.status.instance is None or offer is None:
        return None
    node = find_node(ctx)
    if node is None or not is_ready(node):
        if ctx.status.phase == Phase.READY:
            ctx.condition(ConditionType.READY, False, "NodeNotReady", "the Node is not Ready")
        return None
    resource = catalog.gpu_resource(offer.gpu_type)
    if ctx.status.phase != Phase.READY and gpus_advertised(node, resource) < offer.gpu_count:
        ctx.status.message = (
            f"Node {node['metadata']['name']} Ready; waiting for it to advertise "
            f"{offer.gpu_count} {resource} (device plugin)"
        )
        return Result(requeue_after=ctx.settings.joining_poll)
    patch = _patch(ctx, node)
    if patch:
        await ctx.services.client.patch(NODES, node["metadata"]["name"], patch)
    ctx.condition(ConditionType.READY, True, "NodeReady", f"Node {node['metadata']['name']} Ready")
    if ctx.status.phase == Phase.READY:
        return None
    ctx.status.phase = Phase.READY
    ctx.status.ready_at = ctx.now
    await delete_token(ctx, ctx.status.attempt)  # joined: the token has done its one job
    ctx.condition(ConditionType.INTERRUPTED, False, "Running", "the machine is running")
    instance = ctx.status.instance
    took = (ctx.now - (instance.launched_at or ctx.now)).total_seconds()
    LAUNCH_TO_READY.labels(offer.provider).observe(took)
    # No Event: the way up's one is `Launched` (what was bought, at what price). Ready
    # shows as the phase, the Ready condition (dated), `readyAt` and this message.
    ctx.status.message = f"Node {node['metadata']['name']} Ready {took:.0f}s after launch"
    return None
