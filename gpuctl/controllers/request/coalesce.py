"""Informational status changes on the way up, held to go out with the next write.

Between a machine's launch and its Node being Ready, three changes are only news: the
first poll sees the machine running (the instance's state and IP, the phase
Provisioning -> Joining), the Node registers (the Registered condition, `nodeName`),
and a Ready Node waits for its GPUs (the message). Each was a status write of its own,
and the write that must happen anyway, Ready, usually follows within a minute. Such a
change is now held in this process's memory for at most `Settings.status_coalesce`
(`gpuctl run --status-coalesce`, 60 s; 0 turns holding off), counted from the first
change held for the attempt, and goes out with the next write the request makes, or
on its own when the window ends. Nothing is lost, only shown up to the window late,
and the times shown do not move: the Registered condition is dated by the Node's
`creationTimestamp` (`registration`), Ready by its own write.

What may be held (`informational`): a status that differs from the one the API server
holds only in the instance's state and IP, the phase Provisioning -> Joining,
`nodeName`, the Registered condition turning True, the message, and the cost figure
(brought up to date at a phase change; its readers add the running part anyway) --
for the same attempt and the same machine, with no Event to record, no step asking for
its decision to be written (`ctx.stop()`: the offer and attempt before a create, the
machine after its launch, an interruption, a registration timeout), no error, and not
while the request is being deleted. Everything else is written at once, as before,
and carries whatever was held with it, so holding never delays a write money safety
needs.

Where a hold lives (`Holds`): by request key, with the request's uid, the attempt, the
status the API server held when it was computed, and when the first change was held.
A reconcile of that request starts from the held status while the cached status is
still that one: the hold survives re-reads of the cache, and a change of metadata or
spec alone (a label; the deletion's timestamp, so a teardown starts from what was
seen and writes it with its first write). A cached status that differs (another
writer) starts from the cache and re-derives what was held -- the next poll sees the
machine again, the Node is in the informer's cache -- without restarting the window.
A new attempt or a write ends the hold. A restart loses it and re-derives it the same
way (the first poll after a restart is at once). A held reconcile requeues its key for
the window's end (merged with the steps' own requeue, the soonest wins): the write is
not left to a later event. The "written once, only if changed" rule is
`StatusWriter`'s, unchanged.
"""

from __future__ import annotations

import copy
import datetime
from typing import Any

import attrs

from gpuctl.api import ConditionStatus, ConditionType, GPUNodeRequest, GPUNodeRequestStatus, Phase
from gpuctl.api.meta import Condition, get_condition
from gpuctl.controllers.request.context import Ctx

# Phases between a launch and Ready in which a change may be news only.
_BOOTING = (Phase.PROVISIONING, Phase.JOINING)


@attrs.define
class Held:
    uid: str
    attempt: int
    base: Any  # the status (JSON) the API server held when `status` was computed
    status: GPUNodeRequestStatus  # what would have been written
    since: datetime.datetime  # when the attempt's first held change was seen


def informational(before: GPUNodeRequestStatus, after: GPUNodeRequestStatus) -> bool:
    """`after` differs from `before` (what the API server holds) only in news about a
    booting machine of the same attempt: see the module docstring."""
    was, now = before.instance, after.instance
    if was is None or now is None or was.id != now.id:
        return False
    if before.phase not in _BOOTING or after.phase not in _BOOTING:
        return False
    if (before.phase, after.phase) == (Phase.JOINING, Phase.PROVISIONING):
        return False
    registered = get_condition(after.conditions, ConditionType.REGISTERED)
    was_registered = get_condition(before.conditions, ConditionType.REGISTERED)
    turned = registered.status if registered is not None and registered != was_registered else None
    if turned not in (None, ConditionStatus.TRUE):
        return False  # only the Node registering is news; the rest comes with an Event
    masked = attrs.evolve(
        after,
        phase=before.phase,
        node_name=before.node_name,
        message=before.message,
        cost=before.cost,
        instance=attrs.evolve(now, state=was.state, public_ip=was.public_ip),
        conditions=_registered_as(after.conditions, before.conditions),
    )
    return masked == before


def _registered_as(after: list[Condition], before: list[Condition]) -> list[Condition]:
    """`after`'s conditions with the Registered one as it is in `before` (or absent)."""
    old = get_condition(before, ConditionType.REGISTERED)
    kept: list[Condition] = []
    for condition in after:
        if condition.type != ConditionType.REGISTERED:
            kept.append(condition)
        elif old is not None:
            kept.append(old)
    return kept


class Holds:
    """This process's held statuses, by request key (see the module docstring)."""

    def __init__(self) -> None:
        self._held: dict[str, Held] = {}

    def __len__(self) -> int:
        return len(self._held)

    def start(self, key: str, obj: dict[str, Any], request: GPUNodeRequest) -> GPUNodeRequestStatus:
        """The status a reconcile starts from: the held one while the cached status is
        the one it was computed from, else a copy of the cached status."""
        held = self._current(key, request)
        if held is not None and held.base == (obj.get("status") or {}):
            return copy.deepcopy(held.status)
        return copy.deepcopy(request.status)

    def hold(self, ctx: Ctx, *, error: bool) -> float | None:
        """Seconds to hold this reconcile's status back, or None: write it now."""
        window = ctx.settings.status_coalesce.total_seconds()
        before = ctx.request.status
        if (
            window <= 0
            or error
            or ctx.stopped
            or ctx.pending_events
            or ctx.request.metadata.deletion_timestamp is not None
            or ctx.status == before
            or ctx.status.cost is None  # the first figure: the bill starts with this write
            or not informational(before, ctx.status)
        ):
            return None
        held = self._current(ctx.name, ctx.request)
        since = held.since if held is not None else ctx.now
        left = (since + ctx.settings.status_coalesce - ctx.now).total_seconds()
        if left <= 0:
            return None
        self._held[ctx.name] = Held(
            uid=ctx.request.metadata.uid or "",
            attempt=ctx.status.attempt,
            base=ctx.obj.get("status") or {},  # shared with the object, not copied
            status=ctx.status,
            since=since,
        )
        return left

    def drop(self, key: str) -> None:
        """The status was written (with whatever was held), or the request is gone."""
        self._held.pop(key, None)

    def _current(self, key: str, request: GPUNodeRequest) -> Held | None:
        """The hold of this request's current attempt, if any (others are dropped)."""
        held = self._held.get(key)
        if held is None:
            return None
        if held.uid != (request.metadata.uid or "") or held.attempt != request.status.attempt:
            del self._held[key]
            return None
        return held
