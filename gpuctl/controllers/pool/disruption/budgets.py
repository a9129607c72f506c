"""Disruption budgets: how many of a pool's machines may be disrupted at once.

As Karpenter's `NodePool.GetAllowedDisruptionsByReason` and `BuildDisruptionBudgetMapping`:
- a budget without schedule is always active; one with `schedule` + `duration` is
  active when the schedule fired within the last `duration` (UTC);
- `nodes` is a count ("3") or a percentage ("20%") of the pool's machines, rounded UP
  (as Kubernetes rounds a PDB's maxUnavailable: 5% of 10 machines allows 1);
- the most restrictive active budget wins; no active budget means no limit; a
  budget that cannot be read fails closed (0);
- machines counted: initialized (their Node was Ready once) and not yet terminating
  at the cloud; those already being disrupted (marked, deleting) or whose Node is
  not Ready use up the budget. Both are read from the cluster, so an operator
  restarted mid-disruption never exceeds it.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable

import attrs

from gpuctl.controllers.pool.disruption import cron

UNLIMITED = 2**31 - 1


@attrs.frozen
class Budget:
    nodes: str = "10%"
    schedule: str | None = None
    duration: datetime.timedelta | None = None
    reasons: tuple[str, ...] = ()  # empty: every reason


def is_active(budget: Budget, now: datetime.datetime) -> bool:
    if budget.schedule is None and budget.duration is None:
        return True
    schedule = cron.parse(budget.schedule or "")
    duration = budget.duration or datetime.timedelta(0)
    return schedule.fired_within(now - duration, now)


def allowed(budget: Budget, machines: int, now: datetime.datetime) -> int:
    """Disruptions this budget allows among `machines`; UNLIMITED when inactive."""
    try:
        if not is_active(budget, now):
            return UNLIMITED
        return scaled(budget.nodes, machines)
    except ValueError:
        return 0  # misconfigured: fail closed, as Karpenter does


def scaled(nodes: str, machines: int) -> int:
    text = nodes.strip()
    if text.endswith("%"):
        percent = int(text[:-1])
        if not 0 <= percent <= 100:
            raise ValueError(f"{nodes!r}: a percentage is 0-100")
        return math.ceil(percent * machines / 100)
    value = int(text)
    if value < 0:
        raise ValueError(f"{nodes!r} is negative")
    return value


def allowed_for_reason(
    budgets: Iterable[Budget], reason: str, machines: int, now: datetime.datetime
) -> int:
    found = UNLIMITED
    for budget in budgets:
        if not budget.reasons or reason in budget.reasons:
            found = min(found, allowed(budget, machines, now))
    return found


def remaining(
    budgets: Iterable[Budget], reason: str, machines: int, disrupting: int, now: datetime.datetime
) -> int:
    """How many more machines may start being disrupted now for `reason`."""
    return max(allowed_for_reason(budgets, reason, machines, now) - disrupting, 0)
