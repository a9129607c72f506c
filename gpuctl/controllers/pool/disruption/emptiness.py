"""Empty machines go after `consolidateAfter` (Karpenter's Emptiness).

Empty: no pods but DaemonSet and mirror pods (terminal and terminating pods do not
count). The clock runs from the machine's last pod event (a pod bound or gone,
recorded on the request) or, without one, from when it became Ready, so a machine
that just lost its last pod waits the full `consolidateAfter`. `Never` disables it.
Both consolidation policies remove empty machines. No replacement is launched.
"""

from __future__ import annotations

import datetime

from gpuctl.controllers.pool.disruption.command import EMPTY, Command
from gpuctl.controllers.pool.disruption.machines import Machine


def consolidatable_at(
    machine: Machine, consolidate_after: datetime.timedelta | None
) -> datetime.datetime | None:
    """When the machine's pods have been quiet for `consolidate_after`; None: never."""
    since = machine.last_pod_event()
    if consolidate_after is None or since is None:
        return None
    return since + consolidate_after


def commands(
    candidates: list[Machine],
    consolidate_after: datetime.timedelta | None,
    now: datetime.datetime,
    budget: int,
) -> list[Command]:
    """Empty candidates past their quiet time, oldest quiet first, at most `budget`."""
    due = []
    for machine in candidates:
        at = consolidatable_at(machine, consolidate_after)
        if machine.empty and at is not None and at <= now:
            due.append((at, machine.name, machine))
    due.sort(key=lambda item: (item[0], item[1]))
    return [Command(EMPTY, machine) for _, _, machine in due[: max(budget, 0)]]


def next_due(
    machines: list[Machine], consolidate_after: datetime.timedelta | None
) -> datetime.datetime | None:
    times = [consolidatable_at(m, consolidate_after) for m in machines]
    return min((t for t in times if t is not None), default=None)
