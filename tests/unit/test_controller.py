"""Controller, handlers and reconcile results, with a fake reconciler and a fake source.

Nothing here touches Kubernetes: the source is a stand-in informer that calls
the registered handlers, the reconciler records calls and scripts its outcomes.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from gpuctl.runtime import metrics
from gpuctl.runtime.controller import CacheSyncTimeout, Controller
from gpuctl.runtime.handler import (
    GENERATION_CHANGED,
    RESOURCE_VERSION_CHANGED,
    AnyOf,
    EnqueueForObject,
    EnqueueMapped,
    Funcs,
    LabelsChanged,
    object_key,
    owner_keys,
)
from gpuctl.runtime.queue import WorkQueue
from gpuctl.runtime.ratelimit import ItemExponentialFailureRateLimiter
from gpuctl.runtime.reconcile import Result, TerminalError, merge_results

Outcome = Result | Exception | Callable[[], Any]


class FakeSource:
    """Stands in for an informer: handlers, a sync flag, and event injection."""

    def __init__(self, *, synced: bool = True) -> None:
        self.handlers: list[Any] = []
        self.synced = asyncio.Event()
        if synced:
            self.synced.set()

    def add_handler(self, handler: Any) -> None:
        self.handlers.append(handler)

    @property
    def has_synced(self) -> bool:
        return self.synced.is_set()

    async def wait_synced(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self.synced.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def add(self, obj: dict[str, Any]) -> None:
        for handler in self.handlers:
            handler.on_add(obj)


class FakeReconciler:
    """Records each call (key, loop time); answers from a per-key script, then Result()."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[tuple[str, float]] = []
        self.script: dict[str, list[Outcome]] = defaultdict(list)
        self.delay = delay
        self.in_flight: dict[str, int] = defaultdict(int)
        self.max_per_key = 0
        self.max_total = 0

    def times(self, key: str) -> list[float]:
        return [at for k, at in self.calls if k == key]

    async def reconcile(self, key: str) -> Result:
        self.calls.append((key, asyncio.get_running_loop().time()))
        self.in_flight[key] += 1
        self.max_per_key = max(self.max_per_key, self.in_flight[key])
        self.max_total = max(self.max_total, sum(self.in_flight.values()))
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            outcome = self.script[key].pop(0) if self.script[key] else Result()
            if isinstance(outcome, Exception):
                raise outcome
            if callable(outcome):
                return outcome()  # type: ignore[no-any-return]
            return outcome
        finally:
            self.in_flight[key] -= 1


def obj(name: str, namespace: str | None = None, **meta: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, **meta}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "Thing", "metadata": metadata}


def fast_limiter() -> ItemExponentialFailureRateLimiter:
    return ItemExponentialFailureRateLimiter(0.01, 1.0)


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


async def eventually(condition: Callable[[], bool], within: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.002)


@asynccontextmanager
async def running(controller: Controller) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(controller.run())
    try:
        yield task
    finally:
        controller.stop()
        await asyncio.wait_for(task, 5)


def reconcile_count(controller: str, result: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "gpuctl_reconcile_total", {"controller": controller, "result": result}
    )
    return value or 0.0


# --- controller ----------------------------------------------------------------


async def test_success_reconciles_once_and_forgets() -> None:
    reconciler = FakeReconciler()
    controller = Controller(unique("ok"), reconciler, rate_limiter=fast_limiter())
    source = FakeSource()
    controller.watch(source)
    async with running(controller):
        source.add(obj("a", "ns"))
        await eventually(lambda: reconcile_count(controller.name, "success") == 1)
    assert [k for k, _ in reconciler.calls] == ["ns/a"]
    assert controller.queue.num_requeues("ns/a") == 0


async def test_error_is_retried_with_backoff_then_forgotten() -> None:
    reconciler = FakeReconciler()
    reconciler.script["a"] = [RuntimeError("boom"), RuntimeError("boom again")]
    name = unique("err")
    controller = Controller(name, reconciler, rate_limiter=fast_limiter())
    async with running(controller):
        controller.queue.add("a")
        await eventually(lambda: reconcile_count(name, "success") == 1)
    times = reconciler.times("a")
    assert len(times) == 3
    assert times[1] - times[0] >= 0.01  # 10 ms, then 20 ms
    assert times[2] - times[1] >= 0.02
    assert controller.queue.num_requeues("a") == 0, "success forgets the failures"
    assert reconcile_count(name, "error") == 2
    errors = metrics.REGISTRY.get_sample_value(
        "gpuctl_reconcile_errors_total", {"controller": name}
    )
    assert errors == 2


