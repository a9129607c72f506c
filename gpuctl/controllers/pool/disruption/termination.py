"""A pool machine's deletion drains its Node first (Karpenter's node termination).

Every pool GPUNodeRequest carries the `gpuctl.io/drain` finalizer. When one is
deleted — by a disruption, by the pool's deletion (ownerReferences), or by a person —
this reconciler (keyed by request) cordons and drains its Node (drain.py) at every
pass and removes the finalizer once no workload pod is left. The request's own
termination waits for that before it terminates the machine, so pods stop gracefully
on a machine that still exists.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from typing import Any

from gpuctl.controllers.pool.disruption import drain, keys
from gpuctl.controllers.pool.disruption.machines import parse_time
from gpuctl.controllers.pool.disruption.settings import DisruptionSettings
from gpuctl.controllers.pool.provisioner import NODE_NAME_INDEX, node_name_index
from gpuctl.controllers.request.nodes import REQUEST_INDEX
from gpuctl.controllers.resources import GPUNODEREQUESTS
from gpuctl.runtime.client import ApiError, Client, is_conflict, is_not_found
from gpuctl.runtime.events import EventRecorder
from gpuctl.runtime.reconcile import Result
from gpuctl.runtime.store import Store

log = logging.getLogger(__name__)

Obj = dict[str, Any]
__all__ = ["NODE_NAME_INDEX", "DrainReconciler", "node_name_index"]


class DrainReconciler:
    def __init__(
        self,
        *,
        requests: Store,
        nodes: Store,
        pods: Store,
        client: Client,
        events: EventRecorder,
        settings: DisruptionSettings,
        clock: Callable[[], datetime.datetime],
    ) -> None:
        self.requests = requests
        self.nodes = nodes
        self.pods = pods
        self.client = client
        self.events = events
        self.settings = settings
        self.clock = clock
        self.said: dict[str, str] = {}  # last Draining message per request (Events only)

    async def reconcile(self, key: str) -> Result:
        try:
            return await self._reconcile(key)
        except ApiError as err:
            if not is_conflict(err):
                raise
            return Result(requeue_after=0.2)  # a stale copy: again with the fresh one

    async def _reconcile(self, key: str) -> Result:
        obj = self.requests.get(key)
        if obj is None:
            return Result()
        meta = obj["metadata"]
        if meta.get("deletionTimestamp") is None or keys.DRAIN_FINALIZER not in (
            meta.get("finalizers") or []
        ):
            return Result()
        for node in self.nodes.by_index(REQUEST_INDEX, meta["name"]):
            bound = list(self.pods.by_index(NODE_NAME_INDEX, node["metadata"]["name"]))
            left = await drain.drain(self.client, node, bound, force=self._grace_over(obj))
            if left:
                message = f"draining Node {node['metadata']['name']}: waiting for " + ", ".join(
                    left[:5]
                )
                if self.said.get(key) != message:  # one Event per change, not per pass
                    self.said[key] = message
                    await self.events.record(obj, "Normal", "Draining", message)
                return Result(requeue_after=self.settings.poll)
        await self._release(obj)
        self.said.pop(key, None)
        return Result()

    def _grace_over(self, obj: Obj) -> bool:
        grace = self.settings.drain_grace
        deleted = parse_time(obj["metadata"].get("deletionTimestamp"))
        return grace is not None and deleted is not None and self.clock() >= deleted + grace

    async def _release(self, obj: Obj) -> None:
        meta = obj["metadata"]
        kept = [f for f in meta.get("finalizers") or [] if f != keys.DRAIN_FINALIZER]
        patch = {"metadata": {"finalizers": kept, "resourceVersion": meta["resourceVersion"]}}
        try:
            await self.client.patch(GPUNODEREQUESTS, meta["name"], patch)
        except Exception as err:
            if is_not_found(err):
                return
            raise
        await self.events.record(obj, "Normal", "Drained", "Node drained; terminating the machine")
