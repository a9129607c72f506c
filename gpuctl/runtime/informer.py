"""An informer: list, then watch, one resource into a `Store`, telling handlers of changes.

This is client-go's reflector (tools/cache/reflector.go, its pager and its backoff) plus
the part of the shared informer that calls handlers, on raw JSON dicts. The loop is the
reflector's `Run`: `list_and_watch()`, then a backoff delay, then again, forever.

1. LIST at the "relist resourceVersion": "0" the first time (served from the API
   server's watch cache), then the last resourceVersion seen, or "" (a quorum read)
   once that one is known to be unavailable. Pagination follows client-go's pager:
   `limit=page_size` for "0" and "", none for a specific RV (so the watch cache answers
   "not older than" at its current RV) unless a list at "0" came back in pages (no
   watch cache: then every list paginates). A continue token that expires (410) falls
   back to one unpaginated list at the requested RV. A list that fails as expired or
   "too large resource version" is retried at once with resourceVersion "".
   The store is `replace`d and handlers hear the difference: `on_add` for a new key,
   `on_update(old, new)` for a cached key **whose resourceVersion changed**,
   `on_delete(last known object)` for a key the list no longer has -- deletes missed
   while not watching are delivered that way. Objects whose resourceVersion did not
   change are not delivered: client-go's shared informer treats such updates as resync
   events and hands them only to listeners that asked for resyncs (ours ask with
   `resync_period`, which re-delivers everything on its own timer).
   With a `transform`, an update whose transformed object equals the cached one but for
   `metadata.resourceVersion` is stored (the new resourceVersion is what a write must
   name) and not delivered either (`stats.unchanged_content`): the transform keeps
   every field any reader uses, so such an update -- a kubelet's heartbeat in a Node's
   `lastHeartbeatTime`, a Pod's container statuses -- shows no reader anything new, and
   would only wake its controllers for nothing (controller-runtime leaves that filter to
   each handler's predicates; here it lives where the kept fields are decided). A
   change the readers can see, e.g. a Node's Ready condition going Unknown, is
   delivered as before.
2. WATCH from the list's resourceVersion with allowWatchBookmarks=true and
   timeoutSeconds random in [300, 600) (`watch_timeout`). ADDED/MODIFIED upsert and
   call `on_add`, or `on_update` if the resourceVersion changed; DELETED removes and
   calls `on_delete` with the event's object. BOOKMARK only advances the
   resourceVersion and is never delivered.
3. How a watch ends decides what comes next (client-go's `watch` and `handleWatch`):
   - the server closes it (timeoutSeconds), or the connection breaks or goes silent for
     `read_timeout` seconds (EOF, reset, timeout): watch again at once from the last
     resourceVersion -- unless it lasted under a second without a single event (a
     "very short watch"): then back off and relist;
   - connection refused, or 429 Too Many Requests (HTTP answer or ERROR event): back
     off and watch again from the last resourceVersion (no relist);
   - 410 Gone, a 500 or any other error (HTTP answer or ERROR event), an undecodable
     event: back off and **relist** -- the watch may have lost events, and only a list
     shows what was deleted meanwhile.
   A failed list is retried as a list after the backoff.
4. Backoff (client-go's `wait.Backoff{0.8s, x2, jitter 1.0, cap 30s}` with
   `DelayWithReset(2 min)`): 0.8 s doubling to 30 s, each delay d stretched to a random
   value in [d, 2d); the sequence starts over at 0.8 s when two minutes have passed since
   it last started over. It runs before every relist and every retried watch, so nothing
   loops tightly against a failing API server.
5. The store is updated before handlers run, so a handler reading the store sees the
   event's effect. Handlers are synchronous and should only enqueue work; an exception
   in one is logged and counted, never stops the informer or other handlers.

Not implemented: client-go's streaming list (`sendInitialEvents`, WatchListClient) and
`MaxInternalErrorRetryDuration` (off by default in client-go as well).

`has_synced` turns True once the first list has been delivered. `run()` runs until it
is cancelled or `stop()` is called (then it returns normally). Optional `resync_period`
re-delivers every cached object as `on_update(obj, obj)` that often. `transform` is
applied to each object before it is cached (e.g. `drop_managed_fields`, which saves
much of the memory of 10,000 Nodes): to each item of a list as soon as the client has
decoded that item (`Client.list(item=...)`: the whole decoded list never exists, which
matters because the watch cache answers a list at "0" in one page), and to each
watched object. `list_gate`, a semaphore shared by several informers, bounds how many
of them list at once: a list's answer is held whole (bytes, then text) while its items
are decoded, so two big lists at once add their peaks up, and the process keeps that
peak (VmHWM: freed memory mostly stays with the process). The operator gives its
informers one gate of 1. `stats` counts lists, watches, events, backoffs and failures
for tests and metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import random
import time
from collections.abc import Awaitable, Callable
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

# A watch that ends within this many seconds without any event (bookmarks count) is
# "very short": client-go's VeryShortWatchError, handled by backing off and relisting.
VERY_SHORT_WATCH = 1.0


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
    """Reconnect backoff policy; the defaults are client-go's reflector's."""

    initial: float = 0.8
    factor: float = 2.0
    cap: float = 30.0  # the base delay stops growing here (jitter still applies)
    jitter: float = 1.0  # each delay d becomes d + U[0, 1) * jitter * d (wait.Jitter)
    reset_after: float = 120.0  # start over at `initial` this long after the last start


class BackoffTimer:
    """The delays of one `Backoff` policy: apimachinery's `Backoff.DelayWithReset`.

    The sequence (re)starts when the timer is created and whenever `next_delay` is
    called more than `reset_after` seconds after the last (re)start -- so after two
    quiet minutes, and also every two minutes or so during a long outage.
    """

    def __init__(
        self,
        policy: Backoff,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.policy = policy
        self._clock = clock
        self._rand = rand
        self._duration = policy.initial
        self._started = clock()

    def next_delay(self) -> float:
        now = self._clock()
        if now - self._started > self.policy.reset_after:
            self._duration = self.policy.initial
            self._started = now
        delay = self._duration
        grown = self._duration * self.policy.factor
        self._duration = min(grown, self.policy.cap) if self.policy.cap > 0 else grown
        if self.policy.jitter > 0:
            delay += self._rand() * self.policy.jitter * delay
        return delay


@attrs.define
class InformerStats:
    lists: int = 0  # LIST calls that succeeded (the first one included)
    relists: int = 0  # successful lists after the first
    quorum_lists: int = 0  # successful lists with resourceVersion ""
    full_lists: int = 0  # unpaginated retries after a continue token expired
    watches: int = 0  # WATCH requests started
    events: int = 0  # ADDED/MODIFIED/DELETED events applied
    bookmarks: int = 0
    unchanged: int = 0  # listed or watched objects not delivered: same resourceVersion
    # ... not delivered: a new resourceVersion, the same transformed content
    unchanged_content: int = 0
    expired: int = 0  # 410 Gone / too old (or too large) resourceVersion answers
    errors: int = 0  # other failed lists and watches (broken connections included)
    throttled: int = 0  # watches answered 429 (retried after a backoff, no relist)
    refused: int = 0  # watches whose connection was refused (likewise)
    short_watches: int = 0  # watches that ended within 1 s without an event
    backoffs: int = 0  # backoff delays waited
    backoff_seconds: float = 0.0  # their total
    handler_errors: int = 0
    resyncs: int = 0


class VeryShortWatchError(Exception):
    """The watch ended within a second without any event (client-go's error of that name)."""


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
        list_gate: asyncio.Semaphore | None = None,
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
        self.list_gate = list_gate
        self.store = Store()
        self.stats = InformerStats()
        # Injectable for tests: the clock that times watches, and how backoffs wait.
        self._clock: Callable[[], float] = time.monotonic
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self._backoff = BackoffTimer(backoff or Backoff())
        self._handlers: list[ResourceEventHandler] = []
        self._synced = asyncio.Event()
        self._last_rv = ""
        self._rv_unavailable = False  # client-go's isLastSyncResourceVersionUnavailable
        self._paginated = False  # did a list at "0" come back in pages (no watch cache)?
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
            while True:  # client-go: delayHandler.Until(immediate, sliding, ListAndWatch)
                try:
                    await self._list_and_watch()
                except (ApiError, TransportError, VeryShortWatchError) as err:
                    self._on_list_and_watch_error(err)
                except Exception:
                    # A bug (or an undecodable answer): start over from a list, never die.
                    log.exception("informer %s: unexpected error; relisting", self.name)
                    self.stats.errors += 1
                await self._back_off()
        finally:
            if resync is not None:
                resync.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await resync

    async def _list_and_watch(self) -> None:
        """One list, then watches until one ends in a way that calls for a relist
        (by raising, or by returning after a 410 / other error it has logged)."""
        await self._list()
        await self._watch_until_relist()

    def _on_list_and_watch_error(self, err: Exception) -> None:
        """client-go's DefaultWatchErrorHandler: log (and count) by kind."""
        if isinstance(err, ApiError) and is_gone(err):
            self.stats.expired += 1
            log.info("informer %s: %s; relisting", self.name, err)
        elif isinstance(err, VeryShortWatchError):
            self.stats.short_watches += 1
            log.warning("informer %s: %s; relisting", self.name, err)
        else:
            self.stats.errors += 1
            log.warning("informer %s: %s; relisting", self.name, err)

    async def _back_off(self) -> None:
        delay = self._backoff.next_delay()
        self.stats.backoffs += 1
        self.stats.backoff_seconds += delay
        await self._sleep(delay)

    # -- list ----------------------------------------------------------------------

    def _relist_resource_version(self) -> str:
        if self._rv_unavailable:
            return ""
        return self._last_rv or "0"

    async def _list(self) -> None:
        rv = self._relist_resource_version()
        # client-go's reflector: a list at a specific resourceVersion goes without
        # `limit` (so the watch cache answers "not older than" at its current RV)
        # unless a list at "0" showed that the server paginates (no watch cache).
        limit = None if rv not in ("", "0") and not self._paginated else self.page_size
        async with self.list_gate or contextlib.nullcontext():
            try:
                result = await self._list_pages(rv, limit)
            except ApiError as err:
                if not (is_gone(err) or is_resource_version_too_large(err)):
                    raise
                self.stats.expired += 1
                log.info("informer %s: list at %r: %s; quorum relist", self.name, rv, err)
                self._rv_unavailable = True
                rv = self._relist_resource_version()
                result = await self._list_pages(rv, limit)
        if rv == "":
            self.stats.quorum_lists += 1
        if rv == "0" and result.pages > 1:
            self._paginated = True
        if self.stats.lists:
            self.stats.relists += 1
        self.stats.lists += 1
        self._rv_unavailable = False
        self._last_rv = result.resource_version
        self._replace(result.items)
        self._synced.set()

    async def _list_pages(self, resource_version: str, limit: int | None) -> ListResult:
        """client-go's pager (FullListIfExpired): every page of a list; if a continue
        token expires (410), one unpaginated list at the requested resourceVersion."""
        query: dict[str, Any] = {
            "namespace": self.namespace,
            "label_selector": self.label_selector,
            "field_selector": self.field_selector,
        }
        query["item"] = self._item  # each item typed and transformed as it is decoded
        page = await self.client.list(
            self.resource, resource_version=resource_version, limit=limit, **query
        )
        first_rv = _list_rv(page)
        items = self._typed(page)
        pages = 1
        while token := (page.get("metadata") or {}).get("continue"):
            try:
                # Later pages carry only the token (resourceVersion with continue is refused).
                page = await self.client.list(self.resource, limit=limit, continue_=token, **query)
            except ApiError as err:
                if not is_gone(err):
                    raise
                self.stats.full_lists += 1
                log.info("informer %s: continue token expired (%s); full list", self.name, err)
                full = await self.client.list(
                    self.resource, resource_version=resource_version, limit=None, **query
                )
                return ListResult(self._typed(full), _list_rv(full), pages)
            items += self._typed(page)
            pages += 1
        return ListResult(items, first_rv, pages)

    def _typed(self, page: JSON) -> list[JSON]:
        """The page's items, already typed and transformed by `_item` as the client
        decoded them (the page gives them up: it is not kept)."""
        return list(page.pop("items", None) or [])

    def _item(self, obj: JSON) -> JSON:
        """One listed object: apiVersion and kind (a list leaves them out), then the
        transform -- applied while the list is being decoded, so what it drops
        (managedFields, fields no controller reads) never exists for the whole list."""
        obj.setdefault("apiVersion", self.resource.api_version)
        obj.setdefault("kind", self.resource.kind)
        return self._transformed(obj)

    # -- watch ---------------------------------------------------------------------

    def _watch_timeout_seconds(self) -> int:
        low, high = self.watch_timeout
        return int(low + random.random() * (high - low))

    async def _watch_until_relist(self) -> None:
        """client-go's `Reflector.watch`: watch, and watch again, until a relist is due."""
        while True:
            start = self._clock()
            # Watching from "" or "0" starts with synthetic ADDED events at no particular
            # RV: only once another kind of event came does the RV move (client-go).
            propagate_rv = self._last_rv not in ("", "0")
            events = 0
            self.stats.watches += 1
            stream = self.client.watch(
                self.resource,
                namespace=self.namespace,
                resource_version=self._last_rv,
                timeout_seconds=self._watch_timeout_seconds(),
                allow_bookmarks=True,
                label_selector=self.label_selector,
                field_selector=self.field_selector,
                read_timeout=self.read_timeout,
            )
            try:
                async with contextlib.aclosing(stream):
                    async for kind, obj in stream:
                        events += 1
                        propagate_rv = propagate_rv or kind != "ADDED"
                        self._apply(kind, obj, set_rv=propagate_rv)
            except ApiError as err:
                if not _is_too_many_requests(err):
                    raise  # 410, 500, 403, ...: relist after a backoff
                self.stats.throttled += 1
                log.info("informer %s: watch: %s; backing off", self.name, err)
                await self._back_off()
                continue
            except TransportError as err:
                if _is_connection_refused(err):
                    self.stats.refused += 1
                    log.info("informer %s: watch: %s; backing off", self.name, err)
                    await self._back_off()
                    continue
                if _is_decode_error(err):
                    raise  # client-go turns it into an InternalError event: relist
                # EOF, reset or silence: to client-go the watch simply ended.
                self.stats.errors += 1
                log.info("informer %s: watch ended: %s", self.name, err)
            if events == 0 and self._clock() - start < VERY_SHORT_WATCH:
                raise VeryShortWatchError(
                    f"very short watch: {self.name}: unexpected watch close - "
                    "watch lasted less than a second and no items received"
                )

    # -- delivery ------------------------------------------------------------------

    def _apply(self, kind: str, obj: JSON, *, set_rv: bool = True) -> None:
        rv = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        if kind == "BOOKMARK":
            self.stats.bookmarks += 1
        elif kind in ("ADDED", "MODIFIED"):
            obj = self._transformed(obj)
            self._upserted(self.store.add(obj), obj)
            self.stats.events += 1
        elif kind == "DELETED":
            obj = self._transformed(obj)
            self.store.delete(obj)
            self._dispatch("on_delete", obj)
            self.stats.events += 1
        else:
            log.warning("informer %s: ignoring watch event of type %r", self.name, kind)
            return
        if rv and set_rv:
            self._last_rv = rv

    def _replace(self, items: list[JSON]) -> None:
        """Swap the store's content for a list's (items already transformed, page by page)."""
        previous = [self.store.get_for(obj) for obj in items]
        gone = self.store.replace(items)
        for obj, old in zip(items, previous, strict=True):
            self._upserted(old, obj)
        for obj in gone:
            self._dispatch("on_delete", obj)

    def _upserted(self, old: JSON | None, new: JSON) -> None:
        """Tell handlers of an add, or of an update that changed the resourceVersion.

        client-go's sharedIndexInformer.OnUpdate calls an update whose resourceVersion
        did not change a sync, and only listeners that asked for resyncs get it: after
        a relist, unchanged objects reach no handler (ours resync on their own timer).
        """
        if old is None:
            self._dispatch("on_add", new)
        elif _resource_version(old) == _resource_version(new) != "":
            self.stats.unchanged += 1
        elif self.transform is not None and _same_but_version(old, new):
            self.stats.unchanged_content += 1
        else:
            self._dispatch("on_update", old, new)

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


# -- error classification (client-go's isWatchErrorRetriable & co.) --------------------


def _resource_version(obj: JSON) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def _same_but_version(old: JSON, new: JSON) -> bool:
    """Equal objects apart from metadata.resourceVersion (deep equality, as the transform
    left them)."""
    if old.keys() != new.keys():
        return False
    if any(old[k] != new[k] for k in old if k != "metadata"):
        return False
    meta_old, meta_new = old.get("metadata") or {}, new.get("metadata") or {}
    if meta_old.keys() != meta_new.keys():
        return False
    return all(meta_old[k] == meta_new[k] for k in meta_old if k != "resourceVersion")


def _list_rv(page: JSON) -> str:
    return str((page.get("metadata") or {}).get("resourceVersion") or "")


def _is_too_many_requests(err: ApiError) -> bool:
    """apierrors.IsTooManyRequests: reason TooManyRequests or HTTP 429."""
    return err.reason == "TooManyRequests" or err.status == 429


def _is_connection_refused(err: BaseException) -> bool:
    """utilnet.IsConnectionRefused: ECONNREFUSED anywhere in the cause chain."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError):
            return True
        if isinstance(current, OSError) and current.errno == errno.ECONNREFUSED:
            return True
        os_error = getattr(current, "os_error", None)  # aiohttp.ClientConnectorError
        if isinstance(os_error, OSError) and (
            isinstance(os_error, ConnectionRefusedError) or os_error.errno == errno.ECONNREFUSED
        ):
            return True
        current = current.__cause__ or current.__context__
    return False


def _is_decode_error(err: TransportError) -> bool:
    """The watch stream carried something that is not a watch event (`client.watch`
    raises these with this wording); client-go reports it as an InternalError."""
    return str(err).startswith(("undecodable watch event", "malformed watch event"))
