"""Rate limit configuration, pacing and RunPod's adaptive headers."""

from __future__ import annotations

import asyncio

import pytest

from gpuctl.providers.base import DriverConfig, InvalidRequestError, RateLimitedError
from gpuctl.providers.ratelimit import (
    RESERVATION_TTL,
    AccountLimiter,
    OpClass,
    RateLimits,
    current_holder,
    limits_for,
    nonblocking,
    parse_structured_list,
)


def config(cloud: str, **options: str) -> DriverConfig:
    return DriverConfig(name="p", cloud=cloud, api_key="k", options=options)


def test_documented_defaults() -> None:
    assert limits_for(config("lambda")) == RateLimits(
        overall_per_second=1.0, launch_interval_seconds=12.0
    )
    assert limits_for(config("runpod")).overall_per_second == 1.0
    assert limits_for(config("runpod")).adaptive
    assert limits_for(config("paperspace")).overall_per_second == 2.0


def test_overrides() -> None:
    assert limits_for(config("lambda", rateLimit="unlimited")) == RateLimits.unlimited()
    assert limits_for(config("lambda", rateLimit="5")).overall_per_second == 5.0
    assert limits_for(config("lambda", launchIntervalSeconds="0")).launch_interval_seconds is None
    assert limits_for(config("lambda", launchIntervalSeconds="2")).launch_interval_seconds == 2.0
    explicit = DriverConfig(name="p", cloud="paperspace", api_key="k", rate_limit_per_second=9)
    assert limits_for(explicit).overall_per_second == 9
    for bad in ({"rateLimit": "fast"}, {"rateLimit": "0"}, {"launchIntervalSeconds": "-1"}):
        with pytest.raises(InvalidRequestError):
            limits_for(config("lambda", **bad))


async def timed(limiter: AccountLimiter, op: OpClass, n: int) -> float:
    loop = asyncio.get_running_loop()
    start = loop.time()
    for _ in range(n):
        await limiter.acquire(op)
    return loop.time() - start


async def test_overall_rate_paces_after_the_burst() -> None:
    limiter = AccountLimiter(RateLimits(overall_per_second=20))
    assert await timed(limiter, OpClass.READ, 20) < 0.15  # the burst
    assert 0.1 <= await timed(limiter, OpClass.READ, 4) < 1.0  # then 20/s


async def test_launch_interval_only_paces_launches() -> None:
    limiter = AccountLimiter(RateLimits(overall_per_second=None, launch_interval_seconds=0.2))
    assert await timed(limiter, OpClass.LAUNCH, 1) < 0.15
    assert await timed(limiter, OpClass.READ, 10) < 0.15
    assert 0.15 <= await timed(limiter, OpClass.LAUNCH, 1) < 1.0


async def test_unlimited_never_waits() -> None:
    limiter = AccountLimiter(RateLimits.unlimited())
    assert await timed(limiter, OpClass.LAUNCH, 200) < 0.1


def test_parse_structured_list() -> None:
    got = parse_structured_list('"minute";q=60;w=60, "hour";q=3000;w=3600, junk')
    assert got[0] == ("minute", {"q": "60", "w": "60"})
    assert got[1] == ("hour", {"q": "3000", "w": "3600"})


async def test_adaptive_follows_policy_and_pauses_on_exhaustion() -> None:
    limiter = AccountLimiter(RateLimits(overall_per_second=1.0, adaptive=True))
    limiter.observe({"RateLimit-Policy": '"minute";q=600;w=60, "hour";q=30000;w=3600'})
    assert limiter.policy == (("minute", 600, 60.0), ("hour", 30000, 3600.0))
    assert await timed(limiter, OpClass.READ, 50) < 0.1  # burst of the new policy
    limiter.observe({"ratelimit": '"minute";r=0;t=0.3'})
    assert 0.25 <= await timed(limiter, OpClass.READ, 1) < 1.0


