"""The disruption controller: one reconcile per GPUNodePool (Karpenter's disruption loop).

Each pass, from the informers' caches only:
1. bookkeeping on the pool's GPUNodeRequests: the `gpuctl.io/drain` finalizer, and
   the last pod event (a digest of the set of pods on the Node; when it changes,
   `gpuctl.io/last-pod-event` is set to now — consolidateAfter counts from it);
2. disruptions under way (marked requests) move on (orchestration.progress);
3. the budgets say how many more may start, per reason (budgets.py), counting from
   the cluster what is already disrupting;
4. candidates (candidates.py) go to the methods in Karpenter's order — expiration,
   emptiness, consolidation — and the first that decides something starts it
   (orchestration.start). Every decision is an Event on the pool and the request
   with the money it saves; a machine due but blocked gets a DisruptionBlocked Event;
5. it comes back when the next machine becomes due, or after `poll` while anything
   is under way or waits on a budget.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from gpuctl.controllers.pool.disruption import (
    budgets,
    candidates,
    consolidation,
    emptiness,
    expiration,
    fit,
    keys,
    orchestration,
    pdbs,
    policy,
)
from gpuctl.controllers.pool.disruption.command import (
    EMPTY,
    EXPIRED,
    UNDERUTILIZED,
    Command,
    Replacement,
)
from gpuctl.controllers.pool.disruption.machines import (
    Machine,
    build,
    format_time,
    node_ready,
    parse_time,
    pods_digest,
)
from gpuctl.controllers.pool.disruption.metrics import ABANDONED, ALLOWED, BLOCKED, DECISIONS
from gpuctl.controllers.pool.disruption.metrics import SAVINGS as SAVINGS_METRIC
from gpuctl.controllers.pool.disruption.replacement import Finder, same_shape
from gpuctl.controllers.pool.disruption.settings import DisruptionSettings
from gpuctl.controllers.pool.disruption.termination import NODE_NAME_INDEX
from gpuctl.controllers.pool.status import POOL_INDEX
from gpuctl.controllers.request.nodes import REQUEST_INDEX
from gpuctl.controllers.resources import GPUNODEREQUESTS
from gpuctl.runtime.client import ApiError, Client, is_conflict
from gpuctl.runtime.events import EventRecorder, EventType
from gpuctl.runtime.reconcile import Result, TerminalError
from gpuctl.runtime.store import Store

log = logging.getLogger(__name__)

Obj = dict[str, Any]
# The replacement finder for one pool, from the providers' catalogs (planned.finder).
Catalog = Callable[[Obj], Awaitable[Finder]]
REASONS = (EXPIRED, EMPTY, UNDERUTILIZED)


class DisruptionReconciler:
    def __init__(
        self,
        *,
        pools: Store,
        requests: Store,
        nodes: Store,
        pods: Store,
        pdbs_store: Store,
        client: Client,
        events: EventRecorder,
        settings: DisruptionSettings,
        clock: Callable[[], datetime.datetime],
        find_replacement: Finder = same_shape,
        catalog: Catalog | None = None,
    ) -> None:
        self.pools = pools
        self.requests = requests
        self.nodes = nodes
        self.pods = pods
        self.pdbs = pdbs_store
        self.client = client
        self.events = events
        self.settings = settings
        self.clock = clock
        self.find_replacement = find_replacement
        self.catalog = catalog
        self.said: dict[str, str] = {}  # last DisruptionBlocked message per request

    async def reconcile(self, key: str) -> Result:
        try:
            return await self._reconcile(key)
        except ApiError as err:
            if not is_conflict(err):
                raise
            # A write lost to a newer version (the request controller writes status
            # too): decide again from the fresh copy the watch brings.
            return Result(requeue_after=0.2)

    async def _reconcile(self, key: str) -> Result:
        pool = self.pools.get(key)
        if pool is None or pool["metadata"].get("deletionTimestamp"):
            return Result()  # its requests go with it (ownerReferences), drained
        try:
            rules = policy.read(pool)
        except ValueError as err:
            raise TerminalError(f"GPUNodePool {key}: {err}") from err
        now = self.clock()
        machines = [await self._bookkeeping(m, now) for m in self._machines(key, rules)]
        waiting = False
        for machine in machines:
            if machine.disruption and not machine.deleting:
                waiting = await self._progress(pool, machine, now) or waiting
        machines = self._machines(key, rules)
        limits = [pdbs.Limit.from_object(p) for p in self.pdbs.list()]
        pending = candidates.pending_pods(self.pods.list())
        found, blocked = candidates.split(machines, limits, pending)
        found = [m for m in found if not self._resting(m, now)]
        allowed = self._allowed(key, rules, machines, now)
        find = await self._finder(pool, rules, found, now)
        commands, stuck = self._decide(pool, rules, found, allowed, now, find=find)
        for command in commands:
            await self._start(pool, command, now)
        due_blocked = await self._report_blocked(pool, rules, blocked, stuck, now)
        BLOCKED.labels(key).set(due_blocked)
        return self._next(rules, found, now, busy=waiting or bool(commands) or due_blocked > 0)

    # -- reading the cluster -------------------------------------------------------

    def _machines(self, pool: str, rules: policy.Policy) -> list[Machine]:
        requests = list(self.requests.by_index(POOL_INDEX, pool))
        nodes: dict[str, Obj] = {}
        pods_by_node: dict[str, list[Obj]] = {}
        for obj in requests:
            name = obj["metadata"]["name"]
            for node in self.nodes.by_index(REQUEST_INDEX, name):
                nodes[name] = node
                node_name = node["metadata"]["name"]
                pods_by_node[node_name] = list(self.pods.by_index(NODE_NAME_INDEX, node_name))
        return build(requests, nodes, pods_by_node, rules.startup_taints)

    def _rooms(self, without: set[str]) -> list[fit.Room]:
        """Nodes pods may move to: Ready, schedulable, not disrupted, not in `without`;
        with the room pending pods would take first (Karpenter simulates them too: a
        machine is not freed by moving its pods where waiting pods are about to go)."""
        rooms = []
        for node in self.nodes.list():
            name = node["metadata"]["name"]
            request = (node["metadata"].get("labels") or {}).get("gpuctl.io/request", "")
            owner = self.requests.get(request) or {"metadata": {}}
            going = owner["metadata"].get("deletionTimestamp") or (
                (owner["metadata"].get("annotations") or {}).get(keys.DISRUPTION)
            )
            if name in without or going or not node_ready(node) or not fit.schedulable(node):
                continue
            taints = (node.get("spec") or {}).get("taints") or []
            if any(t.get("key") == keys.DISRUPTED_TAINT for t in taints):
                continue
            rooms.append(fit.Room.of(node, self.pods.by_index(NODE_NAME_INDEX, name)))
        fit.place(candidates.pending_pods(self.pods.list()), rooms)
        return rooms

    # -- bookkeeping ---------------------------------------------------------------

    async def _bookkeeping(self, machine: Machine, now: datetime.datetime) -> Machine:
        """The drain finalizer and the last pod event, in one patch when either is due."""
        if machine.deleting:
            return machine
        meta = machine.obj["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        annotations = machine.annotations
        digest = pods_digest(machine.pods)
        recorded = annotations.get(keys.PODS_DIGEST, pods_digest(()))
        patch: Obj = {"metadata": {"resourceVersion": meta["resourceVersion"]}}
        if keys.DRAIN_FINALIZER not in finalizers:
            patch["metadata"]["finalizers"] = [*finalizers, keys.DRAIN_FINALIZER]
        if digest != recorded:
            patch["metadata"]["annotations"] = {
                keys.PODS_DIGEST: digest,
                keys.LAST_POD_EVENT: format_time(now),
            }
        if len(patch["metadata"]) == 1:
            return machine
        updated = await self.client.patch(GPUNODEREQUESTS, machine.name, patch)
        return Machine(obj=updated, node=machine.node, pods=machine.pods)

    # -- under way -----------------------------------------------------------------

    async def _progress(self, pool: Obj, machine: Machine, now: datetime.datetime) -> bool:
        """Move a marked machine on; True while it waits for its replacements."""
        by_name = {
            o["metadata"]["name"]: o
            for o in self.requests.by_index(POOL_INDEX, pool["metadata"]["name"])
        }
        outcome = await orchestration.progress(
            self.client,
            pool,
            machine,
            by_name,
            now=now,
            give_up_after=self.settings.replacement_timeout,
        )
        reason = machine.disruption or ""
        if outcome.state == "abandoned":
            ABANDONED.labels(pool["metadata"]["name"], reason).inc()
            message = f"{reason} disruption of {machine.name} abandoned: {outcome.message}"
            await self._event(pool, machine, "Warning", "DisruptionAbandoned", message)
        elif outcome.state == "deleted":
            message = f"{reason}: {machine.name} deleted; {outcome.message}".rstrip("; ")
            await self._event(pool, machine, "Normal", "Disrupted", message)
        return outcome.state == "waiting"

    # -- deciding ------------------------------------------------------------------

    def _resting(self, machine: Machine, now: datetime.datetime) -> bool:
        """A disruption of it was abandoned lately: not tried again yet."""
        at = parse_time(machine.annotations.get(keys.ABANDONED))
        return at is not None and now < at + self.settings.retry_after

    def _allowed(
        self, pool: str, rules: policy.Policy, machines: list[Machine], now: datetime.datetime
    ) -> dict[str, int]:
        counted = [m for m in machines if m.initialized]
        disrupting = sum(1 for m in counted if m.deleting or m.disruption or not node_ready(m.node))
        allowed = {}
        for reason in REASONS:
            allowed[reason] = budgets.remaining(
                rules.budgets, reason, len(counted), disrupting, now
            )
            ALLOWED.labels(pool, reason).set(min(allowed[reason], budgets.UNLIMITED))
        return allowed

    async def _finder(
        self, pool: Obj, rules: policy.Policy, found: list[Machine], now: datetime.datetime
    ) -> Finder:
        """The catalog-backed finder when a machine may need one (the catalog costs calls)."""
        if self.catalog is None:
            return self.find_replacement
        expiring = expiration.next_due(found, rules.expire_after)
        quiet = [
            m
            for m in found
            if not m.empty
            and (at := emptiness.consolidatable_at(m, rules.consolidate_after)) is not None
            and at <= now
        ]
        underused = rules.consolidation == policy.WHEN_EMPTY_OR_UNDERUTILIZED and bool(quiet)
        if not underused and (expiring is None or expiring > now):
            return self.find_replacement
        try:
            return await self.catalog(pool)
        except Exception as err:  # a catalog away must not stop removals
            log.warning("no catalog for replacements (%s); a machine like each one", err)
            return self.find_replacement

    def _decide(
        self,
        pool: Obj,
        rules: policy.Policy,
        found: list[Machine],
        allowed: dict[str, int],
        now: datetime.datetime,
        *,
        find: Finder,
    ) -> tuple[list[Command], list[tuple[Machine, str]]]:
        """The first method that decides something wins the round (as Karpenter's loop)."""

        def replacement(moving: list[Obj]) -> Replacement | None:
            owner = self._owner_of(found, moving)
            return find(pool, owner, moving) if owner else None

        expired_nodes = {
            m.node_name
            for m in found
            if m.node_name
            and (at := expiration.expires_at(m, rules.expire_after)) is not None
            and at <= now
        }
        stuck: list[tuple[Machine, str]] = []
        if allowed[EXPIRED] > 0 and expired_nodes:
            rooms = self._rooms({n for n in expired_nodes if n})
            outcome = expiration.commands(
                found,
                rules.expire_after,
                now,
                allowed[EXPIRED],
                rooms=rooms,
                find_replacement=replacement,
            )
            stuck = outcome.stuck
            if outcome.commands:
                return outcome.commands, stuck
        if rules.consolidate_after is None:
            return [], stuck
        empties = emptiness.commands(found, rules.consolidate_after, now, allowed[EMPTY])
        if empties:
            return empties, stuck
        if rules.consolidation != policy.WHEN_EMPTY_OR_UNDERUTILIZED or allowed[UNDERUTILIZED] < 1:
            return [], stuck
        chosen = consolidation.command(
            found,
            rules.consolidate_after,
            now,
            lambda m: self._rooms({m.node_name} if m.node_name else set()),
            replacement,
        )
        return ([chosen] if chosen else []), stuck

    @staticmethod
    def _owner_of(found: list[Machine], moving: list[Obj]) -> Machine | None:
        """The machine the moving pods are bound to."""
        names = {(p.get("spec") or {}).get("nodeName") for p in moving}
        return next((m for m in found if m.node_name in names), None)

    async def _start(self, pool: Obj, command: Command, now: datetime.datetime) -> None:
        name = pool["metadata"]["name"]
        await orchestration.start(self.client, command, name, now)
        action = "replace" if command.replacements else "delete"
        DECISIONS.labels(name, command.reason, action).inc()
        SAVINGS_METRIC.labels(name, command.reason).inc(float(max(command.savings, Decimal(0))))
        await self._event(pool, command.machine, "Normal", "Disrupting", command.describe())

    async def _report_blocked(
        self,
        pool: Obj,
        rules: policy.Policy,
        blocked: list[candidates.Blocked],
        stuck: list[tuple[Machine, str]],
        now: datetime.datetime,
    ) -> int:
        """DisruptionBlocked Events for machines that are due; how many there are."""
        due: list[tuple[Machine, str]] = list(stuck)
        for item in blocked:
            machine = item.machine
            if machine.deleting or machine.disruption or not machine.initialized:
                continue
            expired = expiration.expires_at(machine, rules.expire_after)
            quiet = emptiness.consolidatable_at(machine, rules.consolidate_after)
            underused = rules.consolidation == policy.WHEN_EMPTY_OR_UNDERUTILIZED
            if (expired is not None and expired <= now) or (
                quiet is not None and quiet <= now and (machine.empty or underused)
            ):
                due.append((machine, item.reason))
        for machine, reason in due:
            message = f"{machine.name} is not disrupted: {reason}"
            if self.said.get(machine.name) != message:
                self.said[machine.name] = message
                await self._event(pool, machine, "Normal", "DisruptionBlocked", message)
        return len(due)

    async def _event(
        self, pool: Obj, machine: Machine, type_: EventType, reason: str, message: str
    ) -> None:
        await self.events.record(pool, type_, reason, message)
        await self.events.record(machine.obj, type_, reason, message)
        log.info("%s: %s", reason, message, extra={"pool": pool["metadata"]["name"]})

    # -- when to come back ---------------------------------------------------------

    def _next(
        self, rules: policy.Policy, found: list[Machine], now: datetime.datetime, *, busy: bool
    ) -> Result:
        """At the next machine's due time; every `poll` while something is under way or
        a candidate is due but waits (on a budget whose window may open, on room for
        its pods): those change without an event on the pool's objects."""
        underused = rules.consolidation == policy.WHEN_EMPTY_OR_UNDERUTILIZED
        quiet = [m for m in found if m.empty or underused]
        times = [
            emptiness.next_due(quiet, rules.consolidate_after),
            expiration.next_due(found, rules.expire_after),
        ]
        future = [(t - now).total_seconds() for t in times if t is not None and t > now]
        waiting = any(t is not None and t <= now for t in times)
        delays = [*future, *([self.settings.poll] if busy or waiting else [])]
        return Result(requeue_after=min(delays)) if delays else Result()
