"""Carrying a decision out: replacement first, then cordon, drain, delete.

As Karpenter's orchestration queue, with every step's state on the objects:
1. `start`: the machine's GPUNodeRequest is marked (annotations: reason, start time,
   the plan — each replacement's name, spec and price — and what it saves), guarded
   by resourceVersion. From here budgets count it as disrupting, also after a restart.
2. `progress`, at every reconcile until done:
   - its Node gets the `gpuctl.io/disrupted:NoSchedule` taint (no new pods land);
   - each replacement is created under a name derived from the machine's uid (an
     AlreadyExists is the one created before a crash: never a second machine), owned
     by the pool;
   - once every replacement is Ready, the machine's request is deleted (uid
     precondition); its `gpuctl.io/drain` finalizer makes the deletion cordon and
     drain the Node (drain.py) before the machine is terminated;
   - a replacement that failed, or is not Ready within the replacement timeout, or a
     pod that got `gpuctl.io/do-not-disrupt` meanwhile, abandons the disruption: the
     replacements are deleted, the taint and the marks removed.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from decimal import Decimal
from typing import Any

import attrs

from gpuctl.controllers.pool import members
from gpuctl.controllers.pool.disruption import drain, keys, pods
from gpuctl.controllers.pool.disruption.command import Command
from gpuctl.controllers.pool.disruption.machines import Machine, format_time, parse_time
from gpuctl.controllers.resources import GPUNODEREQUESTS
from gpuctl.runtime.client import Client, is_not_found

Obj = dict[str, Any]
PLAN = "gpuctl.io/disruption-plan"
MARKS = (keys.DISRUPTION, keys.DISRUPTION_STARTED, keys.SAVINGS, PLAN)


@attrs.frozen
class Planned:
    name: str
    spec: Obj
    price: Decimal
    description: str


@attrs.frozen
class Progress:
    state: str  # waiting | deleted | abandoned
    message: str


def replacement_name(pool: str, machine_uid: str, index: int) -> str:
    """Deterministic, so a restart finds the replacement it may already have created."""
    digest = hashlib.sha256(f"{machine_uid}/{index}".encode()).hexdigest()[:10]
    return f"{pool[:40]}-r{digest}"


def plan_of(machine: Machine) -> list[Planned]:
    try:
        raw = json.loads(machine.annotations.get(PLAN) or "[]")
        return [
            Planned(r["name"], r["spec"], Decimal(str(r["price"])), r.get("description", ""))
            for r in raw
        ]
    except (ValueError, KeyError, TypeError):
        return []


def marks(command: Command, pool: str, now: datetime.datetime) -> dict[str, str]:
    uid = str(command.machine.obj["metadata"].get("uid", ""))
    plan = [
        {
            "name": replacement_name(pool, uid, i),
            "spec": r.spec,
            "price": str(r.price),
            "description": r.description,
        }
        for i, r in enumerate(command.replacements)
    ]
    return {
        keys.DISRUPTION: command.reason,
        keys.DISRUPTION_STARTED: format_time(now),
        keys.SAVINGS: str(command.savings),
        PLAN: json.dumps(plan, separators=(",", ":"), sort_keys=True),
    }


async def start(client: Client, command: Command, pool: str, now: datetime.datetime) -> None:
    meta = command.machine.obj["metadata"]
    patch = {
        "metadata": {
            "resourceVersion": meta["resourceVersion"],
            "annotations": marks(command, pool, now),
        }
    }
    await client.patch(GPUNODEREQUESTS, meta["name"], patch)


def replacement_body(pool_obj: Obj, machine: Machine, planned: Planned) -> Obj:
    meta = pool_obj["metadata"]
    annotations = {keys.REPLACES: machine.name}
    return members.request(planned.name, meta["name"], meta["uid"], planned.spec, annotations)


async def _delete(client: Client, name: str, uid: str | None = None) -> None:
    try:
        await client.delete(GPUNODEREQUESTS, name, uid=uid)
    except Exception as err:
        if not is_not_found(err):
            raise


async def abandon(client: Client, machine: Machine, now: datetime.datetime) -> None:
    """Give the disruption up: replacements deleted, taint and marks removed."""
    for planned in plan_of(machine):
        await _delete(client, planned.name)
    if machine.node is not None:
        await drain.untaint(client, machine.node)
    meta = machine.obj["metadata"]
    annotations: dict[str, str | None] = dict.fromkeys(MARKS)
    annotations[keys.ABANDONED] = format_time(now)
    patch = {"metadata": {"resourceVersion": meta["resourceVersion"], "annotations": annotations}}
    await client.patch(GPUNODEREQUESTS, meta["name"], patch)


def _replacement_state(planned: list[Planned], requests: dict[str, Obj]) -> tuple[bool, str | None]:
    """(all Ready, why it failed if one did)."""
    ready = True
    for item in planned:
        obj = requests.get(item.name)
        phase = ((obj or {}).get("status") or {}).get("phase")
        if phase == "Failed":
            message = ((obj or {}).get("status") or {}).get("message") or ""
            return False, f"replacement {item.name} failed: {message}"
        ready = ready and phase == "Ready"
    return ready, None


async def progress(
    client: Client,
    pool_obj: Obj,
    machine: Machine,
    requests: dict[str, Obj],
    *,
    now: datetime.datetime,
    give_up_after: datetime.timedelta,
) -> Progress:
    planned = plan_of(machine)
    started = parse_time(machine.annotations.get(keys.DISRUPTION_STARTED)) or now
    late = [p for p in machine.workload if pods.do_not_disrupt(p)]
    if late:
        await abandon(client, machine, now)
        return Progress("abandoned", f"pod {pods.name(late[0])} got {keys.DO_NOT_DISRUPT}")
    if machine.node is not None:
        await drain.taint(client, machine.node, cordon=False)
    for item in planned:
        if item.name not in requests:
            await members.create(client, replacement_body(pool_obj, machine, item))
    ready, failure = _replacement_state(planned, requests)
    if failure is None and not ready and now - started > give_up_after:
        failure = f"replacements not Ready after {give_up_after}"
    if failure is not None:
        await abandon(client, machine, now)
        return Progress("abandoned", failure)
    if not ready:
        return Progress("waiting", "waiting for the replacement to be Ready")
    await _delete(client, machine.name, uid=machine.obj["metadata"].get("uid"))
    return Progress("deleted", "replacement Ready; draining and terminating" if planned else "")
