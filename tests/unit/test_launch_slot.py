"""A create that waits for its rate-limit slot sends nothing before it: a wake-up in
between (the watch event of the request's own write) neither re-reads the request nor
re-writes `creates-from` (issue 13: API calls per request on the way up); and a new
attempt reserves its create's slot before it makes its token, so the token dates the
bound and the create writes no `creates-from` at all."""

from __future__ import annotations

import pytest

from gpuctl.controllers.request import launch, settle
from gpuctl.providers.base import Instance, InstanceState, RateLimitedError
from gpuctl.providers.ratelimit import AccountLimiter, OpClass, RateLimits, nonblocking
from tests.unit.test_billing_bounds import SECOND, T0, Client, make_ctx, request_obj


def test_a_wake_up_before_the_slot_is_put_off_to_it() -> None:
    ctx = make_ctx(Client(None), T0, request_obj())
    launch.await_slot(ctx)  # nothing reserved: go on
    launch.remember_slot(ctx, RateLimitedError("limited", retry_after=30.0))
    with pytest.raises(RateLimitedError) as caught:
        launch.await_slot(ctx)
    assert 25.0 < caught.value.delay <= 30.0


def test_the_slot_come_lets_the_create_claim_it() -> None:
    ctx = make_ctx(Client(None), T0, request_obj())
    launch.remember_slot(ctx, RateLimitedError("limited", retry_after=0.0))
    launch.await_slot(ctx)
    assert ctx.services.launches.slots == {}


def test_the_slot_goes_with_its_attempt() -> None:
    ctx = make_ctx(Client(None), T0, request_obj())
    key = settle.attempt_key(ctx)
    launch.remember_slot(ctx, RateLimitedError("limited", retry_after=30.0))
    ctx.services.launches.record_machine(
        key, Instance("i-1", "m", InstanceState.PENDING, "booting"), ctx.now
    )
    assert ctx.services.launches.slots == {}
    launch.remember_slot(ctx, RateLimitedError("limited", retry_after=30.0))
    ctx.services.launches.forget(key[0])
    assert ctx.services.launches.slots == {}


class SlotDriver:
    """A driver whose account's launch limiter is real (one launch per 12 s, spent)."""

    def __init__(self) -> None:
        self.now = [1000.0]
        limits = RateLimits(overall_per_second=None, launch_interval_seconds=12.0)
        self.limiter = AccountLimiter(limits, clock=lambda: self.now[0])

    def launch_slot(self) -> float:
        return self.limiter.reserve_launch()


def test_a_new_attempt_waits_for_its_slot_before_its_token() -> None:
    driver = SlotDriver()
    with nonblocking("gpunoderequest/r1"):
        assert driver.limiter.reserve_launch() == 0.0  # another request took the token
    ctx = make_ctx(Client(None), T0, request_obj())  # offer chosen at T0: a new attempt
    with nonblocking("gpunoderequest/r2"), pytest.raises(RateLimitedError) as caught:
        launch.slot_first(ctx, driver)  # type: ignore[arg-type]
    assert 11.0 < caught.value.delay <= 12.0
    assert settle.attempt_key(ctx) in ctx.services.launches.slots  # a wake-up waits
    # At the slot: the reservation is this holder's, the create will claim it at once.
    driver.now[0] += 12.0
    with nonblocking("gpunoderequest/r2"):
        launch.slot_first(ctx, driver)  # type: ignore[arg-type]
        assert driver.limiter.reserve(OpClass.LAUNCH, "gpunoderequest/r2") == 0.0


def test_an_older_attempt_or_one_with_its_token_takes_no_slot_first() -> None:
    driver = SlotDriver()
    older = make_ctx(Client(None), T0 + 30 * SECOND, request_obj())  # begun 30 s ago
    with nonblocking("gpunoderequest/r1"):
        launch.slot_first(older, driver)  # type: ignore[arg-type]
    assert driver.limiter.reserved == 0
    ctx = make_ctx(Client(None), T0, request_obj())
    ctx.services.launches.tokens[settle.attempt_key(ctx)] = (None, {})  # type: ignore[assignment]
    with nonblocking("gpunoderequest/r1"):
        launch.slot_first(ctx, driver)  # type: ignore[arg-type]
    assert driver.limiter.reserved == 0
