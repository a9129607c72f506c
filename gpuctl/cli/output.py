"""What the read-only commands print: a plain table for people, JSON for scripts.

- `table(headers, rows)`: left-aligned columns separated by two spaces, upper-case
  headers, no trailing blanks (as kubectl prints); `None` shows as `-`.
- `write_json(data)`: one JSON document, 2-space indented, keys in the order given
  (the field names are camelCase and documented in docs/cli.md).
- Money is a decimal string, never a float: `usd(Decimal("9.552"))` is `"9.5520"`
  (4 places, as `status.cost.accruedUSD`); `price()` keeps the cloud's digits.
- Times are RFC 3339 in UTC with a `Z`, to the second.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Iterable, Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, TextIO

FORMATS = ("table", "json")
_CENTS4 = Decimal("0.0001")


def add_output_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o",
        "--output",
        choices=FORMATS,
        default="table",
        help="table (default) for people, json for scripts",
    )


def cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Rows under their headers in aligned columns; ends with a newline."""
    lines = [[h.upper() for h in headers], *([cell(v) for v in row] for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    text = ""
    for line in lines:
        padded = [value.ljust(width) for value, width in zip(line, widths, strict=True)]
        text += "  ".join(padded).rstrip() + "\n"
    return text


def write_json(data: Any, out: TextIO | None = None) -> None:
    stream = out if out is not None else sys.stdout
    stream.write(json.dumps(data, indent=2) + "\n")


def write(text: str, out: TextIO | None = None) -> None:
    (out if out is not None else sys.stdout).write(text)


def usd(amount: Decimal) -> str:
    """A USD amount with 4 decimal places (what status.cost.accruedUSD holds)."""
    return str(amount.quantize(_CENTS4, ROUND_HALF_UP))


def price(amount: Decimal | None) -> str | None:
    """A price per hour as the cloud gave it (no rounding), or None."""
    return None if amount is None else str(amount)


def timestamp(value: datetime.datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def error(message: str) -> None:
    """A one-line diagnostic on stderr, prefixed like other gpuctl commands."""
    sys.stderr.write(f"gpuctl: {message}\n")
