"""WorkQueue, DelayingQueue, RateLimitingQueue: client-go workqueue semantics."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from gpuctl.runtime import metrics
from gpuctl.runtime.queue import DelayingQueue, RateLimitingQueue, ShutDown, WorkQueue
from gpuctl.runtime.ratelimit import ItemExponentialFailureRateLimiter

WAIT = 2.0  # generous bound for conditions that should hold within milliseconds


async def get_now(queue: WorkQueue[str]) -> str:
    return await asyncio.wait_for(queue.get(), WAIT)


async def settle() -> None:
    """Let every ready callback run."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_fifo_and_repeated_adds_collapse() -> None:
    queue: WorkQueue[str] = WorkQueue()
    for key in ("a", "b", "a", "c", "b", "a"):
        queue.add(key)
    assert len(queue) == 3
    assert [await get_now(queue) for _ in range(3)] == ["a", "b", "c"]
    assert len(queue) == 0


async def test_add_while_processing_requeues_at_done() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    key = await get_now(queue)
    assert queue.is_processing("a")
    queue.add("a")
    queue.add("a")
    assert len(queue) == 0, "a key being processed is not handed out again"
    assert queue.depth() == 1
    queue.done(key)
    assert len(queue) == 1
    assert await get_now(queue) == "a"
    queue.done("a")
    assert len(queue) == 0
    assert queue.depth() == 0


async def test_done_without_new_add_does_not_requeue() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    queue.done(await get_now(queue))
    assert len(queue) == 0


async def test_get_waits_and_one_add_wakes_one_getter() -> None:
    queue: WorkQueue[str] = WorkQueue()
    getters = [asyncio.create_task(queue.get()) for _ in range(3)]
    await settle()
    assert not any(g.done() for g in getters)
    queue.add("a")
    await settle()
    assert [g.result() for g in getters if g.done()] == ["a"]
    queue.add("b")
    queue.add("c")
    await settle()
    assert sorted(g.result() for g in getters) == ["a", "b", "c"]


async def test_cancelled_getter_passes_its_wakeup_on() -> None:
    queue: WorkQueue[str] = WorkQueue()
    first = asyncio.create_task(queue.get())
    second = asyncio.create_task(queue.get())
    await settle()
    queue.add("a")  # wakes `first` ...
    first.cancel()  # ... which is cancelled before it runs
    await settle()
    assert first.cancelled()
    assert second.done() and second.result() == "a"


async def test_shutdown_wakes_getters_and_refuses_adds() -> None:
    queue: WorkQueue[str] = WorkQueue()
    getters = [asyncio.create_task(queue.get()) for _ in range(2)]
    await settle()
    queue.shutdown()
    assert queue.shutting_down
    for getter in getters:
        with pytest.raises(ShutDown):
            await asyncio.wait_for(getter, WAIT)
    queue.add("a")
    assert len(queue) == 0
    with pytest.raises(ShutDown):
        await get_now(queue)


async def test_get_drains_queued_items_after_shutdown() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    queue.add("b")
    queue.shutdown()
    assert await get_now(queue) == "a"
    assert await get_now(queue) == "b"
    with pytest.raises(ShutDown):
        await get_now(queue)


async def test_shutdown_with_drain_waits_for_processing() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    queue.add("b")
    a = await get_now(queue)
    b = await get_now(queue)
    drain = asyncio.create_task(queue.shutdown_with_drain())
    await settle()
    assert not drain.done()
    queue.done(a)
    await settle()
    assert not drain.done(), "b is still being processed"
    queue.done(b)
    await asyncio.wait_for(drain, WAIT)


async def test_shutdown_ends_a_pending_drain() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    await get_now(queue)
    drain = asyncio.create_task(queue.shutdown_with_drain())
    await settle()
    assert not drain.done()
    queue.shutdown()
    await asyncio.wait_for(drain, WAIT)


async def test_shutdown_with_drain_returns_at_once_when_idle() -> None:
    queue: WorkQueue[str] = WorkQueue()
    await asyncio.wait_for(queue.shutdown_with_drain(), WAIT)


async def test_low_priority_goes_behind_and_a_normal_add_promotes() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("init-1", low_priority=True)
    queue.add("init-2", low_priority=True)
    queue.add("init-3", low_priority=True)
    queue.add("live")
    queue.add("init-3")  # a live change to a key from the initial list
    queue.add("live", low_priority=True)  # does not demote
    got = [await get_now(queue) for _ in range(4)]
    assert got == ["live", "init-3", "init-1", "init-2"]


