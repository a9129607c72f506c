"""Accrued cost of a request: price times billed time, kept in `status.cost`.

While an instance is billed, each update adds `price * (now - updatedAt)`; a crash
loses nothing, because the next update covers the gap from `updatedAt`. The
controller updates at every phase change and at most every `COST_INTERVAL`
otherwise (each update is a status write).
"""

from __future__ import annotations

import datetime
from decimal import ROUND_HALF_UP, Decimal

from gpuctl.api import CostStatus

COST_INTERVAL = datetime.timedelta(minutes=5)
_PLACES = Decimal("0.0001")
_HOUR = Decimal(3600)


def accrue(
    cost: CostStatus | None, price_per_hour: Decimal | None, now: datetime.datetime
) -> CostStatus:
    """The cost after billing `price_per_hour` (None: nothing billed) up to `now`."""
    if cost is None:
        return CostStatus(accrued_usd=Decimal("0.0000"), since=now, updated_at=now)
    accrued = cost.accrued_usd
    if price_per_hour is not None and cost.updated_at is not None:
        seconds = max(Decimal(0), Decimal(str((now - cost.updated_at).total_seconds())))
        accrued += price_per_hour * seconds / _HOUR
    return CostStatus(
        accrued_usd=accrued.quantize(_PLACES, ROUND_HALF_UP),
        since=cost.since or now,
        updated_at=now,
    )


def due(cost: CostStatus | None, now: datetime.datetime, every: datetime.timedelta) -> bool:
    """Whether a periodic cost update is due (phase changes update regardless)."""
    if cost is None or cost.updated_at is None:
        return True
    return now - cost.updated_at >= every


def add_interval(
    cost: CostStatus | None,
    price_per_hour: Decimal,
    start: datetime.datetime,
    now: datetime.datetime,
) -> CostStatus:
    """`cost` plus `price_per_hour` over [`start`, `now`]: time no update billed, of a
    machine gpuctl found by name (a launch whose answer was lost, a twin). Bring `cost`
    up to `now` with `accrue` first; `since` moves back to `start` when that is earlier."""
    seconds = max(Decimal(0), Decimal(str((now - start).total_seconds())))
    base = cost.accrued_usd if cost is not None else Decimal(0)
    since = cost.since if cost is not None and cost.since is not None else start
    return CostStatus(
        accrued_usd=(base + price_per_hour * seconds / _HOUR).quantize(_PLACES, ROUND_HALF_UP),
        since=min(since, start),
        updated_at=now,
    )
