"""The chaos suite's schedule and figures (hack/chaos), without running anything."""

from __future__ import annotations

import sys
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hack"))  # the chaos suite is a tool under hack/, not in gpuctl

from chaos import measure, schedule  # noqa: E402
from chaos.measure import Machine, Observation  # noqa: E402

from gpuctl.controllers import naming  # noqa: E402

UID = "0123456789ab-cdef-0000-0000-000000000000"
NAME1 = naming.instance_name("chaos", UID, 1)
NAME2 = naming.instance_name("chaos", UID, 2)
PROVIDERS = {"lambda": "chaos-lambda", "runpod": "chaos-runpod", "paperspace": "chaos-paperspace"}


def machine(name: str, id_: str, created: float, end: float | None, usd: float = 0.1) -> Machine:
    return Machine("runpod", id_, name, created, end, usd)


def seen(at: float, attempt: int, instance: str | None, exists: bool = True) -> Observation:
    return Observation(at, exists, attempt, "chaos-runpod", instance, "Provisioning")


def test_a_seed_names_one_schedule() -> None:
    options = schedule.Options(seed=5)
    plan = schedule.build(options)
    assert plan == schedule.build(options) and plan != schedule.build(schedule.Options(seed=6))
    assert len(plan.requests) == 200 and len(plan.kills) == 24
    early = [r for r in plan.requests if r.early]
    assert 50 < len(early) < 85  # about a third
    assert all(1 <= r.delete_at - r.create_at <= 20 for r in early)
    assert {r.delete_at for r in plan.requests if not r.early} == {plan.end_of_window}
    spot = [r for r in plan.requests if r.capacity_type == "spot"]
    assert spot and all("runpod" in r.clouds for r in spot)  # the one that sells spot
    assert {len(r.clouds) for r in plan.requests} == {1, 2, 3}
    ends = [k.at + k.down for k in plan.kills]
    assert all(e + 3 <= nxt.at + 1e-9 for e, nxt in zip(ends, plan.kills[1:], strict=False))
    assert all(0 <= k.down <= 5 for k in plan.kills)


def test_owned_while_the_request_records_it_unowned_after() -> None:
    m = machine(NAME1, "pod1", 10.0, 100.0)
    history = [seen(5, 1, None), seen(12, 1, "pod1"), seen(40, 1, "pod1", exists=False)]
    assert measure.unowned_seconds(m, history, "chaos-runpod", 1, now=200) == 60.0
    # Moved on to attempt 2 at 30 s while the machine of attempt 1 still ran: unowned.
    history = [seen(5, 1, None), seen(30, 2, None)]
    assert measure.unowned_seconds(m, history, "chaos-runpod", 1, now=200) == 70.0
    # Never seen a request for it: unowned all its life (until now when still live).
    assert measure.unowned_seconds(machine(NAME1, "x", 10, None), [], "chaos-runpod", 1, 50) == 40


def test_figures_duplicates_unowned_beyond_the_period_and_cost() -> None:
    first = machine(NAME1, "pod1", 10.0, 50.0, usd=0.10)
    twin = machine(NAME1, "pod2", 12.0, 100.0, usd=0.05)  # same name, not recorded
    second = machine(NAME2, "pod3", 60.0, 150.0, usd=0.20)
    history = [
        seen(5, 1, None),
        seen(11, 1, "pod1"),
        seen(55, 2, None),
        seen(61, 2, "pod3"),
        seen(160, 2, "pod3", exists=False),
    ]
    figures = measure.figures(
        [first, twin, second],
        {UID: history},
        {UID: 0.0},
        {UID: Decimal("0.3450")},
        PROVIDERS,
        "chaos",
        period=40.0,
        now=200.0,
    )
    assert (figures.duplicates, figures.duplicate_names) == (1, (NAME1,))
    [unowned] = figures.unowned
    assert unowned.machine.id == "pod2" and unowned.seconds == 88.0 and unowned.beyond == 48.0
    assert figures.cloud_usd == Decimal("0.35") and figures.ledger_usd == Decimal("0.3450")
    assert figures.cost_max_difference_usd == Decimal("0.005")
    assert figures.requests_off_by_more_than_a_cent == () and figures.unrecorded_requests == ()
    assert (figures.ready_before_delete, figures.never_ready) == (0, 1)


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert [measure.percentile(values, q) for q in (50, 90, 99, 100)] == [50, 90, 99, 100]
    assert measure.percentile([], 50) is None


def test_the_ledger_is_read_beside_the_time_gpuctl_took_to_see_machines_gone() -> None:
    # $3.60/h: a cent is 10 s. The cloud stopped billing at 100 s; the status named the
    # machine until 130 s (a termination poll, a rate-limit turn, a restart): 30 s that
    # gpuctl bills (it cannot know the cloud's moment) and the cloud does not.
    m = Machine("runpod", "pod1", NAME1, 10.0, 98.0, 0.09, 3.60, 100.0)
    history = [seen(5, 1, None), seen(11, 1, "pod1"), seen(130, 1, None), seen(131, 1, None, False)]
    assert measure.seeing_gone_seconds(m, history) == 30.0

    def run(ledger: str) -> measure.Figures:
        return measure.figures(
            [m], {UID: history}, {UID: 0.0}, {UID: Decimal(ledger)}, PROVIDERS, "chaos", 40.0, 200
        )

    on_time = run("0.1200")  # 120 s: billed until seen gone, from the creation
    assert on_time.requests_off_by_more_than_a_cent == (UID,)
    assert on_time.requests_off_beyond_seeing_gone == ()
    assert on_time.seeing_gone_usd == Decimal("0.03")
    assert run("0.1400").requests_off_beyond_seeing_gone == (UID,)  # 20 s more: not explained
    assert run("0.0700").requests_off_beyond_seeing_gone == (UID,)  # under: never explained
    # A preempted machine replaced before it terminated: nothing to see afterwards.
    early = [seen(11, 1, "pod1"), seen(60, 2, None)]
    assert measure.seeing_gone_seconds(m, early) == 0.0