async def test_non_adaptive_ignores_headers() -> None:
    limiter = AccountLimiter(RateLimits(overall_per_second=None))
    limiter.observe({"RateLimit": '"minute";r=0;t=30', "RateLimit-Policy": '"m";q=1;w=60'})
    assert limiter.policy == ()
    assert await timed(limiter, OpClass.READ, 5) < 0.15


# -- non-blocking mode: reservations instead of waits (fake clock, no sleeping) --------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_nonblocking_raises_with_the_reserved_slot_and_keeps_it() -> None:
    clock = Clock()
    limiter = AccountLimiter(RateLimits(overall_per_second=1.0), clock=clock)
    with nonblocking("gpunoderequest/a"):
        await limiter.acquire(OpClass.READ)  # the burst of 1
        with pytest.raises(RateLimitedError) as first:
            await limiter.acquire(OpClass.READ)
        assert first.value.delay == pytest.approx(1.0)
        assert not first.value.outcome_unknown and first.value.retryable
    with nonblocking("gpunoderequest/b"):
        with pytest.raises(RateLimitedError) as second:
            await limiter.acquire(OpClass.READ)
        assert second.value.delay == pytest.approx(2.0)  # the next slot, not the same
    clock.now += 0.5
    with nonblocking("gpunoderequest/a"), pytest.raises(RateLimitedError) as again:
        await limiter.acquire(OpClass.READ)  # back early: the same slot, nothing taken
    assert again.value.delay == pytest.approx(0.5) and limiter.reserved == 2
    clock.now += 0.5
    with nonblocking("gpunoderequest/a"):
        await limiter.acquire(OpClass.READ)  # its slot has come: goes, takes nothing new
    assert limiter.reserved == 1
    clock.now += 1.0
    with nonblocking("gpunoderequest/b"):
        await limiter.acquire(OpClass.READ)
    assert limiter.reserved == 0


async def test_nonblocking_waits_inline_for_a_slot_closer_than_inline_wait() -> None:
    limiter = AccountLimiter(RateLimits(overall_per_second=100.0))
    with nonblocking("x"):
        for _ in range(105):  # 100 burst, then slots 10 ms apart: waited, not raised
            await limiter.acquire(OpClass.READ)
    assert limiter.reserved == 0


async def test_a_launch_slot_does_not_hold_reads() -> None:
    clock = Clock()
    limits = RateLimits(overall_per_second=None, launch_interval_seconds=12.0)
    limiter = AccountLimiter(limits, clock=clock)
    with nonblocking("r"):
        await limiter.acquire(OpClass.LAUNCH)
        with pytest.raises(RateLimitedError) as info:
            await limiter.acquire(OpClass.LAUNCH)
        assert info.value.delay == pytest.approx(12.0)
        await limiter.acquire(OpClass.READ)  # reads have no launch bucket to wait for


async def test_a_pause_holds_reserved_slots_too() -> None:
    clock = Clock()
    limiter = AccountLimiter(RateLimits(overall_per_second=1.0), clock=clock)
    with nonblocking("a"):
        await limiter.acquire(OpClass.READ)
        with pytest.raises(RateLimitedError):
            await limiter.acquire(OpClass.READ)  # slot at +1 s
        limiter.pause(30)
        clock.now += 1.0
        with pytest.raises(RateLimitedError) as info:
            await limiter.acquire(OpClass.READ)
        assert info.value.delay == pytest.approx(29.0)


async def test_unclaimed_slots_expire() -> None:
    clock = Clock()
    limiter = AccountLimiter(RateLimits(overall_per_second=1.0), clock=clock)
    with nonblocking("gone"):
        await limiter.acquire(OpClass.READ)
        with pytest.raises(RateLimitedError):
            await limiter.acquire(OpClass.READ)
    assert limiter.reserved == 1
    clock.now += 1.0 + RESERVATION_TTL + 1.0
    with nonblocking("other"):
        await limiter.acquire(OpClass.READ)
    assert limiter.reserved == 0


async def test_blocking_mode_outside_nonblocking() -> None:
    assert current_holder() is None
    with nonblocking("h"):
        assert current_holder() == "h"
    assert current_holder() is None
