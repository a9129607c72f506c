"""Rate limiters: client-go's default_rate_limiters semantics, on a fake clock."""

from __future__ import annotations

import pytest

from gpuctl.runtime.ratelimit import (
    BucketRateLimiter,
    ItemExponentialFailureRateLimiter,
    MaxOfRateLimiter,
    default_controller_rate_limiter,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_exponential_doubles_from_base_and_caps() -> None:
    limiter = ItemExponentialFailureRateLimiter(0.005, 1000.0)
    delays = [limiter.when("a") for _ in range(20)]
    assert delays[:5] == pytest.approx([0.005, 0.010, 0.020, 0.040, 0.080])
    assert delays[17] == pytest.approx(0.005 * 2**17)  # 655 s, still under the cap
    assert delays[18:] == [1000.0, 1000.0]
    assert limiter.num_requeues("a") == 20


def test_exponential_counts_per_item_and_forget_resets() -> None:
    limiter = ItemExponentialFailureRateLimiter(0.001, 1.0)
    limiter.when("a")
    limiter.when("a")
    assert limiter.when("b") == pytest.approx(0.001)
    assert limiter.num_requeues("a") == 2
    limiter.forget("a")
    assert limiter.num_requeues("a") == 0
    assert limiter.when("a") == pytest.approx(0.001)
    assert limiter.num_requeues("b") == 1


def test_exponential_survives_huge_failure_counts() -> None:
    limiter = ItemExponentialFailureRateLimiter(0.005, 30.0)
    for _ in range(5000):  # 2**5000 would overflow a float
        delay = limiter.when("a")
    assert delay == 30.0


def test_bucket_spends_burst_then_spaces_by_qps() -> None:
    clock = FakeClock()
    limiter = BucketRateLimiter(qps=2.0, burst=3, clock=clock)
    delays = [limiter.when(i) for i in range(6)]
    # Three tokens, then reservations 0.5 s apart: the bucket goes negative.
    assert delays == pytest.approx([0.0, 0.0, 0.0, 0.5, 1.0, 1.5])
    assert limiter.num_requeues(0) == 0


def test_bucket_refills_with_time_up_to_burst() -> None:
    clock = FakeClock()
    limiter = BucketRateLimiter(qps=1.0, burst=2, clock=clock)
    assert [limiter.when("x") for _ in range(2)] == [0.0, 0.0]
    clock.now += 1.0  # one token back
    assert limiter.when("x") == 0.0
    assert limiter.when("x") == pytest.approx(1.0)
    clock.now += 100.0  # refills to the burst, not beyond
    assert [limiter.when("x") for _ in range(2)] == [0.0, 0.0]
    assert limiter.when("x") == pytest.approx(1.0)


def test_bucket_forget_is_a_no_op() -> None:
    clock = FakeClock()
    limiter = BucketRateLimiter(qps=1.0, burst=1, clock=clock)
    limiter.when("a")
    limiter.forget("a")
    assert limiter.when("a") == pytest.approx(1.0)


def test_max_of_asks_every_limiter_and_takes_the_largest() -> None:
    clock = FakeClock()
    exponential = ItemExponentialFailureRateLimiter(0.01, 10.0)
    bucket = BucketRateLimiter(qps=1.0, burst=2, clock=clock)
    limiter = MaxOfRateLimiter(exponential, bucket)
    assert limiter.when("a") == pytest.approx(0.01)  # bucket says 0
    assert limiter.when("a") == pytest.approx(0.02)
    assert limiter.when("b") == pytest.approx(1.0)  # bucket empty: it dominates
    assert exponential.num_requeues("a") == 2
    assert limiter.num_requeues("a") == 2
    limiter.forget("a")
    assert limiter.num_requeues("a") == 0


def test_default_controller_rate_limiter() -> None:
    clock = FakeClock()
    limiter = default_controller_rate_limiter(clock=clock)
    assert limiter.when("a") == pytest.approx(0.005)
    assert limiter.when("a") == pytest.approx(0.010)
    # 100 distinct items fit the burst (2 tokens already used above) ...
    delays = [limiter.when(i) for i in range(98)]
    assert max(delays) == pytest.approx(0.005)
    # ... the next ones wait for the 10 qps bucket.
    assert limiter.when("late") == pytest.approx(0.1)
    assert limiter.when("later") == pytest.approx(0.2)


def test_invalid_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        BucketRateLimiter(qps=0, burst=1)
    with pytest.raises(ValueError):
        BucketRateLimiter(qps=1, burst=0)
    with pytest.raises(ValueError):
        ItemExponentialFailureRateLimiter(-1, 1)
    with pytest.raises(ValueError):
        MaxOfRateLimiter()