async def test_terminal_error_is_not_retried() -> None:
    reconciler = FakeReconciler()
    reconciler.script["a"] = [TerminalError("spec is invalid")]
    name = unique("term")
    controller = Controller(name, reconciler, rate_limiter=fast_limiter())
    async with running(controller):
        controller.queue.add("a")
        await eventually(lambda: reconcile_count(name, "terminal") == 1)
        await asyncio.sleep(0.1)  # ten times the first backoff: a retry would show
    assert len(reconciler.times("a")) == 1
    assert controller.queue.num_requeues("a") == 0
    assert controller.queue.waiting() == 0


async def test_requeue_after_delays_and_resets_backoff() -> None:
    reconciler = FakeReconciler()
    reconciler.script["a"] = [RuntimeError("once"), Result(requeue_after=0.1)]
    name = unique("after")
    controller = Controller(name, reconciler, rate_limiter=fast_limiter())
    async with running(controller):
        controller.queue.add("a")
        await eventually(lambda: reconcile_count(name, "requeue_after") == 1)
        assert controller.queue.num_requeues("a") == 0
        await eventually(lambda: reconcile_count(name, "success") == 1)
    times = reconciler.times("a")
    assert len(times) == 3
    assert times[2] - times[1] >= 0.1


async def test_requeue_uses_the_rate_limiter() -> None:
    reconciler = FakeReconciler()
    reconciler.script["a"] = [Result(requeue=True), Result(requeue=True)]
    name = unique("requeue")
    controller = Controller(name, reconciler, rate_limiter=fast_limiter())
    async with running(controller):
        controller.queue.add("a")
        await eventually(lambda: reconcile_count(name, "requeue") == 2)
        assert controller.queue.num_requeues("a") == 2
        await eventually(lambda: reconcile_count(name, "success") == 1)
    assert controller.queue.num_requeues("a") == 0


async def test_failures_never_kill_the_worker() -> None:
    reconciler = FakeReconciler()
    reconciler.script["bad"] = [ValueError("x"), KeyError("y"), ZeroDivisionError()]
    reconciler.script["odd"] = [lambda: None]  # not a Result: an error, not a crash
    name = unique("sturdy")
    controller = Controller(name, reconciler, workers=1, rate_limiter=fast_limiter())
    async with running(controller) as task:
        controller.queue.add("bad")
        controller.queue.add("odd")
        await eventually(lambda: reconcile_count(name, "error") == 4)
        controller.queue.add("good")
        await eventually(lambda: reconcile_count(name, "success") == 3)
        assert not task.done()


async def test_workers_never_share_a_key_but_do_run_in_parallel() -> None:
    reconciler = FakeReconciler(delay=0.005)
    name = unique("parallel")
    controller = Controller(name, reconciler, workers=4, rate_limiter=fast_limiter())
    keys = [f"k{i}" for i in range(6)]
    async with running(controller):
        for _ in range(20):
            for key in keys:
                controller.queue.add(key)
            await asyncio.sleep(0.002)
        await eventually(lambda: len(controller.queue) == 0 and controller.queue.depth() == 0)
        await eventually(lambda: sum(reconciler.in_flight.values()) == 0)
    assert reconciler.max_per_key == 1
    assert reconciler.max_total > 1
    assert set(k for k, _ in reconciler.calls) == set(keys)


async def test_workers_start_only_after_sources_sync() -> None:
    reconciler = FakeReconciler()
    controller = Controller(unique("sync"), reconciler, rate_limiter=fast_limiter())
    source = FakeSource(synced=False)
    controller.watch(source)
    async with running(controller):
        source.add(obj("a"))
        await asyncio.sleep(0.05)
        assert reconciler.calls == []
        source.synced.set()
        await eventually(lambda: len(reconciler.calls) == 1)


