"""Work queues with client-go `util/workqueue` semantics, for one asyncio event loop.

`WorkQueue[K]` keeps three structures: the order in which keys are handed out, the
*dirty* set (keys that need processing) and the *processing* set (keys handed
out and not yet `done()`). That gives the guarantees controllers rely on:

- `add(k)` is a no-op when shutting down or when `k` is already dirty, so any
  number of adds before `k` is processed collapse into one processing;
- `get()` moves a key from dirty to processing; a key added while it is being
  processed is only marked dirty and goes back into the queue at `done(k)`, so
  one key is never processed by two workers at once and no add is lost;
- `add()` wakes exactly one waiting `get()`.

`get()` keeps handing out queued keys after `shutdown()`; only once the queue is
shut down *and* empty does it raise `ShutDown` (every waiting getter is woken
for that). `shutdown_with_drain()` also waits until every handed-out key is
`done()`; a plain `shutdown()` meanwhile ends that wait early, as in client-go.

Two priorities (controller-runtime >= 0.20 runs a priority queue): `add(k,
low_priority=True)` (used for the initial list and for resyncs) queues behind
all normal adds. Adding a key again at normal priority promotes it. Keys keep
FIFO order within a priority. Delayed and rate-limited adds use normal priority.

`DelayingQueue.add_after(k, delay)` adds `k` once `delay` seconds have passed;
`delay <= 0` adds at once. While `k` is waiting, further `add_after(k, ...)`
keep the *earliest* due time. One event-loop timer, armed for the earliest due
time of a heap, moves due keys into the queue (client-go uses a goroutine with
a heap and a map of known entries). `len()` counts only keys ready to be handed out.

`RateLimitingQueue.add_rate_limited(k)` is `add_after(k, limiter.when(k))`;
`forget(k)` resets the limiter's count for `k`; `num_requeues(k)` reads it.

Queues named with `name=` report `gpuctl_workqueue_*` metrics (see metrics.py).
Not thread-safe: call everything from the loop that runs the workers.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
import weakref
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

from gpuctl.runtime import metrics
from gpuctl.runtime.ratelimit import RateLimiter, default_controller_rate_limiter

K = TypeVar("K", bound=Hashable)

# asyncio runs a timer once `loop.time() + resolution` passes its due time, so a
# timer callback may observe a clock up to one resolution short of that time.
_CLOCK_RESOLUTION = time.get_clock_info("monotonic").resolution


class ShutDown(Exception):  # noqa: N818 - client-go's name for the condition
    """`get()` on a queue that is shut down and empty: the worker should exit."""


class _QueueMetrics(Generic[K]):
    """client-go's `queueMetrics`: add/get/done timestamps per key, pushed to Prometheus."""

    def __init__(self, name: str, queue: WorkQueue[K]) -> None:
        self._adds = metrics.WORKQUEUE_ADDS.labels(name)
        self._retries = metrics.WORKQUEUE_RETRIES.labels(name)
        self._queue_duration = metrics.WORKQUEUE_QUEUE_DURATION.labels(name)
        self._work_duration = metrics.WORKQUEUE_WORK_DURATION.labels(name)
        self._added_at: dict[K, float] = {}
        self._started_at: dict[K, float] = {}
        # Scrape-time gauges hold only weak references: a dropped queue must not
        # be kept alive by the process-wide registry.
        queue_ref = weakref.ref(queue)
        self_ref = weakref.ref(self)
        metrics.WORKQUEUE_DEPTH.labels(name).set_function(
            lambda: float(q.depth()) if (q := queue_ref()) is not None else 0.0
        )
        metrics.WORKQUEUE_UNFINISHED_WORK.labels(name).set_function(
            lambda: m.unfinished() if (m := self_ref()) is not None else 0.0
        )
        metrics.WORKQUEUE_LONGEST_RUNNING.labels(name).set_function(
            lambda: m.longest_running() if (m := self_ref()) is not None else 0.0
        )

    def add(self, item: K) -> None:
        self._adds.inc()
        self._added_at.setdefault(item, time.monotonic())

    def get(self, item: K) -> None:
        now = time.monotonic()
        if (added := self._added_at.pop(item, None)) is not None:
            self._queue_duration.observe(now - added)
        self._started_at[item] = now

    def done(self, item: K) -> None:
        if (started := self._started_at.pop(item, None)) is not None:
            self._work_duration.observe(time.monotonic() - started)

    def retry(self) -> None:
        self._retries.inc()

    def unfinished(self) -> float:
        now = time.monotonic()
        return sum(now - started for started in self._started_at.values())

    def longest_running(self) -> float:
        if not self._started_at:
            return 0.0
        return time.monotonic() - min(self._started_at.values())


