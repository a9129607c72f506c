"""A controller: sources feed a rate-limited work queue drained by reconcile workers.

Mirrors controller-runtime's `pkg/internal/controller`:

- `watch(source, handler)` registers `handler` (default `EnqueueForObject`) on a
  source (an informer: `add_handler()`, `has_synced`, `wait_synced()`); call it
  before `run()`.
- `run()` waits until every source has synced (at most `cache_sync_timeout`
  seconds, else `CacheSyncTimeout`), then runs `workers` workers until `stop()`.
  Each worker loops: `get` a key, `reconcile(key)`, act on the outcome, `done(key)`:

  | outcome                         | queue action                   | `result` label  |
  | ------------------------------- | ------------------------------ | --------------- |
  | raised `TerminalError`          | `forget`                       | `terminal`      |
  | raised any other `Exception`    | `add_rate_limited`             | `error`         |
  | `Result(requeue_after=s)`, s>0  | `forget`, `add_after(s)`       | `requeue_after` |
  | `Result(requeue=True)`          | `add_rate_limited`             | `requeue`       |
  | `Result()`                      | `forget`                       | `success`       |

  A reconcile can never kill a worker: every `Exception` is caught, logged and
  counted (`gpuctl_reconcile_errors_total` counts both error kinds). Because the
  queue never hands out a key that is being processed, several workers never
  reconcile the same key at once.
- `set_workers(n)` changes the number of workers, also while running: more start at
  once; surplus ones exit when they finish their current reconcile (a worker never
  drops a key it holds). The queue's guarantees do not depend on the count.
- `stop()` is the graceful stop: the queue is shut down, workers finish the
  reconcile they are in, drop whatever is still queued, and `run()` returns.
  Cancelling `run()` instead is the hard stop: in-flight reconciles are cancelled.

controller-runtime differences: a terminal error also resets the key's backoff
(see reconcile.py), and a controller cannot be restarted once stopped (neither
can controller-runtime's, which refuses a second `Start`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from gpuctl.runtime import metrics as m
from gpuctl.runtime.handler import EnqueueForObject, QueueHandler
from gpuctl.runtime.queue import RateLimitingQueue, ShutDown
from gpuctl.runtime.ratelimit import RateLimiter
from gpuctl.runtime.reconcile import Reconciler, Result, TerminalError

log = logging.getLogger(__name__)

_RESULTS = ("success", "error", "terminal", "requeue", "requeue_after")


class EventHandler(Protocol):
    """What an informer calls, synchronously, for each event (objects are raw JSON dicts)."""

    def on_add(self, obj: dict[str, Any]) -> None: ...

    def on_update(self, old: dict[str, Any], new: dict[str, Any]) -> None: ...

    def on_delete(self, obj: dict[str, Any]) -> None: ...


class Source(Protocol):
    """The part of an informer a controller uses."""

    def add_handler(self, handler: Any) -> None: ...

    @property
    def has_synced(self) -> bool: ...

    async def wait_synced(self, timeout: float | None = None) -> bool: ...  # noqa: ASYNC109


class CacheSyncTimeout(RuntimeError):  # noqa: N818 - reads better at the raise site
    """A source did not finish its initial list in time."""


class Controller:
    """Runs `reconciler` for every key its sources enqueue; see the module docstring."""

    def __init__(
        self,
        name: str,
        reconciler: Reconciler,
        *,
        workers: int = 1,
        rate_limiter: RateLimiter | None = None,
        metrics: bool = True,
        cache_sync_timeout: float = 120.0,
    ) -> None:
        if workers < 1:
            raise ValueError("a controller needs at least one worker")
        self.name = name
        self.reconciler = reconciler
        self.workers = workers
        self.cache_sync_timeout = cache_sync_timeout
        self.queue: RateLimitingQueue[str] = RateLimitingQueue(
            rate_limiter, name=name if metrics else None
        )
        self._metrics = _ControllerMetrics(name) if metrics else None
        self._sources: list[Source] = []
        self._stop = asyncio.Event()
        self._started = False
        self._group: asyncio.TaskGroup | None = None
        self._live = 0  # worker tasks running
        self._spawned = 0

    def watch(self, source: Source, handler: EventHandler | None = None) -> None:
        """Feed `source`'s events into the queue through `handler`.

        An enqueueing handler without an `initial_list` hook is bound to the
        source, so the source's initial list is enqueued at low priority.
        """
        chosen = handler if handler is not None else EnqueueForObject(self.queue)
        if isinstance(chosen, QueueHandler) and chosen.initial_list is None:
            chosen.initial_list = _initial_list_of(source)
        source.add_handler(chosen)
        self._sources.append(source)

    async def run(self) -> None:
        """Wait for the sources to sync, then reconcile until `stop()`."""
        if self._started:
            raise RuntimeError(f"controller {self.name} was already started")
        self._started = True
        try:
            if not await self._wait_for_sources():
                return
            log.info("controller %s: starting %d worker(s)", self.name, self.workers)
            async with asyncio.TaskGroup() as group:
                self._group = group
                self._spawn()
            log.info("controller %s: all workers finished", self.name)
        finally:
            self._group = None
            self.queue.shutdown()

    def set_workers(self, workers: int) -> None:
        """Run `workers` workers from now on (see the module docstring)."""
        if workers < 1:
            raise ValueError("a controller needs at least one worker")
        if workers != self.workers:
            log.info("controller %s: %d -> %d worker(s)", self.name, self.workers, workers)
        self.workers = workers
        if self._group is not None and not self.stopping:
            self._spawn()

    def _spawn(self) -> None:
        assert self._group is not None
        while self._live < self.workers:
            self._live += 1
            self._spawned += 1
            self._group.create_task(self._worker(), name=f"{self.name}-worker-{self._spawned}")

    def stop(self) -> None:
        """Stop taking work; `run()` returns once in-flight reconciles are done."""
        self._stop.set()
        self.queue.shutdown()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def _wait_for_sources(self) -> bool:
        """True once all sources synced; False if stopped first; raises on timeout."""
        synced = asyncio.ensure_future(self._sync_all())
        stopped = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({synced, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (synced, stopped):
                task.cancel()
        if not synced.done() or synced.cancelled():
            return False
        if not synced.result():
            raise CacheSyncTimeout(
                f"controller {self.name}: sources not synced after {self.cache_sync_timeout}s"
            )
        return not self.stopping

    async def _sync_all(self) -> bool:
        results = await asyncio.gather(
            *(source.wait_synced(self.cache_sync_timeout) for source in self._sources)
        )
        return all(results)

    async def _worker(self) -> None:
        try:
            while self._live <= self.workers:  # a surplus worker leaves between keys
                try:
                    key = await self.queue.get()
                except ShutDown:
                    return
                try:
                    if not self.stopping:
                        await self._process(key)
                finally:
                    self.queue.done(key)
        finally:
            self._live -= 1

    async def _process(self, key: str) -> None:
        outcome = self._reconcile_outcome
        started = time.monotonic()
        if self._metrics:
            self._metrics.active.inc()
        try:
            result = await self.reconciler.reconcile(key)
            if not isinstance(result, Result):
                raise TypeError(f"reconcile returned {result!r}, not a Result")
        except TerminalError as err:
            self.queue.forget(key)
            log.error("controller %s: %s: terminal error, not retrying: %s", self.name, key, err)
            outcome("terminal", error=True)
            return
        except Exception:
            retries = self.queue.num_requeues(key)
            self.queue.add_rate_limited(key)
            log.exception("controller %s: %s: reconcile failed (retry %d)", self.name, key, retries)
            outcome("error", error=True)
            return
        finally:
            if self._metrics:
                self._metrics.active.dec()
                self._metrics.duration.observe(time.monotonic() - started)
        if result.delay:
            self.queue.forget(key)
            self.queue.add_after(key, result.delay)
            outcome("requeue_after")
        elif result.requeue:
            self.queue.add_rate_limited(key)
            outcome("requeue")
        else:
            self.queue.forget(key)
            outcome("success")

    def _reconcile_outcome(self, result: str, *, error: bool = False) -> None:
        if self._metrics:
            self._metrics.total[result].inc()
            if error:
                self._metrics.errors.inc()


def _initial_list_of(source: Source) -> Callable[[], bool]:
    return lambda: not source.has_synced


class _ControllerMetrics:
    """The controller's label children, created up front so every series reads 0 from start."""

    def __init__(self, name: str) -> None:
        self.total = {result: m.RECONCILE_TOTAL.labels(name, result) for result in _RESULTS}
        self.errors = m.RECONCILE_ERRORS.labels(name)
        self.duration = m.RECONCILE_DURATION.labels(name)
        self.active = m.ACTIVE_WORKERS.labels(name)
