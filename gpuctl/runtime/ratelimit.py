"""Rate limiters for the work queue, as in client-go's `util/workqueue/default_rate_limiters.go`.

A `RateLimiter` answers "how long must this item wait before it is retried?":

- `when(item)` returns the delay in seconds and records the attempt (it has side
  effects: each call counts as one failure or takes one token);
- `forget(item)` stops tracking the item (its next failure starts from scratch);
- `num_requeues(item)` is how many failures are being tracked for it.

Limiters:

- `ItemExponentialFailureRateLimiter(base, max_delay)`: `base * 2**failures`, where
  `failures` counts earlier `when()` calls for that item, capped at `max_delay`
  (5 ms, 10 ms, 20 ms, ... 1000 s with the defaults).
- `BucketRateLimiter(qps, burst)`: one token bucket shared by all items (golang.org/x/time
  rate.Limiter semantics): the bucket starts full with `burst` tokens and refills at
  `qps` per second; `when()` reserves a token and returns how long until that token
  exists (0 while tokens are left). Reservations are never cancelled, so the
  bucket can go negative: N calls at once get delays 0, ..., spaced 1/qps apart.
- `MaxOfRateLimiter(*limiters)`: the largest delay of all (every limiter's `when()`
  is called, so each keeps its own accounting).
- `default_controller_rate_limiter()`: max of per-item exponential (5 ms .. 1000 s)
  and an overall bucket (10 qps, burst 100), controller-runtime's default.

Time comes from an injectable monotonic `clock` so tests need not sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Protocol

Clock = Callable[[], float]


class RateLimiter(Protocol):
    """client-go's `TypedRateLimiter`: delay per retry of an item."""

    def when(self, item: Hashable) -> float:
        """Seconds to wait before `item` may be processed again; records the attempt."""
        ...

    def forget(self, item: Hashable) -> None:
        """Stop tracking `item` (its backoff restarts from the beginning)."""
        ...

    def num_requeues(self, item: Hashable) -> int:
        """Failures currently tracked for `item`."""
        ...


# Beyond 2**64 the float product is meaningless and `base * 2**n` could overflow;
# client-go likewise returns the cap once the backoff exceeds MaxInt64 nanoseconds.
_MAX_EXPONENT = 64


class ItemExponentialFailureRateLimiter:
    """Per-item exponential backoff: `base * 2**failures`, capped at `max_delay`."""

    def __init__(self, base: float = 0.005, max_delay: float = 1000.0) -> None:
        if base < 0 or max_delay < 0:
            raise ValueError("base and max_delay must not be negative")
        self.base = base
        self.max_delay = max_delay
        self._failures: dict[Hashable, int] = {}

    def when(self, item: Hashable) -> float:
        exponent = self._failures.get(item, 0)
        self._failures[item] = exponent + 1
        if exponent >= _MAX_EXPONENT:
            return self.max_delay
        return min(self.base * 2.0**exponent, self.max_delay)

    def forget(self, item: Hashable) -> None:
        self._failures.pop(item, None)

    def num_requeues(self, item: Hashable) -> int:
        return self._failures.get(item, 0)


class BucketRateLimiter:
    """An overall token bucket: `qps` tokens per second, at most `burst` stored."""

    def __init__(self, qps: float = 10.0, burst: int = 100, *, clock: Clock = time.monotonic):
        if qps <= 0 or burst < 1:
            raise ValueError("qps must be positive and burst at least 1")
        self.qps = qps
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()

    def when(self, item: Hashable) -> float:
        now = self._clock()
        # Refill for the time elapsed, never beyond the burst size.
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.qps)
        self._last = now
        self._tokens -= 1.0
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self.qps

    def forget(self, item: Hashable) -> None:
        """The bucket is shared: there is nothing per item to forget."""

    def num_requeues(self, item: Hashable) -> int:
        return 0


class MaxOfRateLimiter:
    """The slowest answer of several limiters."""

    def __init__(self, *limiters: RateLimiter) -> None:
        if not limiters:
            raise ValueError("MaxOfRateLimiter needs at least one limiter")
        self.limiters = limiters

    def when(self, item: Hashable) -> float:
        # Every limiter must see the attempt, so no short-circuiting max over a generator
        # that could stop early: build the full list first.
        delays = [limiter.when(item) for limiter in self.limiters]
        return max(delays)

    def forget(self, item: Hashable) -> None:
        for limiter in self.limiters:
            limiter.forget(item)

    def num_requeues(self, item: Hashable) -> int:
        return max(limiter.num_requeues(item) for limiter in self.limiters)


def default_controller_rate_limiter(*, clock: Clock = time.monotonic) -> MaxOfRateLimiter:
    """controller-runtime's default: per-item 5 ms * 2^n up to 1000 s, overall 10 qps burst 100."""
    return MaxOfRateLimiter(
        ItemExponentialFailureRateLimiter(0.005, 1000.0),
        BucketRateLimiter(10.0, 100, clock=clock),
    )
