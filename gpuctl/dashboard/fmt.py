"""How the dashboard writes numbers and times: exactly as `gpuctl cost -o json` does."""

from __future__ import annotations

import datetime
from decimal import ROUND_HALF_UP, Decimal

_CENTS4 = Decimal("0.0001")


def usd(amount: Decimal) -> str:
    """Dollars to 4 places, half up (`gpuctl cost`'s accruedUSD)."""
    return str(amount.quantize(_CENTS4, ROUND_HALF_UP))


def price(amount: Decimal | None) -> str | None:
    """A price as the API stores it (no rounding), or None."""
    return None if amount is None else str(amount)


def timestamp(value: datetime.datetime | None) -> str | None:
    """RFC 3339 in UTC to the second, or None."""
    if value is None:
        return None
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: object) -> datetime.datetime | None:
    """An API timestamp (RFC 3339, `Z` or offset), or None when absent or unreadable."""
    if not value:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)
