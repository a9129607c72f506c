"""Durations and prices as they appear in gpuctl objects.

Durations are Go duration strings (`time.ParseDuration`): a sequence of decimal
numbers, each with a unit `ns`, `us` (or `µs`), `ms`, `s`, `m`, `h`, e.g. `8h`,
`90m`, `1h30m`, `1.5h`; an optional leading sign; `0` alone means zero. Python's
timedelta has microsecond resolution, so nanoseconds are rounded to the nearest
microsecond. There is no `d` unit, as in Go.

Prices are decimal strings in USD (`"25"`, `"2.49"`): never floats, so what the
user wrote is what gets compared and written back.
"""

from __future__ import annotations

import datetime
import re
from decimal import Decimal, InvalidOperation

# Schema patterns (the API server enforces these; parse_* accept the same language).
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"
PRICE_PATTERN = r"^[0-9]{1,6}(\.[0-9]{1,6})?$"

_MICROSECONDS = {
    "ns": Decimal("0.001"),
    "us": Decimal(1),
    "µs": Decimal(1),  # U+00B5 micro sign
    "μs": Decimal(1),  # U+03BC Greek mu, also accepted by Go
    "ms": Decimal(1_000),
    "s": Decimal(1_000_000),
    "m": Decimal(60_000_000),
    "h": Decimal(3_600_000_000),
}
_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> datetime.timedelta:
    """A Go duration string as a timedelta; ValueError if it is not one.

    >>> parse_duration("1h30m")
    datetime.timedelta(seconds=5400)
    """
    body = text.strip()
    sign = -1 if body.startswith("-") else 1
    body = body[1:] if body[:1] in ("+", "-") else body
    if body == "0":
        return datetime.timedelta(0)
    if not body:
        raise ValueError(f"invalid duration {text!r}")
    total = Decimal(0)
    pos = 0
    while pos < len(body):
        match = _PART.match(body, pos)
        if not match or match.group(1) in ("", "."):
            raise ValueError(f"invalid duration {text!r}")
        total += Decimal(match.group(1)) * _MICROSECONDS[match.group(2)]
        pos = match.end()
    return sign * datetime.timedelta(microseconds=int(total.to_integral_value()))


def format_duration(value: datetime.timedelta) -> str:
    """A compact Go duration string that `parse_duration` reads back: `1h30m`, `45s`, `0s`."""
    micros = value // datetime.timedelta(microseconds=1)
    sign, micros = ("-", -micros) if micros < 0 else ("", micros)
    hours, rest = divmod(micros, 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    seconds, micros = divmod(rest, 1_000_000)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    if seconds or micros:
        fraction = f".{micros:06d}".rstrip("0").rstrip(".")
        parts.append(f"{seconds}{fraction}s")
    return sign + ("".join(parts) or "0s")


def parse_price(text: str | int | Decimal) -> Decimal:
    """A non-negative, finite decimal price in USD; ValueError otherwise.

    Floats are refused on purpose: they cannot represent most cent values exactly.
    """
    if isinstance(text, float | bool):
        raise ValueError(f"price must be a decimal string, not {type(text).__name__}")
    try:
        value = Decimal(text.strip() if isinstance(text, str) else text)
    except InvalidOperation:
        raise ValueError(f"invalid price {text!r}") from None
    if not value.is_finite() or value < 0:
        raise ValueError(f"invalid price {text!r}: must be a finite amount >= 0")
    return value


def format_price(value: Decimal) -> str:
    """Plain decimal notation (never `1E+1`), keeping the value's own precision."""
    return format(value, "f")
