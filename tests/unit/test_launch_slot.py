"""A create that waits for its rate-limit slot sends nothing before it: a wake-up in
between (the watch event of the request's own write) neither re-reads the request nor
re-writes `creates-from` (issue 13: API calls per request on the way up)."""

from __future__ import annotations

import pytest

from gpuctl.controllers.request import launch
from gpuctl.providers.base import RateLimitedError
from tests.unit.test_billing_bounds import T0, Client, make_ctx, request_obj


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
    key = launch.attempt_key(ctx)
    launch.remember_slot(ctx, RateLimitedError("limited", retry_after=30.0))
    ctx.services.launches.record_machine(key)
    assert ctx.services.launches.slots == {}
    launch.remember_slot(ctx, RateLimitedError("limited", retry_after=30.0))
    ctx.services.launches.forget(key[0])
    assert ctx.services.launches.slots == {}
