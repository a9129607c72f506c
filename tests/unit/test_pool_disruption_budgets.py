"""Budgets and their cron schedules, as Karpenter's NodePool budget tests read them."""

from __future__ import annotations

import datetime

import pytest

from gpuctl.controllers.pool.disruption import budgets, cron
from gpuctl.controllers.pool.disruption.budgets import Budget

pytestmark = pytest.mark.unit
UTC = datetime.UTC


def at(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("expr", "when", "fires"),
    [
        ("* * * * *", "2026-11-29 10:07", True),
        ("0 9 * * 1-5", "2026-11-30 09:00", True),  # a Monday
        ("0 9 * * 1-5", "2026-11-29 09:00", False),  # a Sunday
        ("0 9 * * mon-fri", "2026-12-04 09:00", True),  # a Friday
        ("*/15 * * * *", "2026-11-29 10:45", True),
        ("*/15 * * * *", "2026-11-29 10:46", False),
        ("5/20 * * * *", "2026-11-29 10:45", True),  # 5-59/20: 5, 25, 45
        ("0 0 1 jan *", "2027-01-01 00:00", True),
        ("@daily", "2026-11-29 00:00", True),
        ("@hourly", "2026-11-29 13:00", True),
        ("@weekly", "2026-11-29 00:00", True),  # Sunday midnight
        ("@monthly", "2026-12-01 00:00", True),
        ("@yearly", "2026-12-01 00:00", False),
        ("0 0 1,15 * *", "2026-11-15 00:00", True),
        # robfig's rule: both day fields restricted -> either may match
        ("0 0 13 * 5", "2026-11-13 00:00", True),  # the 13th (a Friday anyway)
        ("0 0 13 * 1", "2026-11-30 00:00", True),  # a Monday, not the 13th
        ("0 0 13 * 1", "2026-11-29 00:00", False),
        # ... but a bare * in one means both must match
        ("0 0 * * 1", "2026-11-29 00:00", False),
        ("0 0 */1 * 1", "2026-11-29 00:00", False),
    ],
)
def test_cron_matches(expr: str, when: str, fires: bool) -> None:
    assert cron.parse(expr).matches(at(when)) is fires


@pytest.mark.parametrize(
    "expr",
    [
        "* * * *",
        "60 * * * *",
        "* 24 * * *",
        "* * 0 * *",
        "* * * 13 *",
        "* * * * 7",
        "5-1 * * * *",
        "x * * * *",
        "*/0 * * * *",
    ],
)
def test_cron_rejects(expr: str) -> None:
    with pytest.raises(cron.CronError):
        cron.parse(expr)


def test_fired_within_is_open_at_the_start_and_closed_at_the_end() -> None:
    schedule = cron.parse("0 9 * * *")
    assert schedule.fired_within(at("2026-11-29 08:59"), at("2026-11-29 09:00"))
    assert not schedule.fired_within(at("2026-11-29 09:00"), at("2026-11-29 10:00"))
    # a long window is searched fast (skips whole days and hours)
    assert schedule.fired_within(at("2026-01-01 09:00"), at("2026-11-29 08:00"))
    assert not cron.parse("0 0 29 2 *").fired_within(at("2026-03-01 00:00"), at("2027-12-31 00:00"))


def test_a_budget_without_schedule_is_always_active() -> None:
    assert budgets.is_active(Budget(nodes="1"), at("2026-11-29 03:00"))


def test_a_scheduled_budget_is_active_for_its_duration_after_each_hit() -> None:
    budget = Budget(nodes="0", schedule="0 9 * * *", duration=datetime.timedelta(hours=8))
    assert budgets.is_active(budget, at("2026-11-29 09:00"))
    assert budgets.is_active(budget, at("2026-11-29 16:59"))
    assert not budgets.is_active(budget, at("2026-11-29 17:01"))
    assert not budgets.is_active(budget, at("2026-11-29 08:59"))
    assert budgets.allowed(budget, 10, at("2026-11-29 18:00")) == budgets.UNLIMITED
    assert budgets.allowed(budget, 10, at("2026-11-29 10:00")) == 0


@pytest.mark.parametrize(
    ("nodes", "machines", "allowed"),
    [
        ("10%", 10, 1),
        ("5%", 10, 1),
        ("10%", 0, 0),
        ("50%", 3, 2),
        ("100%", 7, 7),
        ("3", 2, 3),
        ("0", 5, 0),
        ("0%", 5, 0),
    ],
)
def test_nodes_scale_rounding_up(nodes: str, machines: int, allowed: int) -> None:
    assert budgets.scaled(nodes, machines) == allowed


def test_the_most_restrictive_active_budget_for_the_reason_wins() -> None:
    now = at("2026-11-29 10:00")
    rules = [
        Budget(nodes="50%"),
        Budget(nodes="1", reasons=("Underutilized",)),
        Budget(nodes="0", schedule="@daily", duration=datetime.timedelta(hours=1)),  # inactive
    ]
    assert budgets.allowed_for_reason(rules, "Empty", 10, now) == 5
    assert budgets.allowed_for_reason(rules, "Underutilized", 10, now) == 1
    assert budgets.allowed_for_reason([], "Empty", 10, now) == budgets.UNLIMITED


def test_disrupting_machines_use_the_budget_up() -> None:
    now = at("2026-11-29 10:00")
    assert budgets.remaining([Budget(nodes="2")], "Empty", 10, 1, now) == 1
    assert budgets.remaining([Budget(nodes="2")], "Empty", 10, 3, now) == 0


def test_a_budget_that_cannot_be_read_fails_closed() -> None:
    now = at("2026-11-29 10:00")
    bad = Budget(nodes="1", schedule="not a cron", duration=datetime.timedelta(hours=1))
    assert budgets.allowed(bad, 10, now) == 0
    assert budgets.allowed(Budget(nodes="lots"), 10, now) == 0
