"""A restarted operator does not spend a rate-limited cloud's window on polls.

Under RunPod's 60 calls a minute and a SIGKILL every ~15 s (issue 12's chaos suite),
each new process started with a full client bucket and polled every Ready machine at
once; the cloud's minute was spent, and launches waited for the next one. The rules:
a server-announced window keeps half its quota from spare-only calls; the server's
remaining count lowers the bucket; and a new process spreads its first polls of Ready
machines with a Ready Node over the poll interval. And a machine just launched is not
polled at once: the create's answer is its first poll. Besides restarts: a shared list
of every machine begins at most once per `spacing` (RunPod: 3 s); every look wanted a
list sent after its own moment, and RunPod got one a second. (The last test: with
the collector's lists waiting longer for tokens, a teardown found its gone machine by
name in an older list, and billed it again and again.)
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from gpuctl.controllers.request import liveness, termination
from gpuctl.controllers.request.launch import record_instance
from gpuctl.providers.base import Instance, InstanceState, RateLimitedError, TransientError
from gpuctl.providers.ratelimit import AccountLimiter, OpClass, RateLimits, nonblocking, spare_only
from gpuctl.providers.snapshot import Snapshots
from tests.unit.test_billing_bounds import Client, Drivers, make_ctx, request_obj
from tests.unit.test_providers_ratelimit import Clock
from tests.unit.test_snapshot import SECOND, T0, Cloud, machine
from tests.unit.test_spare_polls import Driver, ctx_for

POLICY = {"RateLimit-Policy": '"minute";q=60;w=60'}


async def spare_calls(limiter: AccountLimiter) -> int:
    """How many spare-only calls go now, one after the other."""
    sent = 0
    with nonblocking("poll"), spare_only():
        while True:
            try:
                await limiter.acquire(OpClass.READ)
            except RateLimitedError:
                return sent
            sent += 1


async def test_spare_only_calls_leave_half_of_a_server_window() -> None:
    limiter = AccountLimiter(RateLimits(overall_per_second=1.0, adaptive=True), clock=Clock())
    limiter.observe(POLICY)
    assert await spare_calls(limiter) == 30  # 60 -> 30: the rest is kept
    with nonblocking("launch"):
        await limiter.acquire(OpClass.LAUNCH)  # a call a request waits on goes at once


async def test_the_servers_remaining_count_lowers_the_bucket() -> None:
    clock = Clock()
    limiter = AccountLimiter(RateLimits(overall_per_second=1.0, adaptive=True), clock=clock)
    limiter.observe({**POLICY, "RateLimit": '"minute";r=3;t=40'})
    assert await spare_calls(limiter) == 0  # 3 left: none to spare
    with nonblocking("launch"):
        for _ in range(3):
            await limiter.acquire(OpClass.LAUNCH)
    with nonblocking("launch"), pytest.raises(RateLimitedError) as fourth:
        await limiter.acquire(OpClass.LAUNCH)
    assert fourth.value.delay == pytest.approx(1.0)
    limiter.observe({"RateLimit": '"minute";r=50;t=10'})  # never raised by the server's count
    clock.now += 1.0
    with nonblocking("launch"):
        await limiter.acquire(OpClass.LAUNCH)  # the slot reserved above, not earlier


async def test_a_new_process_spreads_its_first_polls_of_node_ready_machines() -> None:
    driver = Driver(limited=False)
    ctx = ctx_for(driver, node_ready=True)
    assert await liveness.reconcile(ctx) is None
    interval = datetime.timedelta(seconds=ctx.settings.ready_poll)
    [seeded] = ctx.services.last_poll.values()
    assert ctx.now - interval < seeded <= ctx.now and driver.spare == []  # not polled yet
    again = ctx_for(driver, node_ready=True)
    await liveness.reconcile(again)
    assert list(again.services.last_poll.values()) == [seeded]  # the same in every process
    due = ctx_for(driver, node_ready=True)
    due.services.last_poll.update(ctx.services.last_poll)
    due.now = seeded + interval
    await liveness.reconcile(due)
    assert driver.spare == [True]  # polled once its moment came
    # A machine whose Node is not Ready is polled at once.
    first = ctx_for(driver, node_ready=False)
    await liveness.reconcile(first)
    assert driver.spare == [True, False]


async def test_a_machine_just_launched_is_not_polled_at_once() -> None:
    driver = Driver(limited=False)
    ctx = ctx_for(driver, node_ready=False)
    assert ctx.status.instance is not None
    launched = Instance("i-new", ctx.status.instance.name, InstanceState.PENDING, "PENDING")
    record_instance(ctx, launched)  # the create's answer is its first poll
    assert await liveness.reconcile(ctx) is None and driver.spare == []
    ctx.now += datetime.timedelta(seconds=ctx.settings.joining_poll)
    await liveness.reconcile(ctx)
    assert driver.spare == [False]


async def test_shared_lists_are_spaced_inside_reconciles_only() -> None:
    cloud = Cloud(machine("i-1"))
    snapshots = Snapshots(
        "p", cloud.fetch, lambda i: False, cloud.get, clock=lambda: cloud.now, spacing=3.0
    )
    with nonblocking("look-a"):
        await snapshots.get("i-1", since=T0)
    cloud.now = T0 + SECOND
    with nonblocking("look-b"), pytest.raises(RateLimitedError) as put_off:
        await snapshots.get("i-1", since=cloud.now)  # wants a newer list: not yet
    assert put_off.value.delay == pytest.approx(2.0) and cloud.lists == 1
    cloud.now = T0 + 3 * SECOND
    with nonblocking("look-b"):
        await snapshots.get("i-1", since=cloud.now)
    cloud.now += SECOND / 2
    assert cloud.lists == 2
    await snapshots.listing(cloud.now)  # blocking mode (the collector, the CLI): at once
    assert cloud.lists == 3


async def test_a_machine_seen_gone_is_not_found_by_name_in_an_older_list() -> None:
    cloud = Cloud(machine("i-1"))
    snapshots = Snapshots(
        "p", cloud.fetch, lambda i: i.state is InstanceState.TERMINATED, cloud.get
    )
    snapshots.observe(T0 + 10 * SECOND, [machine("i-1")])  # the latest list: live
    # The leak collector's list, begun before it and answered after the terminate.
    snapshots.observe(T0 + 5 * SECOND, [machine("i-1", InstanceState.TERMINATED)])
    assert await snapshots.find_all("name-i-1", since=T0) == []


class FailingDeletes:
    """A live machine whose terminate fails after it may have been sent."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def terminate(self, instance_id: str) -> None:
        self.calls.append("terminate")
        raise TransientError("HTTP 502", code="502", provider="p")

    async def get(self, instance_id: str, since: Any = None, listed_by: Any = None) -> Any:
        self.calls.append("get")
        return Instance(instance_id, "n", InstanceState.RUNNING, "RUNNING")


async def test_a_failed_terminate_is_looked_at_before_it_is_sent_again() -> None:
    driver = FailingDeletes()
    ctx = make_ctx(Client(None), T0, request_obj(deleted=True, instance=True), Drivers(driver))
    for _ in range(2):
        with pytest.raises(TransientError):
            await termination.machine_gone(ctx)
    assert driver.calls == ["get", "terminate", "get", "terminate"]
