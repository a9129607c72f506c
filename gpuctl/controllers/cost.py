"""Accrued cost of a request: price times billed time, kept in `status.cost`.

While an instance is billed, each update adds `price * (now - updatedAt)`; a crash
loses nothing, because the next update covers the gap from `updatedAt`. The
controller updates it only with a status write it makes anyway (a phase change or any
other change), never on a timer; a reader wanting the figure now adds
`price * (now - updatedAt)` itself (`running_total`).
"""

from __future__ import annotations

import datetime
from decimal import ROUND_HALF_UP, Decimal

from gpuctl.api import CostStatus

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
    # Never back: billing may already run to a moment after `now` (a machine seen gone
    # is billed until that answer, rounded up); a later pass must not re-bill that time.
    updated = max(now, cost.updated_at) if cost.updated_at is not None else now
    return CostStatus(
        accrued_usd=accrued.quantize(_PLACES, ROUND_HALF_UP),
        since=cost.since or now,
        updated_at=updated,
    )


def running_total(
    accrued_usd: str | None,
    updated_at: str | None,
    price_per_hour: str | None,
    now: datetime.datetime,
) -> Decimal:
    """`status.cost.accruedUSD` brought up to `now`, from the wire values: plus
    `price_per_hour` (None: nothing billed now) times the time since `updatedAt`."""
    total = Decimal(str(accrued_usd or "0"))
    if price_per_hour is None or not updated_at:
        return total
    since = datetime.datetime.fromisoformat(str(updated_at).replace("Z", "+00:00"))
    seconds = max(Decimal(0), Decimal(str((now - since).total_seconds())))
    return (total + Decimal(str(price_per_hour)) * seconds / _HOUR).quantize(_PLACES, ROUND_HALF_UP)


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
