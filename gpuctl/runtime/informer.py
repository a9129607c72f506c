"""An informer: list, then watch, one resource into a `Store`, telling handlers of changes.

This is client-go's reflector + shared informer, on raw JSON dicts:

1. LIST with resourceVersion "0" (served from the API server's watch cache), following
   pagination. The store is `replace`d by the list and handlers hear the difference
   against what the store held before: `on_add` for a new key, `on_update(old, new)` for
   a key already present (changed or not), `on_delete(last known object)` for a key the
   list no longer has -- that is how deletes missed while disconnected are delivered.
   Adds and updates come first, then deletes, as client-go's DeltaFIFO orders them.
2. WATCH from the list's resourceVersion with allowWatchBookmarks=true and a random
   timeoutSeconds in `watch_timeout` (default [300, 600], spreading reconnects).
   ADDED/MODIFIED upsert the store and call `on_add`, or `on_update` when the key was
   cached; DELETED removes it and calls `on_delete` with the event's object. BOOKMARK
   only advances the resourceVersion and is never delivered.
3. When the server ends the watch: watch again from the last resourceVersion.
   410 Gone / "too old resource version" (as HTTP status or as a watch ERROR event):
   relist from the last resourceVersion -- without `limit`, so the watch cache answers
   "not older than" at its current RV, unless the first list came back in pages (no
   watch cache: a paginated list at an RV is exact); if that list fails as expired (or
   "too large"), relist with resourceVersion "" (a quorum read). A second 410 in a row
   with no event in between backs off and makes the next list a quorum one, so a
   resourceVersion the watch cache has already passed cannot make us spin.
   Any other failure (connection refused or reset, 5xx, 429, `read_timeout` seconds of
   silence -- a bookmark arrives about every 60 s, so 70 s of silence is a dead
   connection): back off, then watch again from the last resourceVersion (a failed list
   is retried as a list). Backoff: 0.8 s doubling to 30 s, jittered down by up to 20 %,
   back to 0.8 s after 2 minutes without a failure (client-go's reflector numbers).
4. The store is updated before handlers run, so a handler reading the store sees the
   event's effect. Handlers are synchronous and should only enqueue work; an exception
   in one is logged and counted, never stops the informer or other handlers.

`has_synced` turns True once the first list has been delivered. `run()` runs until it
is cancelled or `stop()` is called (then it returns normally). Optional `resync_period`
re-delivers every cached object as `on_update(obj, obj)` that often. `transform` is
applied to each object before it is cached (e.g. `drop_managed_fields`, which saves
much of the memory of 10,000 Nodes). `stats` counts lists, watches, events and
failures for tests and metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import Any, Protocol

import attrs

from gpuctl.runtime.client import (
    ApiError,
    Client,
    ListResult,
    TransportError,
    is_gone,
    is_resource_version_too_large,
)
from gpuctl.runtime.resources import Resource
from gpuctl.runtime.store import Store

JSON = dict[str, Any]
Transform = Callable[[JSON], JSON]

log = logging.getLogger(__name__)


class ResourceEventHandler(Protocol):
    """What an informer tells; called on the event loop, must not block."""

    def on_add(self, obj: JSON) -> None: ...

    def on_update(self, old: JSON, new: JSON) -> None: ...

    def on_delete(self, obj: JSON) -> None: ...


def drop_managed_fields(obj: JSON) -> JSON:
    """A `transform` that drops `metadata.managedFields` (often half of an object)."""
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
    return obj


@attrs.frozen
class Backoff:
    """Exponential reconnect backoff (client-go reflector: 800 ms, x2, 30 s, reset 2 min)."""

    initial: float = 0.8
    factor: float = 2.0
    cap: float = 30.0
    jitter: float = 0.2  # each delay is shortened by a random fraction up to this
    reset_after: float = 120.0  # this long without a failure starts over at `initial`


class BackoffTimer:
    """The delays of one `Backoff` policy, with its reset-after-quiet rule."""

    def __init__(
        self,
        policy: Backoff,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.policy = policy
        self._clock = clock
        self._rand = rand
        self._base = policy.initial
        self._last: float | None = None

    def next_delay(self) -> float:
        now = self._clock()
        if self._last is not None and now - self._last > self.policy.reset_after:
            self._base = self.policy.initial
        self._last = now
        base = min(self._base, self.policy.cap)
        self._base = min(self._base * self.policy.factor, self.policy.cap)
        return base * (1.0 - self.policy.jitter * self._rand())


@attrs.define
class InformerStats:
    lists: int = 0  # LIST calls that succeeded (the first one included)
    relists: int = 0  # successful lists after the first
    quorum_lists: int = 0  # lists with resourceVersion "" (after an expired relist)
    watches: int = 0  # WATCH requests started
    events: int = 0  # ADDED/MODIFIED/DELETED events applied
    bookmarks: int = 0
    expired: int = 0  # 410 Gone / too old (or too large) resourceVersion answers
    errors: int = 0  # other failed lists and watches
    handler_errors: int = 0
    resyncs: int = 0


class Informer:
    """Keeps `store` in sync with one resource (optionally one namespace, selectors)."""

    def __init__(
        self,
        client: Client,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        name: str | None = None,
        resync_period: float | None = None,
        watch_timeout: tuple[int, int] = (300, 600),
        read_timeout: float = 70.0,
        backoff: Backoff | None = None,
        page_size: int = 500,
        transform: Transform | None = None,
    ) -> None:
        self.client = client
        self.resource = resource
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.name = name or (
            f"{resource.qualified_name}/{namespace}" if namespace else resource.qualified_name
        )
        self.resync_period = resync_period
        self.watch_timeout = watch_timeout
        self.read_timeout = read_timeout
        self.page_size = page_size
        self.transform = transform
        self.store = Store()
        self.stats = InformerStats()
        self._backoff = BackoffTimer(backoff or Backoff())
        self._handlers: list[ResourceEventHandler] = []
        self._synced = asyncio.Event()
        self._last_rv = ""
        self._rv_unavailable = False  # client-go's isLastSyncResourceVersionUnavailable
        self._gone_in_a_row = 0
        self._need_list = True
        self._paginated = False  # did the server split the first list into pages?
        self._stop_requested = False
        self._task: asyncio.Task[None] | None = None

    # -- public surface ------------------------------------------------------------

    @property
    def has_synced(self) -> bool:
        return self._synced.is_set()

    @property
    def last_sync_resource_version(self) -> str:
        """The resourceVersion of the last list, event or bookmark applied."""
        return self._last_rv

    def add_handler(self, handler: ResourceEventHandler) -> None:
        """Subscribe; a handler added after the first sync is told of every cached
        object with `on_add` first (as client-go's AddEventHandler does)."""
        self._handlers.append(handler)
        if self.has_synced:
            for obj in self.store.list():
                self._call(handler.on_add, obj)

    async def wait_synced(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """True once the first list is delivered; False if `timeout` passes first."""
        try:
            async with asyncio.timeout(timeout):
                await self._synced.wait()
        except TimeoutError:
            return False
        return True

    def stop(self) -> None:
        """Make `run()` return (at once if it has not started yet)."""
        self._stop_requested = True
        if self._task is not None:
            self._task.cancel()

    async def run(self) -> None:
        if self._task is not None:
            raise RuntimeError(f"informer {self.name} is already running")
        if self._stop_requested:
            return
        self._task = asyncio.create_task(self._run(), name=f"informer:{self.name}")
        try:
            await self._task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not self._stop_requested or (current is not None and current.cancelling()):
                raise
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # -- the loop ------------------------------------------------------------------

    async def _run(self) -> None:
        resync = None
        if self.resync_period:
            resync = asyncio.create_task(self._resync_loop(self.resync_period))
        try:
            while True:
                await self._cycle()
        finally:
            if resync is not None:
                resync.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await resync

    async def _cycle(self) -> None:
        """A list (when needed) and one watch, or the recovery from their failure."""
        phase = "list" if self._need_list else "watch"
        try:
            if self._need_list:
                await self._list()
                self._need_list = False
                phase = "watch"
            await self._watch()  # returns when the server ends the watch: watch again
        except ApiError as err:
            if is_gone(err):
                await self._on_gone(err)
            else:
                await self._on_failure(err, phase)
        except TransportError as err:
            await self._on_failure(err, phase)
        except Exception:
            # A bug (or an undecodable answer): start over from a list, never die.
            log.exception("informer %s: unexpected error; relisting after backoff", self.name)
            self.stats.errors += 1
            self._need_list = True
            await asyncio.sleep(self._backoff.next_delay())

    async def _on_gone(self, err: ApiError) -> None:
        self.stats.expired += 1
        self._gone_in_a_row += 1
        self._need_list = True
        if self._gone_in_a_row > 1:
            # The list we just made did not get us a watchable resourceVersion (an exact
            # paginated list can return an RV the watch cache has already passed): make
            # the next list a quorum read, which is always current, and do not spin.
            self._rv_unavailable = True
            await asyncio.sleep(self._backoff.next_delay())
        log.info("informer %s: %s; relisting", self.name, err)

    async def _on_failure(self, err: Exception, phase: str) -> None:
        self.stats.errors += 1
        delay = self._backoff.next_delay()
        log.warning("informer %s: %s failed: %s; retrying in %.1fs", self.name, phase, err, delay)
        await asyncio.sleep(delay)

    async def _list(self) -> None:
        rv = "" if self._rv_unavailable else (self._last_rv or "0")
        try:
            result = await self._list_at(rv)
        except ApiError as err:
            if not (is_gone(err) or is_resource_version_too_large(err)):
                raise
            self.stats.expired += 1
            log.info("informer %s: list at %s: %s; quorum relist", self.name, rv, err)
            self._rv_unavailable = True
            rv = ""
            result = await self._list_at(rv)
        if rv == "":
            self.stats.quorum_lists += 1
        if self.stats.lists == 0:
            self._paginated = result.pages > 1
        else:
            self.stats.relists += 1
        self.stats.lists += 1
        self._rv_unavailable = False
        self._last_rv = result.resource_version
        self._replace(result.items)
        self._synced.set()

    async def _list_at(self, resource_version: str) -> ListResult:
        # client-go's reflector: a relist from a specific resourceVersion goes without
        # `limit` (so "not older than", served from the watch cache at its current RV)
        # unless the first list showed the server paginates (no watch cache), where a
        # paginated list at an RV is exact and fails with 410 once etcd compacted it.
        specific = resource_version not in ("", "0")
        limit = None if specific and not self._paginated else self.page_size
        return await self.client.list_all(
            self.resource,
            namespace=self.namespace,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
            resource_version=resource_version,
            limit=limit,
        )

    async def _watch(self) -> None:
        self.stats.watches += 1
        stream = self.client.watch(
            self.resource,
            namespace=self.namespace,
            resource_version=self._last_rv,
            timeout_seconds=random.randint(*self.watch_timeout),
            allow_bookmarks=True,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
            read_timeout=self.read_timeout,
        )
        async with contextlib.aclosing(stream):
            async for kind, obj in stream:
                self._gone_in_a_row = 0
                self._apply(kind, obj)

    # -- delivery ------------------------------------------------------------------

    def _apply(self, kind: str, obj: JSON) -> None:
        rv = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        if kind == "BOOKMARK":
            self.stats.bookmarks += 1
        elif kind in ("ADDED", "MODIFIED"):
            obj = self._transformed(obj)
            old = self.store.add(obj)
            if old is None:
                self._dispatch("on_add", obj)
            else:
                self._dispatch("on_update", old, obj)
            self.stats.events += 1
        elif kind == "DELETED":
            obj = self._transformed(obj)
            self.store.delete(obj)
            self._dispatch("on_delete", obj)
            self.stats.events += 1
        else:
            log.warning("informer %s: ignoring watch event of type %r", self.name, kind)
            return
        if rv:
            self._last_rv = rv

    def _replace(self, items: list[JSON]) -> None:
        items = [self._transformed(obj) for obj in items]
        previous = [self.store.get_for(obj) for obj in items]
        gone = self.store.replace(items)
        for obj, old in zip(items, previous, strict=True):
            if old is None:
                self._dispatch("on_add", obj)
            else:
                self._dispatch("on_update", old, obj)
        for obj in gone:
            self._dispatch("on_delete", obj)

    def _transformed(self, obj: JSON) -> JSON:
        return self.transform(obj) if self.transform is not None else obj

    def _dispatch(self, method: str, *args: JSON) -> None:
        for handler in list(self._handlers):
            self._call(getattr(handler, method), *args)

    def _call(self, fn: Callable[..., None], *args: JSON) -> None:
        try:
            fn(*args)
        except Exception:
            self.stats.handler_errors += 1
            log.exception("informer %s: handler %r failed", self.name, fn)

    async def _resync_loop(self, period: float) -> None:
        await self._synced.wait()
        while True:
            await asyncio.sleep(period)
            self.stats.resyncs += 1
            for obj in self.store.list():
                self._dispatch("on_update", obj, obj)
