import datetime
from decimal import Decimal

import pytest

from gpuctl.controllers import cost, naming

UID = "0A1B2C3D-4E5F-6789-abcd-ef0123456789"


def test_instance_name_is_deterministic_and_parseable() -> None:
    name = naming.instance_name("demo", UID, 3)
    assert name == "gpuctl-demo-0a1b2c3d4e5f-3"
    assert name == naming.instance_name("demo", UID, 3)
    assert naming.parse("demo", name) == naming.ParsedName("0a1b2c3d4e5f", 3)
    assert naming.parse("other", name) is None
    assert naming.parse("demo", "gpuctl-demo-nothex-1") is None


def test_cluster_name_validation() -> None:
    assert naming.validate_cluster_name("prod-eu1") == "prod-eu1"
    for bad in ("", "Prod", "-x", "x" * 21, "a_b"):
        with pytest.raises(ValueError):
            naming.validate_cluster_name(bad)


def test_cost_accrues_price_times_time_and_survives_gaps() -> None:
    t0 = datetime.datetime(2026, 11, 27, 10, 0, tzinfo=datetime.UTC)
    c = cost.accrue(None, None, t0)
    assert (c.accrued_usd, c.since, c.updated_at) == (Decimal("0"), t0, t0)
    c = cost.accrue(c, Decimal("23.92"), t0 + datetime.timedelta(minutes=30))
    assert str(c.accrued_usd) == "11.9600"
    later = t0 + datetime.timedelta(hours=5)
    c = cost.accrue(c, None, later)  # not billed meanwhile
    assert str(c.accrued_usd) == "11.9600" and c.since == t0 and c.updated_at == later


def test_billed_time_is_never_billed_twice() -> None:
    # A machine seen gone is billed until that answer rounded up, after the reconcile's
    # `now`; a later pass at that `now` must not move the bill's end back (and re-bill).
    t0 = datetime.datetime(2026, 11, 27, 10, 0, tzinfo=datetime.UTC)
    second = datetime.timedelta(seconds=1)
    c = cost.accrue(cost.accrue(None, None, t0), Decimal("36.00"), t0 + 10 * second)
    assert str(c.accrued_usd) == "0.1000"
    again = cost.accrue(c, None, t0 + 9 * second)
    assert again.updated_at == t0 + 10 * second and again.accrued_usd == c.accrued_usd
    assert str(cost.accrue(again, Decimal("36.00"), t0 + 11 * second).accrued_usd) == "0.1100"


def test_running_total_adds_the_time_since_the_last_update() -> None:
    now = datetime.datetime(2026, 1, 1, 1, 30, tzinfo=datetime.UTC)
    stamp = "2026-01-01T01:00:00Z"
    assert cost.running_total("1.5000", stamp, "2.00", now) == Decimal("2.5000")
    assert cost.running_total("1.5000", stamp, None, now) == Decimal("1.5000")  # not billed
    assert cost.running_total("1.5000", None, "2.00", now) == Decimal("1.5000")
