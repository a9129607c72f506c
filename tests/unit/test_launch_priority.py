"""What a launch waits on at a rate-limited cloud (issue 12 item 4: rate-limit waits and
timeouts must not starve requests).

- `ratelimit.priority()`: the launch step's look-ups and create take the earliest slot
  reserved by a non-priority caller; those move back one slot each, the rate is kept.
- `RetryPolicy.read_timeout`: a GET gives up sooner than a create (a hung look-up after
  a create with no answer no longer costs a full create timeout).
"""

from __future__ import annotations

import pytest

from gpuctl.providers.base import DriverConfig, RateLimitedError
from gpuctl.providers.http import RetryPolicy, retry_policy_for
from gpuctl.providers.ratelimit import (
    AccountLimiter,
    OpClass,
    RateLimits,
    nonblocking,
    priority,
)
from tests.unit.test_providers_ratelimit import Clock


async def wait_of(limiter: AccountLimiter, holder: str, op: OpClass, first: bool = False) -> float:
    """Seconds until `holder`'s slot (reserving one); 0: it went."""
    with nonblocking(holder):
        try:
            if first:
                with priority():
                    await limiter.acquire(op)
            else:
                await limiter.acquire(op)
        except RateLimitedError as err:
            return float(err.delay or 0.0)
    return 0.0


async def test_a_priority_call_takes_the_earliest_slot_and_the_rest_move_back_one() -> None:
    clock = Clock()
    limiter = AccountLimiter(RateLimits(overall_per_second=1.0), clock=clock)
    assert await wait_of(limiter, "poll-0", OpClass.READ) == 0.0  # the burst's token
    teardowns = [await wait_of(limiter, f"teardown-{i}", OpClass.READ) for i in range(3)]
    assert teardowns == pytest.approx([1.0, 2.0, 3.0])
    # A settle look-up: the next slot, not the fourth.
    assert await wait_of(limiter, "settle", OpClass.READ, first=True) == pytest.approx(1.0)
    # Each teardown waits one slot more; no slot is given twice (the rate is kept).
    moved = [await wait_of(limiter, f"teardown-{i}", OpClass.MUTATE) for i in range(3)]
    assert moved == pytest.approx([5.0, 6.0, 7.0])  # new MUTATE slots: not what we check
    held = sorted(limiter._reserved.items())
    reads = {k[0]: round(v - clock.now, 3) for k, v in held if k[1] is OpClass.READ}
    assert reads == {"settle": 1.0, "teardown-0": 2.0, "teardown-1": 3.0, "teardown-2": 4.0}
    # A second priority call goes after the first, ahead of the others.
    assert await wait_of(limiter, "launch", OpClass.LAUNCH, first=True) == pytest.approx(2.0)
    # Its turn come, the priority call's slot is claimed.
    clock.now += 1.0
    assert await wait_of(limiter, "settle", OpClass.READ) == 0.0


async def test_a_priority_call_takes_another_buckets_slot_only_once_its_token_is_there() -> None:
    # Lambda: a launch bucket of 1 per 12 s besides the overall 1/s.
    clock = Clock()
    limits = RateLimits(overall_per_second=1.0, launch_interval_seconds=12.0)
    limiter = AccountLimiter(limits, clock=clock)
    reads = [await wait_of(limiter, f"look-{i}", OpClass.READ) for i in range(3)]
    assert reads == pytest.approx([0.0, 1.0, 2.0])
    # Its launch token is there now: it takes a look-up's slot (look-1's), and the
    # look-ups move back one slot each, the last to the launch's (an overall one).
    assert await wait_of(limiter, "launch", OpClass.LAUNCH, first=True) == pytest.approx(1.0)
    held = {k[0]: round(v - clock.now, 3) for k, v in limiter._reserved.items()}
    assert held == {"launch": 1.0, "look-1": 2.0, "look-2": 3.0}
    # The next launch token comes in 12 s: no earlier slot of a look-up is taken (it
    # would leave that look-up a slot only the launch bucket needed), but launches
    # among themselves: the priority one goes first.
    assert await wait_of(limiter, "look-3", OpClass.READ) == pytest.approx(4.0)
    assert await wait_of(limiter, "launch-1", OpClass.LAUNCH) == pytest.approx(12.0)
    assert await wait_of(limiter, "launch-2", OpClass.LAUNCH, first=True) == pytest.approx(12.0)
    assert round(limiter._reserved[("look-3", OpClass.READ)] - clock.now, 3) == 4.0


def test_a_read_gives_up_sooner_than_a_create() -> None:
    policy = RetryPolicy()
    assert (policy.timeout_for("GET"), policy.timeout_for("POST")) == (10.0, 30.0)
    assert RetryPolicy(timeout=2.0).timeout_for("GET") == 2.0  # never above the timeout
    config = DriverConfig(
        name="p", cloud="runpod", api_key="k", options={"readTimeoutSeconds": "4"}
    )
    assert retry_policy_for(config).timeout_for("HEAD") == 4.0
