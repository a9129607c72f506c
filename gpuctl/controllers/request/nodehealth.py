"""Ready: a Node that stops being Ready, or disappears, ends the machine.

kube-controller-manager marks a Node `Ready=Unknown` when its kubelet stops posting
status (node-monitor-grace-period); liveness notices a machine the cloud reports
gone on its next poll, and is made to poll at once when the Node is not Ready
(`liveness._due`), so gpuctl reacts to whichever it sees first. A Node that stays
not Ready — or is gone: a deleted Node never comes back while its kubelet runs —
for `node_unhealthy_after` while the cloud still has the machine means the machine
is broken: it is terminated and replaced, like an interruption (Karpenter's node
repair does the same after its toleration duration).
"""

from __future__ import annotations

from gpuctl.api import ConditionStatus, ConditionType, Phase
from gpuctl.api.meta import get_condition
from gpuctl.controllers.request import liveness
from gpuctl.controllers.request.context import Ctx
from gpuctl.controllers.request.nodes import find_node, is_ready
from gpuctl.providers.base import Instance, NotFoundError
from gpuctl.runtime.reconcile import Result


async def reconcile(ctx: Ctx) -> Result | None:
    instance, offer = ctx.status.instance, ctx.status.offer
    if ctx.status.phase != Phase.READY or instance is None or offer is None:
        return None
    node = find_node(ctx)
    if node is not None and is_ready(node):
        return None
    ready = get_condition(ctx.status.conditions, ConditionType.READY)
    not_ready = ready is not None and ready.status != ConditionStatus.TRUE
    since = ready.last_transition_time if ready is not None and not_ready else ctx.now
    grace = ctx.settings.node_unhealthy_after
    left = (since + grace - ctx.now).total_seconds()
    if left > 0:
        return Result(requeue_after=max(0.05, min(left, ctx.settings.joining_poll)))
    try:
        current: Instance | None = await ctx.services.drivers.get(offer.provider).get(instance.id)
    except NotFoundError:
        current = None
    what = "gone" if node is None else "not Ready"
    why = f"Node {ctx.status.node_name or ctx.instance_name} {what} for {grace}"
    return await liveness.interrupted(ctx, current, reason="NodeUnhealthy", why=why)