class _NoMetrics(Generic[K]):
    def add(self, item: K) -> None:
        pass

    def get(self, item: K) -> None:
        pass

    def done(self, item: K) -> None:
        pass

    def retry(self) -> None:
        pass


class WorkQueue(Generic[K]):
    """FIFO of keys with per-key exclusivity and collapsing of repeated adds."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name
        self._queue: deque[K] = deque()  # normal priority, in order
        self._low: deque[K] = deque()  # low priority, handed out after _queue
        self._dirty: set[K] = set()
        self._dirty_low: set[K] = set()  # dirty keys whose only adds were low priority
        self._processing: set[K] = set()
        self._getters: deque[asyncio.Future[None]] = deque()
        self._drainers: list[asyncio.Future[None]] = []
        self._shutting_down = False
        self._drain = False
        self._metrics: _QueueMetrics[K] | _NoMetrics[K] = (
            _QueueMetrics(name, self) if name else _NoMetrics()
        )

    def add(self, item: K, *, low_priority: bool = False) -> None:
        """Mark `item` as needing processing; see the module docstring for the rules."""
        if self._shutting_down:
            return
        if item in self._dirty:
            if not low_priority and item in self._dirty_low:
                self._promote(item)
            return
        self._metrics.add(item)
        self._dirty.add(item)
        if low_priority:
            self._dirty_low.add(item)
        if item in self._processing:
            return  # done() puts it back
        self._push(item)

    async def get(self) -> K:
        """The next key, waiting for one; raises `ShutDown` once shut down and empty.

        The caller must call `done(key)` when finished with it.
        """
        while not self._queue and not self._low:
            if self._shutting_down:
                raise ShutDown
            await self._wait_for_item()
        item = self._queue.popleft() if self._queue else self._low.popleft()
        self._metrics.get(item)
        self._processing.add(item)
        self._dirty.discard(item)
        self._dirty_low.discard(item)
        return item

    def done(self, item: K) -> None:
        """Finish processing `item`; if it was added meanwhile, queue it again."""
        self._metrics.done(item)
        self._processing.discard(item)
        if item in self._dirty:
            self._push(item)
        elif not self._processing:
            self._wake_drainers()

    def __len__(self) -> int:
        """Keys waiting to be handed out (not those being processed or delayed)."""
        return len(self._queue) + len(self._low)

    def depth(self) -> int:
        """Dirty keys: queued, plus those re-queued at their done() (client-go's depth)."""
        return len(self._dirty)

    def is_processing(self, item: K) -> bool:
        return item in self._processing

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def shutdown(self) -> None:
        """Refuse further adds and wake every waiting getter; ends a pending drain."""
        self._drain = False
        self._begin_shutdown()
        self._wake_drainers()

    async def shutdown_with_drain(self) -> None:
        """`shutdown()`, then wait until every handed-out key is `done()`."""
        self._drain = True
        self._begin_shutdown()
        while self._processing and self._drain:
            future = asyncio.get_running_loop().create_future()
            self._drainers.append(future)
            await future

    def _begin_shutdown(self) -> None:
        self._shutting_down = True
        while self._getters:
            getter = self._getters.popleft()
            if not getter.done():
                getter.set_result(None)

    def _push(self, item: K) -> None:
        (self._low if item in self._dirty_low else self._queue).append(item)
        self._wake_one()

    def _promote(self, item: K) -> None:
        self._dirty_low.discard(item)
        if item not in self._processing:
            # Rare (a normal add racing the initial list): O(n) removal is fine.
            self._low.remove(item)
            self._queue.append(item)

    async def _wait_for_item(self) -> None:
        getter = asyncio.get_running_loop().create_future()
        self._getters.append(getter)
        try:
            await getter
        except asyncio.CancelledError:
            if getter.done() and not getter.cancelled():
                # Woken but cancelled before running: hand the wake-up on.
                self._wake_one()
            elif getter in self._getters:
                self._getters.remove(getter)
            raise

    def _wake_one(self) -> None:
        while self._getters:
            getter = self._getters.popleft()
            if not getter.done():
                getter.set_result(None)
                return

    def _wake_drainers(self) -> None:
        drainers, self._drainers = self._drainers, []
        for drainer in drainers:
            if not drainer.done():
                drainer.set_result(None)


class DelayingQueue(WorkQueue[K]):
    """A `WorkQueue` whose keys can also be added after a delay (earliest due time wins)."""

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name)
        self._heap: list[tuple[float, int, K]] = []
        self._waiting: dict[K, tuple[float, int]] = {}  # key -> its live heap entry
        self._sequence = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = math.inf

    def add_after(self, item: K, delay: float) -> None:
        """Add `item` after `delay` seconds; no-op when shutting down."""
        if self._shutting_down:
            return
        self._metrics.retry()
        if delay <= 0:
            self.add(item)
            return
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        current = self._waiting.get(item)
        if current is not None and current[0] <= due:
            return
        entry = (due, next(self._sequence))
        self._waiting[item] = entry
        heapq.heappush(self._heap, (*entry, item))
        self._arm(loop)

    def waiting(self) -> int:
        """Keys waiting for their delay to pass."""
        return len(self._waiting)

    def _begin_shutdown(self) -> None:
        super()._begin_shutdown()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_due = math.inf
        self._heap.clear()
        self._waiting.clear()

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        """Make sure one timer is set for the earliest live entry."""
        while self._heap and self._is_stale(self._heap[0]):
            heapq.heappop(self._heap)
        if not self._heap:
            return
        due = self._heap[0][0]
        if self._timer is not None:
            if self._timer_due <= due:
                return
            self._timer.cancel()
        self._timer = loop.call_at(due, self._fire, loop)
        self._timer_due = due

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._timer_due = math.inf
        now = loop.time() + _CLOCK_RESOLUTION
        while self._heap and self._heap[0][0] <= now:
            head = heapq.heappop(self._heap)
            if self._is_stale(head):
                continue  # superseded by an earlier add_after
            del self._waiting[head[2]]
            self.add(head[2])
        self._arm(loop)

    def _is_stale(self, entry: tuple[float, int, K]) -> bool:
        return self._waiting.get(entry[2]) != entry[:2]


class RateLimitingQueue(DelayingQueue[K]):
    """A `DelayingQueue` whose retries are spaced by a `RateLimiter`."""

    def __init__(self, rate_limiter: RateLimiter | None = None, name: str | None = None) -> None:
        super().__init__(name)
        self.rate_limiter = rate_limiter or default_controller_rate_limiter()

    def add_rate_limited(self, item: K) -> None:
        """Add `item` once the rate limiter allows it (counts as one failure)."""
        self.add_after(item, self.rate_limiter.when(item))

    def forget(self, item: K) -> None:
        """Reset `item`'s failure count (call after it was processed successfully)."""
        self.rate_limiter.forget(item)

    def num_requeues(self, item: K) -> int:
        return self.rate_limiter.num_requeues(item)
