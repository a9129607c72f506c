"""Go durations and decimal prices."""

from __future__ import annotations

import datetime
import re
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpuctl.api.units import (
    DURATION_PATTERN,
    PRICE_PATTERN,
    format_duration,
    format_price,
    parse_duration,
    parse_price,
)

td = datetime.timedelta


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1h30m", td(hours=1, minutes=30)),
        ("90m", td(minutes=90)),
        ("8h", td(hours=8)),
        ("1.5h", td(minutes=90)),
        ("45s", td(seconds=45)),
        ("300ms", td(milliseconds=300)),
        ("1h0m0s", td(hours=1)),
        ("2h45m30.5s", td(hours=2, minutes=45, seconds=30.5)),
        ("10us", td(microseconds=10)),
        ("10µs", td(microseconds=10)),
        ("1500ns", td(microseconds=2)),  # rounded to the nearest microsecond
        ("0", td(0)),
        ("0s", td(0)),
        ("-5m", td(minutes=-5)),
        ("+5m", td(minutes=5)),
        (".5h", td(minutes=30)),
    ],
)
def test_parse_duration(text: str, expected: datetime.timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text", ["", "8", "1d", "8 hours", "h", "1h30", "--5m", "1h-5m", "1e3s", ".", "-"]
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (td(hours=1, minutes=30), "1h30m"),
        (td(hours=8), "8h"),
        (td(seconds=90), "1m30s"),
        (td(0), "0s"),
        (td(milliseconds=1500), "1.5s"),
        (td(minutes=-5), "-5m"),
    ],
)
def test_format_duration(value: datetime.timedelta, text: str) -> None:
    assert format_duration(value) == text


@given(st.timedeltas(min_value=td(0), max_value=td(days=400)))
def test_format_then_parse_is_identity(value: datetime.timedelta) -> None:
    text = format_duration(value)
    assert parse_duration(text) == value
    assert re.fullmatch(DURATION_PATTERN, text)  # what we write, the API server accepts


@given(
    st.lists(
        st.tuples(st.integers(0, 10_000), st.sampled_from(["h", "m", "s", "ms", "us"])),
        min_size=1,
        max_size=4,
    )
)
def test_schema_pattern_strings_parse(parts: list[tuple[int, str]]) -> None:
    text = "".join(f"{n}{unit}" for n, unit in parts)
    assert re.fullmatch(DURATION_PATTERN, text)
    parse_duration(text)  # no error: the pattern's language is a subset of Go's


@pytest.mark.parametrize(
    ("text", "expected"),
    [("25", Decimal(25)), ("2.49", Decimal("2.49")), (" 0.10 ", Decimal("0.10")), (3, Decimal(3))],
)
def test_parse_price(text: str | int, expected: Decimal) -> None:
    assert parse_price(text) == expected


@pytest.mark.parametrize("text", ["", "$25", "-1", "NaN", "Infinity", "abc"])
def test_parse_price_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="price"):
        parse_price(text)


def test_parse_price_refuses_floats() -> None:
    with pytest.raises(ValueError, match="decimal string"):
        parse_price(2.49)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["25", "2.50", "0.0001", "100000", "3.180"])
def test_price_text_survives_a_round_trip(text: str) -> None:
    assert re.fullmatch(PRICE_PATTERN, text)
    assert format_price(parse_price(text)) == text


def test_format_price_never_uses_exponents() -> None:
    assert format_price(Decimal("1E+2")) == "100"
    assert format_price(Decimal("1E-7")) == "0.0000001"
