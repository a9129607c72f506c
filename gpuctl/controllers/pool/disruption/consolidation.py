"""Underutilized machines are removed or replaced by a cheaper one (Karpenter's
single-node consolidation), with `consolidationPolicy: WhenEmptyOrUnderutilized`.

A non-empty candidate whose pods have been quiet for `consolidateAfter` is tried,
cheapest to disrupt first (fewest pods, then the most expensive machine):
- if all its pods fit on the other machines' Nodes (what is really left of their
  allocatable GPUs, CPU, memory and pod count; selectors, affinity and taints
  respected: `fit.place`), it is removed — it saves its whole price;
- else, if one machine the pool may rent holds all its pods and costs less per hour,
  it is replaced by that machine (launched and Ready first) — it saves the difference.
One command per round, as Karpenter's SingleNodeConsolidation: the next round sees the
cluster after it. Multi-node consolidation (several machines into one) is not done.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable

from gpuctl.controllers.pool.disruption import fit
from gpuctl.controllers.pool.disruption.command import UNDERUTILIZED, Command, Replacement
from gpuctl.controllers.pool.disruption.emptiness import consolidatable_at
from gpuctl.controllers.pool.disruption.machines import Machine, Obj

# The Nodes other pods may move to, without the given machine's (a fresh copy per call).
RoomsFor = Callable[[Machine], list[fit.Room]]
# The cheapest machine the pool may rent that holds all these pods, if any.
FindReplacement = Callable[[list[Obj]], Replacement | None]


def _order(machine: Machine) -> tuple[int, object, str]:
    return (len(machine.workload), -machine.price, machine.name)


def command(
    candidates: list[Machine],
    consolidate_after: datetime.timedelta | None,
    now: datetime.datetime,
    rooms_for: RoomsFor,
    find_replacement: FindReplacement,
) -> Command | None:
    for machine in sorted(candidates, key=_order):
        at = consolidatable_at(machine, consolidate_after)
        if machine.empty or at is None or at > now:
            continue
        left = fit.place(machine.workload, rooms_for(machine))
        if not left:
            return Command(UNDERUTILIZED, machine)
        replacement = find_replacement(machine.workload)
        if replacement is not None and replacement.price < machine.price:
            return Command(UNDERUTILIZED, machine, (replacement,))
    return None
