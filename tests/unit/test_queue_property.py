"""Property: with N concurrent workers and random add / add_after / add_rate_limited
sequences, a key is never processed by two workers at once, and every key added
is processed at least once after its last add (no add is lost).

Each example runs on a fresh event loop (hypothesis drives a plain function), so
the session loop of the async tests is left alone.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpuctl.runtime.queue import RateLimitingQueue, ShutDown
from gpuctl.runtime.ratelimit import ItemExponentialFailureRateLimiter

KEYS = st.sampled_from(["a", "b", "c", "d", "e"])
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), KEYS, st.booleans()),  # (op, key, low priority)
        st.tuples(st.just("add_after"), KEYS, st.integers(-1, 4)),  # delay in ms
        st.tuples(st.just("add_rate_limited"), KEYS, st.none()),
        st.tuples(st.just("pause"), st.none(), st.integers(0, 3)),  # loop iterations
    ),
    max_size=60,
)


class Run:
    """One scenario: a queue, its workers and the bookkeeping of what happened."""

    def __init__(self, workers: int, work_steps: list[int]) -> None:
        self.queue: RateLimitingQueue[str] = RateLimitingQueue(
            ItemExponentialFailureRateLimiter(0.001, 0.004)
        )
        self.workers = workers
        self.steps = itertools.cycle(work_steps)
        self.clock = itertools.count()
        self.last_add: dict[str, int] = {}
        self.adds: dict[str, int] = defaultdict(int)
        self.starts: dict[str, list[int]] = defaultdict(list)
        self.in_flight: set[str] = set()
        self.violations: list[str] = []

    def record_add(self, key: str) -> None:
        self.last_add[key] = next(self.clock)
        self.adds[key] += 1

    async def worker(self) -> None:
        while True:
            try:
                key = await self.queue.get()
            except ShutDown:
                return
            if key in self.in_flight:
                self.violations.append(f"{key} handed to two workers at once")
            self.in_flight.add(key)
            self.starts[key].append(next(self.clock))
            for _ in range(next(self.steps)):
                await asyncio.sleep(0)
            self.in_flight.discard(key)
            self.queue.done(key)

    def all_processed_after_last_add(self) -> bool:
        return all(
            self.starts[key] and self.starts[key][-1] > seq for key, seq in self.last_add.items()
        )

    async def play(self, ops: list[tuple[str, str | None, object]]) -> None:
        tasks = [asyncio.create_task(self.worker()) for _ in range(self.workers)]
        for op, key, arg in ops:
            if op == "pause":
                for _ in range(int(str(arg))):
                    await asyncio.sleep(0)
                continue
            assert key is not None
            self.record_add(key)
            if op == "add":
                self.queue.add(key, low_priority=bool(arg))
            elif op == "add_after":
                self.queue.add_after(key, int(str(arg)) / 1000)
            else:
                self.queue.add_rate_limited(key)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5.0
        while True:
            if self.all_processed_after_last_add() or loop.time() > deadline:
                break
            await asyncio.sleep(0.001)
        await self.queue.shutdown_with_drain()
        await asyncio.wait_for(asyncio.gather(*tasks), 5.0)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=OPS,
    workers=st.integers(1, 4),
    work_steps=st.lists(st.integers(0, 4), min_size=1, max_size=8),
)
def test_exclusive_and_lossless(
    ops: list[tuple[str, str | None, object]], workers: int, work_steps: list[int]
) -> None:
    run = Run(workers, work_steps)
    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
        runner.run(run.play(ops))
    assert run.violations == []
    assert run.all_processed_after_last_add(), (run.last_add, dict(run.starts))
    for key, starts in run.starts.items():
        # Adds collapse: never more processings than adds.
        assert len(starts) <= run.adds[key]
    assert run.in_flight == set()
    assert len(run.queue) == 0