async def test_sync_timeout_raises() -> None:
    controller = Controller(unique("slow"), FakeReconciler(), cache_sync_timeout=0.05)
    controller.watch(FakeSource(synced=False))
    with pytest.raises(CacheSyncTimeout):
        await asyncio.wait_for(controller.run(), 5)


async def test_stop_finishes_in_flight_reconciles_and_drops_the_rest() -> None:
    reconciler = FakeReconciler(delay=0.1)
    controller = Controller(unique("stop"), reconciler, rate_limiter=fast_limiter())
    task = asyncio.create_task(controller.run())
    controller.queue.add("a")
    controller.queue.add("b")
    await eventually(lambda: reconciler.in_flight["a"] == 1)
    controller.stop()
    await asyncio.wait_for(task, 5)
    assert reconciler.in_flight["a"] == 0, "the in-flight reconcile completed"
    assert [k for k, _ in reconciler.calls] == ["a"]
    controller.queue.add("c")
    assert len(controller.queue) == 0, "a stopped controller takes no work"


async def test_cancel_is_a_hard_stop() -> None:
    reconciler = FakeReconciler(delay=10)
    controller = Controller(unique("cancel"), reconciler)
    task = asyncio.create_task(controller.run())
    controller.queue.add("a")
    await eventually(lambda: reconciler.in_flight["a"] == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert reconciler.in_flight["a"] == 0
    assert not controller.queue.is_processing("a")


async def test_a_controller_runs_once() -> None:
    controller = Controller(unique("once"), FakeReconciler())
    async with running(controller):
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError):
            await controller.run()


async def test_watch_enqueues_the_initial_list_at_low_priority() -> None:
    reconciler = FakeReconciler()
    controller = Controller(unique("prio"), reconciler)
    source = FakeSource(synced=False)
    controller.watch(source)
    source.add(obj("initial-1"))
    source.add(obj("initial-2"))
    source.synced.set()
    source.add(obj("live"))
    async with running(controller):
        await eventually(lambda: len(reconciler.calls) == 3)
    assert [k for k, _ in reconciler.calls] == ["live", "initial-1", "initial-2"]


# --- handlers ------------------------------------------------------------------


def queued(queue: WorkQueue[str]) -> list[str]:
    """The keys waiting, in the order get() hands them out."""
    return [*queue._queue, *queue._low]


def test_object_key() -> None:
    assert object_key(obj("n1")) == "n1"
    assert object_key(obj("a", "ns")) == "ns/a"


def test_enqueue_for_object_on_every_event() -> None:
    queue: WorkQueue[str] = WorkQueue()
    handler = EnqueueForObject(queue)
    handler.on_add(obj("a", "ns"))
    handler.on_update(obj("b", resourceVersion="1"), obj("b", resourceVersion="2"))
    handler.on_delete(obj("c"))
    assert queued(queue) == ["ns/a", "b", "c"]


def test_resync_updates_go_in_at_low_priority() -> None:
    queue: WorkQueue[str] = WorkQueue()
    handler = EnqueueForObject(queue)
    handler.on_update(obj("resync", resourceVersion="5"), obj("resync", resourceVersion="5"))
    handler.on_update(obj("change", resourceVersion="5"), obj("change", resourceVersion="6"))
    assert list(queue._queue) == ["change"]
    assert list(queue._low) == ["resync"]


def test_enqueue_mapped_uses_old_and_new() -> None:
    queue: WorkQueue[str] = WorkQueue()

    def owner(o: dict[str, Any]) -> list[str]:
        label = o["metadata"].get("labels", {}).get("owner")
        return [label] if label else []

    handler = EnqueueMapped(queue, owner)
    old = obj("node", labels={"owner": "req-1"}, resourceVersion="1")
    new = obj("node", labels={"owner": "req-2"}, resourceVersion="2")
    handler.on_update(old, new)
    handler.on_add(obj("unowned"))
    assert queued(queue) == ["req-1", "req-2"]


def test_a_failing_map_function_is_contained() -> None:
    queue: WorkQueue[str] = WorkQueue()

    def fragile(o: dict[str, Any]) -> list[str]:
        return [o["metadata"]["labels"]["owner"]]

    handler = EnqueueMapped(queue, fragile)
    handler.on_update(obj("x"), obj("x", labels={"owner": "r"}))
    assert queued(queue) == ["r"]


