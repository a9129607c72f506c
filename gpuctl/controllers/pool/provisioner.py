"""The provisioner: pending GPU pods in, GPUNodeRequests out (Karpenter's Provisioner).

Pod events that make a pod provisionable `trigger` the batcher; when its window
closes (or every `resync` seconds while such pods exist) one round runs:

1. read: provisionable pods and pools from the caches; the pools' GPUNodeRequests
   from the API server itself (a quorum list, never a cache: the limits and the
   machines already launching must include a create this process sent a moment ago,
   and everything an operator killed mid-burst had created);
2. offers: every provider's catalog once (`offers.gather`), each pool's candidates;
3. plan: `binpack.plan` (existing and launching machines first, then the cheapest new
   ones within the limits);
4. act: create the planned requests (`launcher`), then an Event on each pod left
   (`FailedScheduling`, naming for each pool why) and on each pod given a machine
   (`Nominated`), the decision on each pool (Event + `status.lastScaleDecision`).

Only the leader runs it, one round at a time, so two rounds never buy for the same
pods; a round that fails (API server away, ...) is retried at the next trigger or
resync, deciding again from what the cluster holds.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import attrs

from gpuctl.api import LABEL_POOL, GPUNodePool, ObjectError, ScaleAction, ScaleDecision
from gpuctl.api.convert import unstructure
from gpuctl.controllers.pool import members, metrics
from gpuctl.controllers.pool import pods as podinfo
from gpuctl.controllers.pool.batcher import Batcher
from gpuctl.controllers.pool.binpack import NewMachine, Plan
from gpuctl.controllers.pool.launcher import request_body
from gpuctl.controllers.pool.offers import Drivers, gather
from gpuctl.controllers.pool.planning import Snapshot, decide
from gpuctl.controllers.resources import GPUNODEPOOLS, GPUNODEREQUESTS
from gpuctl.providers.base import Offer
from gpuctl.runtime.client import Client
from gpuctl.runtime.events import EventRecorder, EventType
from gpuctl.runtime.store import Store
from gpuctl.util.crashpoints import crash_point

log = logging.getLogger(__name__)

Obj = dict[str, Any]
NODE_NAME_INDEX = "spec.nodeName"  # index of the pods store
REQUEST_INDEX = "request"  # index of the nodes store on label gpuctl.io/request
EVENT_WRITERS = 8  # pod Events written at once


def node_name_index(pod: Obj) -> list[str]:
    name = (pod.get("spec") or {}).get("nodeName")
    return [str(name)] if name else []


@attrs.frozen
class ProvisionerSettings:
    batch_idle: float = 1.0  # Karpenter's BATCH_IDLE_DURATION
    batch_max: float = 10.0  # Karpenter's BATCH_MAX_DURATION
    resync: float = 30.0  # re-plan this often while provisionable pods exist


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def _reason_kind(why: str) -> str:
    if "limit reached" in why:
        return "limit"
    if "no offer" in why:
        return "no_offer"
    if why == "no GPUNodePool":
        return "no_pool"
    return "constraints"


@attrs.define
class Provisioner:
    client: Client
    pools: Store
    pods: Store  # indexed by NODE_NAME_INDEX
    nodes: Store  # gpuctl's Nodes, indexed by REQUEST_INDEX
    drivers: Drivers
    blocked: Callable[[Offer], bool]  # the capacity-error cache
    events: EventRecorder
    settings: ProvisionerSettings = attrs.field(factory=ProvisionerSettings)
    batcher: Batcher = attrs.field(init=False)
    _background: set[asyncio.Task[None]] = attrs.field(init=False, factory=set)

    def __attrs_post_init__(self) -> None:
        self.batcher = Batcher(self.settings.batch_idle, self.settings.batch_max)

    # -- triggers (informer handlers) ------------------------------------------------

    def on_pod(self, pod: Obj) -> None:
        if podinfo.provisionable(pod):
            self.batcher.trigger(podinfo.key(pod))

    def poke(self, reason: str) -> None:
        """A change that may make room for waiting pods (a pool, a deleted request)."""
        self.batcher.trigger(f"~{reason}")

    # -- the loop ----------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            await self.batcher.wait(poll=self.settings.resync)
            if not any(podinfo.provisionable(p) for p in self.pods.list()):
                continue
            try:
                await self.provision()
            except asyncio.CancelledError:
                raise
            except Exception:
                metrics.ROUNDS.labels("error").inc()
                log.exception("provisioning round failed; retrying at the next trigger")

    async def provision(self) -> Plan | None:
        started = time.monotonic()
        pending = [p for p in self.pods.list() if podinfo.provisionable(p)]
        metrics.PENDING.set(len(pending))
        pools = self._pools()
        if not pending or not pools:
            return None  # no pool: the pods are not gpuctl's to serve
        metrics.BATCH.observe(len(pending))
        requests = (await self.client.list_all(GPUNODEREQUESTS, label_selector=LABEL_POOL)).items
        offers, notes = await gather(self.drivers)
        snapshot = Snapshot(pending, pools, requests, offers, notes)
        result = decide(snapshot, self.blocked, self._node_of, self._pods_on)
        created = await self._launch(pools, result)
        await self._report(pools, pending, result, created)
        metrics.DURATION.observe(time.monotonic() - started)
        return result

    # -- reading -------------------------------------------------------------------------

    def _pools(self) -> list[GPUNodePool]:
        found = []
        for obj in self.pools.list():
            if obj["metadata"].get("deletionTimestamp"):
                continue  # a pool being deleted buys nothing more
            try:
                found.append(GPUNodePool.from_dict(obj))
            except ObjectError as err:
                log.warning("GPUNodePool %s unreadable: %s", obj["metadata"]["name"], err)
        return sorted(found, key=lambda p: p.name)

    def _node_of(self, request: str) -> Obj | None:
        found = self.nodes.by_index(REQUEST_INDEX, request)
        return found[0] if found else None

    def _pods_on(self, node: str) -> list[Obj]:
        return list(self.pods.by_index(NODE_NAME_INDEX, node))

    # -- acting --------------------------------------------------------------------------

    async def _launch(self, pools: Sequence[GPUNodePool], result: Plan) -> dict[int, str]:
        """Create the planned requests; id(machine) -> request name (created or found)."""
        by_name = {p.name: p for p in pools}
        names: dict[int, str] = {}
        for machine in result.new:
            pool = by_name[machine.pool.name]
            body = request_body(pool, machine)
            if await members.create(self.client, body):
                metrics.CREATED.labels(pool.name).inc()
                crash_point("pool-after-create")
            names[id(machine)] = body["metadata"]["name"]
        return names

    async def _report(
        self,
        pools: Sequence[GPUNodePool],
        pending: Sequence[Obj],
        result: Plan,
        created: dict[int, str],
    ) -> None:
        kind = "scale_up" if result.new else ("blocked" if result.unserved else "none")
        metrics.ROUNDS.labels(kind).inc()
        for pool in pools:
            await self._decide(pool, result)
        by_key = {podinfo.key(p): p for p in pending}
        notes: list[tuple[Obj, EventType, str, str]] = []
        for machine in result.new:
            message = f"Pod should schedule on: gpunoderequest/{created[id(machine)]}"
            notes += [(pod, "Normal", "Nominated", message) for pod in machine.pods]
        for key, why in result.unserved.items():
            metrics.UNSERVED.labels(_reason_kind(why)).inc()
            message = f"gpuctl could not provision a machine for the pod: {why}"
            notes.append((by_key[key], "Warning", "FailedScheduling", message))
        # One Event per pod: written in the background, a few at a time, so that a
        # burst's hundreds of Events never delay the next round.
        task = asyncio.create_task(self._pod_events(notes))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _pod_events(self, notes: Sequence[tuple[Obj, EventType, str, str]]) -> None:
        limit = asyncio.Semaphore(EVENT_WRITERS)

        async def one(pod: Obj, type_: EventType, reason: str, message: str) -> None:
            async with limit:
                await self.events.record(pod, type_, reason, message)

        await asyncio.gather(*(one(*note) for note in notes))

    async def _decide(self, pool: GPUNodePool, result: Plan) -> None:
        mine = [m for m in result.new if m.pool.name == pool.name]
        blocked = [why for why in result.unserved.values() if f"pool {pool.name}: " in why]
        if not mine and not blocked:
            return
        decision = _decision(pool, mine, blocked)
        obj = pool.to_dict()
        if mine:
            await self.events.record(obj, "Normal", "ScaleUp", decision.message)
        else:
            reason = "LimitReached" if decision.message.find("limit reached") >= 0 else "NoOffer"
            await self.events.record(obj, "Warning", reason, decision.message)
        patch = {"status": {"lastScaleDecision": unstructure(decision)}}
        try:
            await self.client.patch(GPUNODEPOOLS, pool.name, patch, subresource="status")
        except Exception as err:  # the decision stands; only its record is lost
            log.warning("GPUNodePool %s: recording the decision failed: %s", pool.name, err)


def _decision(
    pool: GPUNodePool, mine: Sequence[NewMachine], blocked: Sequence[str]
) -> ScaleDecision:
    now = _utcnow()
    if mine:
        price = sum((m.choice.price for m in mine), Decimal(0))
        pods = sum(len(m.pods) for m in mine)
        shapes = ", ".join(m.choice.describe() for m in mine[:5])
        more = f" and {len(mine) - 5} more" if len(mine) > 5 else ""
        message = f"launching {len(mine)} machine(s) for {pods} pod(s): {shapes}{more}"
        if blocked:
            message += f"; {len(blocked)} pod(s) still wait"
        return ScaleDecision(
            at=now,
            action=ScaleAction.SCALE_UP,
            machines=len(mine),
            pods=pods + len(blocked),
            price_per_hour=price,
            message=message[:4096],
        )
    prefix = f"pool {pool.name}: "
    reasons = sorted({why.split(prefix, 1)[1].split("; pool ")[0] for why in blocked})
    message = f"{len(blocked)} pod(s) wait: " + "; ".join(reasons)
    return ScaleDecision(
        at=now, action=ScaleAction.BLOCKED, pods=len(blocked), message=message[:4096]
    )