async def test_low_priority_key_dirty_while_processing_keeps_its_priority() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    await get_now(queue)
    queue.add("a", low_priority=True)
    queue.add("b")
    queue.done("a")
    assert [await get_now(queue) for _ in range(2)] == ["b", "a"]


async def test_add_after_zero_or_negative_adds_now() -> None:
    queue: DelayingQueue[str] = DelayingQueue()
    queue.add_after("a", 0)
    queue.add_after("b", -1)
    assert len(queue) == 2


async def test_add_after_waits_for_the_delay() -> None:
    queue: DelayingQueue[str] = DelayingQueue()
    loop = asyncio.get_running_loop()
    start = loop.time()
    queue.add_after("a", 0.05)
    assert len(queue) == 0 and queue.waiting() == 1
    assert await get_now(queue) == "a"
    assert loop.time() - start >= 0.05
    assert queue.waiting() == 0


async def test_add_after_earliest_due_time_wins() -> None:
    queue: DelayingQueue[str] = DelayingQueue()
    loop = asyncio.get_running_loop()
    start = loop.time()
    queue.add_after("a", 30)
    queue.add_after("a", 0.02)  # earlier: replaces
    queue.add_after("a", 60)  # later: ignored
    assert queue.waiting() == 1
    assert await get_now(queue) == "a"
    assert loop.time() - start < 5
    queue.done("a")
    await asyncio.sleep(0.05)
    assert len(queue) == 0 and queue.waiting() == 0, "the superseded entries never fire"


async def test_delayed_keys_come_out_in_due_order() -> None:
    queue: DelayingQueue[str] = DelayingQueue()
    queue.add_after("late", 0.06)
    queue.add_after("early", 0.01)
    queue.add_after("middle", 0.03)
    assert [await get_now(queue) for _ in range(3)] == ["early", "middle", "late"]


async def test_delayed_add_collapses_with_a_pending_add() -> None:
    queue: DelayingQueue[str] = DelayingQueue()
    queue.add("a")
    queue.add_after("a", 0.01)
    await asyncio.sleep(0.03)
    assert len(queue) == 1


async def test_shutdown_drops_delayed_keys() -> None:
    queue: DelayingQueue[str] = DelayingQueue()
    queue.add_after("a", 0.01)
    queue.shutdown()
    queue.add_after("b", 0.01)
    await asyncio.sleep(0.03)
    assert len(queue) == 0 and queue.waiting() == 0


async def test_rate_limited_adds_back_off_and_forget_resets() -> None:
    limiter = ItemExponentialFailureRateLimiter(0.01, 1.0)
    queue: RateLimitingQueue[str] = RateLimitingQueue(limiter)
    loop = asyncio.get_running_loop()
    for expected in (0.01, 0.02, 0.04):
        start = loop.time()
        queue.add_rate_limited("a")
        assert await get_now(queue) == "a"
        assert loop.time() - start >= expected
        queue.done("a")
    assert queue.num_requeues("a") == 3
    queue.forget("a")
    assert queue.num_requeues("a") == 0


def sample(name: str, metric: str) -> float:
    value = metrics.REGISTRY.get_sample_value(metric, {"name": name})
    return 0.0 if value is None else value


async def test_named_queue_reports_metrics() -> None:
    name = f"q-{secrets.token_hex(3)}"
    queue: RateLimitingQueue[str] = RateLimitingQueue(name=name)
    queue.add("a")
    queue.add("a")
    queue.add("b")
    assert sample(name, "gpuctl_workqueue_adds_total") == 2
    assert sample(name, "gpuctl_workqueue_depth") == 2
    key = await get_now(queue)
    assert sample(name, "gpuctl_workqueue_depth") == 1
    assert sample(name, "gpuctl_workqueue_queue_duration_seconds_count") == 1
    assert sample(name, "gpuctl_workqueue_longest_running_processor_seconds") >= 0
    await asyncio.sleep(0.01)
    assert sample(name, "gpuctl_workqueue_longest_running_processor_seconds") > 0
    queue.done(key)
    assert sample(name, "gpuctl_workqueue_work_duration_seconds_count") == 1
    assert sample(name, "gpuctl_workqueue_longest_running_processor_seconds") == 0
    queue.add_rate_limited("c")
    assert sample(name, "gpuctl_workqueue_retries_total") == 1
