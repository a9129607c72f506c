"""Machines older than `expireAfter` are recycled (Karpenter's expiration, graceful).

An expired candidate's pods move to the other machines where they fit; for those
that do not, the cheapest machine the pool may rent that holds them is launched
first. Expired machines go oldest first, at most the budget per round. An expired
machine whose pods fit nowhere and for which no machine can be rented stays (and
says why) rather than leaving its pods Pending.

gpuctl differs from Karpenter v1 here on purpose: Karpenter v1 expires a node
forcefully (no budget, no replacement first, do-not-disrupt and PDBs only delay it
up to terminationGracePeriod). A GPU job is expensive to interrupt, so gpuctl keeps
the v0.3x behaviour: expiry is a voluntary disruption like consolidation.
"""

from __future__ import annotations

import datetime

import attrs

from gpuctl.controllers.pool.disruption import fit
from gpuctl.controllers.pool.disruption.command import EXPIRED, Command
from gpuctl.controllers.pool.disruption.consolidation import FindReplacement
from gpuctl.controllers.pool.disruption.machines import Machine


def expires_at(
    machine: Machine, expire_after: datetime.timedelta | None
) -> datetime.datetime | None:
    created = machine.created
    if expire_after is None or created is None:
        return None
    return created + expire_after


@attrs.frozen
class Outcome:
    commands: list[Command]
    stuck: list[tuple[Machine, str]]  # expired, but nowhere for its pods to go


def commands(
    candidates: list[Machine],
    expire_after: datetime.timedelta | None,
    now: datetime.datetime,
    budget: int,
    *,
    rooms: list[fit.Room],
    find_replacement: FindReplacement,
) -> Outcome:
    """`rooms`: Nodes pods may move to, without any expired machine's (shared: taken up)."""
    due = []
    for machine in candidates:
        at = expires_at(machine, expire_after)
        if at is not None and at <= now:
            due.append((at, machine.name, machine))
    due.sort(key=lambda item: (item[0], item[1]))
    found: list[Command] = []
    stuck: list[tuple[Machine, str]] = []
    for _, _, machine in due:
        if len(found) >= budget:
            break
        left = fit.place(machine.workload, rooms)
        if not left:
            found.append(Command(EXPIRED, machine))
            continue
        replacement = find_replacement(left)
        if replacement is None:
            stuck.append((machine, f"no machine the pool may rent holds its {len(left)} pod(s)"))
            continue
        found.append(Command(EXPIRED, machine, (replacement,)))
    return Outcome(found, stuck)


def next_due(
    machines: list[Machine], expire_after: datetime.timedelta | None
) -> datetime.datetime | None:
    times = [expires_at(m, expire_after) for m in machines]
    return min((t for t in times if t is not None), default=None)
