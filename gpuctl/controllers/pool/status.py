"""The pool status reconcile: machines, GPUs, money and conditions, from the cluster.

Per GPUNodePool, from the caches: its GPUNodeRequests (label `gpuctl.io/pool`), their
Nodes and the pods bound to them. Writes `machines`, `launching`, `gpus`,
`gpusInUse`, `pricePerHour` (limits.usage: what the limits count), the conditions and
`observedGeneration`, keeping `lastScaleDecision` as the provisioner and disruption
wrote it (an optimistic write: a conflict re-reads and recomputes).

Conditions:
- `Ready`: True when at least one GPUProvider is Ready (the pool can buy something);
  False `NoReadyProvider` otherwise.
- `LimitReached`: True when a limit leaves no room for one more GPU, machine or
  dollar (`limits.reached`), or the last decision was blocked by a limit; False
  `WithinLimits` otherwise.

It also sets the `gpuctl_pool_*` gauges, and deletes requests that cannot launch
(`liveness`).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import attrs

from gpuctl.api import (
    ConditionType,
    GPUNodePool,
    ObjectError,
    ScaleAction,
    set_condition,
)
from gpuctl.controllers.pool import liveness, metrics
from gpuctl.controllers.pool.inflight import requested_gpus
from gpuctl.controllers.pool.limits import Usage, counts, reached, usage
from gpuctl.controllers.resources import GPUNODEPOOLS
from gpuctl.runtime.client import ApiError, Client, is_conflict, is_not_found
from gpuctl.runtime.events import EventRecorder
from gpuctl.runtime.reconcile import Result, TerminalError
from gpuctl.runtime.status import StatusWriter
from gpuctl.runtime.store import Store

Obj = dict[str, Any]
POOL_INDEX = "pool"  # index of the requests store on label gpuctl.io/pool
NODE_NAME_INDEX = "spec.nodeName"  # index of the pods store
REQUEST_INDEX = "request"  # index of the nodes store on label gpuctl.io/request
CONFLICT_RETRY = 0.1  # seconds: the watch brings the newer object meanwhile


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


@attrs.define
class PoolReconciler:
    pools: Store
    requests: Store  # indexed by POOL_INDEX
    nodes: Store  # indexed by REQUEST_INDEX
    pods: Store  # indexed by NODE_NAME_INDEX
    providers: Store
    client: Client
    status_writer: StatusWriter
    events: EventRecorder
    on_change: Callable[[str], None] = lambda _: None  # tells the provisioner
    clock: Callable[[], datetime.datetime] = _utcnow

    async def reconcile(self, key: str) -> Result:
        obj = self.pools.get(key)
        if obj is None:
            metrics.forget(key)
            self.on_change(f"pool {key} deleted")
            return Result()
        try:
            pool = GPUNodePool.from_dict(obj)
        except ObjectError as err:
            raise TerminalError(f"GPUNodePool {key}: {err}") from err
        mine = list(self.requests.by_index(POOL_INDEX, key))
        removed, recheck = await liveness.remove_stuck(self.client, self.events, mine, self.clock())
        if removed:
            self.on_change(f"pool {key}: requests that cannot launch deleted")
        status = attrs.evolve(pool.status, conditions=list(pool.status.conditions))
        used = usage(mine)
        status.machines, status.gpus, status.price_per_hour = used.machines, used.gpus, used.price
        status.launching = sum(1 for r in mine if counts(r) and not _ready(r))
        status.gpus_in_use = self._in_use(mine)
        status.observed_generation = pool.metadata.generation
        self._conditions(pool, status, used)
        self._gauges(pool, status)
        body = attrs.evolve(pool, status=status).status_to_dict()
        try:
            await self.status_writer.update_status(GPUNODEPOOLS, obj, body)
        except ApiError as err:
            if is_not_found(err):
                return Result()  # deleted meanwhile
            if is_conflict(err):  # the provisioner recorded a decision: recompute on it
                return Result(requeue_after=CONFLICT_RETRY)
            raise
        return Result(requeue_after=recheck) if recheck else Result()

    def _in_use(self, requests: list[Obj]) -> int:
        total = 0
        for request in requests:
            for node in self.nodes.by_index(REQUEST_INDEX, request["metadata"]["name"]):
                total += requested_gpus(
                    self.pods.by_index(NODE_NAME_INDEX, node["metadata"]["name"])
                )
        return total

    def _conditions(self, pool: GPUNodePool, status: Any, used: Usage) -> None:
        now, generation = self.clock(), pool.metadata.generation

        def condition(type_: str, ok: bool, reason: str, message: str) -> None:
            set_condition(
                status.conditions,
                type_,
                ok,
                reason,
                message,
                observed_generation=generation,
                now=now,
            )

        ready = sorted(
            p["metadata"]["name"]
            for p in self.providers.list()
            if _condition_true(p, ConditionType.READY)
        )
        if ready:
            condition(ConditionType.READY, True, "Ready", "GPUProviders ready: " + ", ".join(ready))
        else:
            condition(ConditionType.READY, False, "NoReadyProvider", "no GPUProvider is Ready")
        limit = reached(pool.spec.limits, used)
        decision = status.last_scale_decision
        blocked = decision is not None and decision.action == ScaleAction.BLOCKED
        if limit is None and blocked and "limit reached" in decision.message:
            limit = decision.message
        if limit is not None:
            condition(ConditionType.LIMIT_REACHED, True, "LimitReached", limit)
        else:
            condition(ConditionType.LIMIT_REACHED, False, "WithinLimits", "room for more machines")

    @staticmethod
    def _gauges(pool: GPUNodePool, status: Any) -> None:
        name = pool.name
        metrics.MACHINES.labels(name).set(status.machines)
        metrics.LAUNCHING.labels(name).set(status.launching)
        metrics.GPUS.labels(name).set(status.gpus)
        metrics.GPUS_IN_USE.labels(name).set(status.gpus_in_use)
        metrics.PRICE.labels(name).set(float(status.price_per_hour))
        limits = pool.spec.limits
        values = {
            "gpus": limits.gpus if limits else None,
            "machines": limits.machines if limits else None,
            "price_per_hour_usd": limits.price_per_hour if limits else None,
        }
        for resource, value in values.items():
            if value is None:
                metrics.forget_limit(name, resource)
            else:
                metrics.LIMIT.labels(name, resource).set(float(value))


def _ready(request: Obj) -> bool:
    return (request.get("status") or {}).get("phase") == "Ready"


def _condition_true(obj: Obj, type_: str) -> bool:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == type_:
            return bool(condition.get("status") == "True")
    return False
