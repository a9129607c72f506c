"""gpuctl.cli.output: the table printer and the value formats shared by the money commands."""

from __future__ import annotations

import datetime
import io
import json
from decimal import Decimal

from gpuctl.cli import output


def test_table_aligns_columns_and_shows_missing_values_as_dash() -> None:
    text = output.table(
        ("name", "$/hour", "ok"), [["a", Decimal("9.552"), True], ["bbb", None, False]]
    )
    assert text.splitlines() == [
        "NAME  $/HOUR  OK",
        "a     9.552   yes",
        "bbb   -       no",
    ]
    assert text.endswith("\n")


def test_table_with_no_rows_is_the_header() -> None:
    assert output.table(("a", "b"), []) == "A  B\n"


def test_money_and_times() -> None:
    assert output.usd(Decimal("9.55205")) == "9.5521"
    assert output.usd(Decimal("0")) == "0.0000"
    assert output.price(Decimal("9.552")) == "9.552"
    assert output.price(None) is None
    tz = datetime.timezone(datetime.timedelta(hours=2))
    assert output.timestamp(datetime.datetime(2025, 1, 2, 5, 4, 5, 999, tzinfo=tz)) == (
        "2025-01-02T03:04:05Z"
    )
    assert output.timestamp(None) is None


def test_json_keeps_key_order() -> None:
    out = io.StringIO()
    output.write_json({"b": 1, "a": [1, 2]}, out)
    assert list(json.loads(out.getvalue())) == ["b", "a"]
    assert out.getvalue().endswith("}\n")
