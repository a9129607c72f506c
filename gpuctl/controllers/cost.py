"""Accrued cost of a request: price times running time, kept in `status.cost`.

`status.cost = {accruedUSD, since, updatedAt}`. While an instance is billed, each
update adds `price * (now - updatedAt)`; a crash loses nothing, because the next
update covers the gap from `updatedAt`. Amounts are decimal strings with 4 places.
"""

from __future__ import annotations

import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

_CENT_FRACTION = Decimal("0.0001")
_HOUR = Decimal(3600)


def format_time(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime.datetime:
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)


def accrue(
    cost: dict[str, Any] | None,
    price_per_hour: Decimal | None,
    now: datetime.datetime,
) -> dict[str, Any]:
    """The cost after billing `price_per_hour` (None: nothing billed) up to `now`."""
    stamp = format_time(now)
    if not cost:
        return {"accruedUSD": "0.0000", "since": stamp, "updatedAt": stamp}
    accrued = Decimal(cost.get("accruedUSD", "0"))
    if price_per_hour is not None and cost.get("updatedAt"):
        seconds = max(Decimal(0), Decimal((now - parse_time(cost["updatedAt"])).total_seconds()))
        accrued += price_per_hour * seconds / _HOUR
    return {
        "accruedUSD": str(accrued.quantize(_CENT_FRACTION, ROUND_HALF_UP)),
        "since": cost.get("since", stamp),
        "updatedAt": stamp,
    }


def due(cost: dict[str, Any] | None, now: datetime.datetime, every: datetime.timedelta) -> bool:
    """Whether a periodic cost update is due (phase changes update regardless)."""
    if not cost or not cost.get("updatedAt"):
        return True
    return now - parse_time(cost["updatedAt"]) >= every