def test_predicates() -> None:
    queue: WorkQueue[str] = WorkQueue()
    handler = EnqueueForObject(queue, predicates=[GENERATION_CHANGED])
    handler.on_update(obj("status-only", generation=1), obj("status-only", generation=1))
    handler.on_update(obj("spec", generation=1), obj("spec", generation=2))
    handler.on_add(obj("created"))  # update-only predicates accept creates
    assert queued(queue) == ["spec", "created"]

    queue = WorkQueue()
    handler = EnqueueForObject(queue, predicates=[RESOURCE_VERSION_CHANGED])
    handler.on_update(obj("same", resourceVersion="1"), obj("same", resourceVersion="1"))
    assert queued(queue) == []

    queue = WorkQueue()
    either = AnyOf(GENERATION_CHANGED, LabelsChanged())
    no_deletes = Funcs(delete=lambda o: False)
    handler = EnqueueForObject(queue, predicates=[either, no_deletes])
    handler.on_update(obj("l"), obj("l", labels={"x": "y"}))
    handler.on_update(obj("n", annotations={"a": "1"}), obj("n", annotations={"a": "2"}))
    handler.on_delete(obj("d"))
    assert queued(queue) == ["l"]


def test_owner_keys() -> None:
    refs = [
        {"apiVersion": "gpuctl.dev/v1alpha1", "kind": "GPUNodeRequest", "name": "r1"},
        {
            "apiVersion": "gpuctl.dev/v1alpha1",
            "kind": "GPUNodeRequest",
            "name": "r2",
            "controller": True,
        },
        {"apiVersion": "apps/v1", "kind": "GPUNodeRequest", "name": "other-group"},
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "core"},
    ]
    child = obj("c", "ns", ownerReferences=refs)
    assert owner_keys("gpuctl.dev", "GPUNodeRequest")(child) == ["ns/r1", "ns/r2"]
    assert owner_keys("gpuctl.dev", "GPUNodeRequest", only_controller=True)(child) == ["ns/r2"]
    assert owner_keys("gpuctl.dev", "GPUNodeRequest", cluster_scoped=True)(child) == ["r1", "r2"]
    assert owner_keys("", "ConfigMap")(child) == ["ns/core"]
    assert owner_keys("gpuctl.dev", "GPUNodeRequest")(obj("orphan")) == []


# --- results -------------------------------------------------------------------


def test_merge_results_soonest_wins() -> None:
    assert merge_results() == Result()
    assert merge_results(Result(), Result()) == Result()
    assert merge_results(Result(requeue_after=30), Result(requeue_after=5)) == Result(
        requeue_after=5
    )
    assert merge_results(Result(requeue_after=30), Result(requeue=True)) == Result(requeue=True)
    # requeue_after wins over requeue inside one result (the controller's precedence).
    assert merge_results(Result(requeue=True, requeue_after=10), Result()) == Result(
        requeue_after=10
    )
    assert merge_results(Result(requeue_after=0), Result(requeue_after=-1)) == Result()


def test_result_delay() -> None:
    assert Result().is_zero
    assert Result(requeue_after=0).is_zero
    assert Result(requeue_after=2).delay == 2
    assert not Result(requeue=True).is_zero


async def test_set_workers_grows_at_once_and_shrinks_between_keys() -> None:
    reconciler = FakeReconciler(delay=0.01)
    controller = Controller(unique("resize"), reconciler, workers=1, rate_limiter=fast_limiter())
    async with running(controller):
        controller.set_workers(6)
        for i in range(12):
            controller.queue.add(f"k{i}")
        await eventually(lambda: len(reconciler.calls) == 12)
        assert reconciler.max_total == 6
        controller.set_workers(2)
        reconciler.max_total = 0
        for i in range(12, 24):
            controller.queue.add(f"k{i}")
        await eventually(lambda: len(reconciler.calls) == 24)
        await eventually(lambda: sum(reconciler.in_flight.values()) == 0)
        assert controller._live == 2  # the surplus left after their next key
    assert reconciler.max_per_key == 1
    with pytest.raises(ValueError, match="at least one"):
        controller.set_workers(0)
