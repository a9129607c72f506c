"""Recording core/v1 Events about objects: client-go's EventRecorder and EventCorrelator.

`EventRecorder.record(obj, type, reason, message)` builds an Event about `obj` (in the
object's namespace; cluster-scoped objects such as Nodes in `namespace_for_cluster_scoped`,
"default", where kubectl looks for them), named `<object name>.<hex nanoseconds>` like
client-go's, with `involvedObject` = apiVersion, kind, name, namespace, uid,
resourceVersion of `obj`, `source.component`, `count` 1 and first/last timestamps; the
message is cut to 1024 characters. Then, as client-go's `recordToSink`:

1. the `EventCorrelator` (tools/record/events_cache.go, same defaults) looks at it:
   - **aggregation**: events that differ only in their message (same source, object,
     type, reason) are "similar"; once 10 distinct messages were seen within 600 s of
     each other, further similar events become one Event whose message is
     "(combined from similar events): <message>", counted like a repeat;
   - **counting**: a repeat of an Event seen before (same source, object, type, reason,
     message; the last 4096 remembered, LRU) is a PATCH of that Event's `count`,
     `lastTimestamp` and `message`, not a new Event ("(x3 over 2m)" in kubectl describe);
   - **spam filter**: a token bucket per source and object, burst 25, refilled at one
     Event per 5 minutes: an Event beyond that is dropped (counted in `skipped`).
2. a patch answered 404 (Events expire after an hour) is sent as a create instead;
   on success the correlator remembers the server's answer (`update_state`).

Differences from client-go, on purpose: the write happens in `record` (awaited by the
caller, who records after its status write) rather than on a background goroutine,
and it is tried once: a failure is logged and counted in `failures` -- `record` never
raises -- where client-go retries up to 12 times 10 s apart, which inline would hold
a reconcile worker for two minutes. Records about one object are serialised, so
concurrent repeats count up one Event instead of creating several.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
import weakref
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

import attrs
from cachetools import LRUCache

from gpuctl.runtime.client import Client, is_already_exists, is_not_found
from gpuctl.runtime.conditions import rfc3339
from gpuctl.runtime.resources import EVENTS

JSON = dict[str, Any]
EventType = Literal["Normal", "Warning"]
Clock = Callable[[], float]
MAX_MESSAGE = 1024
# An object name + "." + 16 hex digits must stay a valid (<= 253 character) name.
_MAX_NAME_PREFIX = 253 - 17

# client-go's defaults (tools/record/events_cache.go).
MAX_LRU_CACHE_ENTRIES = 4096
AGGREGATE_MAX_EVENTS = 10
AGGREGATE_INTERVAL = 600.0
SPAM_BURST = 25
SPAM_QPS = 1.0 / 300.0
COMBINED_PREFIX = "(combined from similar events): "

log = logging.getLogger(__name__)


# -- keys (getEventKey, getSpamKey, EventAggregatorByReasonFunc) ---------------------


def _source(event: JSON) -> tuple[str, str]:
    source = event.get("source") or {}
    return str(source.get("component") or ""), str(source.get("host") or "")


def _involved(event: JSON) -> tuple[str, str, str, str, str]:
    ref = event.get("involvedObject") or {}
    return tuple(  # type: ignore[return-value]
        str(ref.get(f) or "") for f in ("kind", "namespace", "name", "uid", "apiVersion")
    )


def event_key(event: JSON) -> tuple[str, ...]:
    """Source, object (with fieldPath), type, reason and message: one Event's identity."""
    ref = event.get("involvedObject") or {}
    return (
        *_source(event),
        *_involved(event),
        str(ref.get("fieldPath") or ""),
        str(event.get("type") or ""),
        str(event.get("reason") or ""),
        str(event.get("message") or ""),
    )


def spam_key(event: JSON) -> tuple[str, ...]:
    """Source and object: what the spam filter rate-limits."""
    return (*_source(event), *_involved(event))


def aggregate_by_reason(event: JSON) -> tuple[tuple[str, ...], str]:
    """(aggregate key, local key): similar events share all but the message."""
    key = (
        *spam_key(event),
        str(event.get("type") or ""),
        str(event.get("reason") or ""),
        str(event.get("reportingComponent") or ""),
        str(event.get("reportingInstance") or ""),
    )
    return key, str(event.get("message") or "")


def aggregate_message(event: JSON) -> str:
    return COMBINED_PREFIX + str(event.get("message") or "")


# -- the correlator ------------------------------------------------------------------


class TokenBucket:
    """golang.org/x/time/rate's Limiter as client-go's spam filter uses it: starts full."""

    def __init__(self, qps: float, burst: int, now: float) -> None:
        self.qps = qps
        self.burst = burst
        self.tokens = float(burst)
        self.last = now

    def try_accept(self, now: float) -> bool:
        elapsed = max(0.0, now - self.last)
        self.tokens = min(float(self.burst), self.tokens + elapsed * self.qps)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@attrs.define
class _Aggregate:
    local_keys: set[str]
    last: float


@attrs.define
class _Observed:
    count: int
    first_timestamp: str
    name: str


@attrs.frozen
class CorrelateResult:
    """The Event to write (a patch of `count`/`lastTimestamp`/`message` when it is a
    repeat), or `skip` when the spam filter dropped it."""

    event: JSON | None
    patch: JSON | None = None
    skip: bool = False


class EventCorrelator:
    """client-go's EventCorrelator: aggregate, count, filter -- no I/O."""

    def __init__(
        self,
        clock: Clock = time.monotonic,
        *,
        cache_size: int = MAX_LRU_CACHE_ENTRIES,
        max_events: int = AGGREGATE_MAX_EVENTS,
        max_interval: float = AGGREGATE_INTERVAL,
        spam_burst: int = SPAM_BURST,
        spam_qps: float = SPAM_QPS,
        spam_key_func: Callable[[JSON], tuple[str, ...]] = spam_key,
    ) -> None:
        self.clock = clock
        self.max_events = max_events
        self.max_interval = max_interval
        self.spam_burst = spam_burst
        self.spam_qps = spam_qps
        self.spam_key_func = spam_key_func
        self._aggregates: LRUCache[tuple[str, ...], _Aggregate] = LRUCache(cache_size)
        self._observed: LRUCache[tuple[str, ...], _Observed] = LRUCache(cache_size)
        self._spam: LRUCache[tuple[str, ...], TokenBucket] = LRUCache(cache_size)

    def correlate(self, event: JSON) -> CorrelateResult:
        """client-go's EventCorrelate: aggregate, then observe, then filter."""
        aggregated, key = self._aggregate(event)
        observed, patch = self._observe(aggregated, key)
        if self._filter(observed):
            return CorrelateResult(None, skip=True)
        return CorrelateResult(observed, patch)

    def update_state(self, event: JSON) -> None:
        """Remember the server's answer (its name, count, firstTimestamp)."""
        self._observed[event_key(event)] = _Observed(
            int(event.get("count") or 1),
            str(event.get("firstTimestamp") or ""),
            str((event.get("metadata") or {}).get("name") or ""),
        )

    def _aggregate(self, event: JSON) -> tuple[JSON, tuple[str, ...]]:
        now = self.clock()
        full_key = event_key(event)
        aggregate_key, local_key = aggregate_by_reason(event)
        record = self._aggregates.get(aggregate_key)
        if record is None or now - record.last > self.max_interval:
            record = _Aggregate(set(), now)
        record.local_keys.add(local_key)
        record.last = now
        self._aggregates[aggregate_key] = record
        if len(record.local_keys) < self.max_events:
            return event, full_key
        record.local_keys.pop()  # never grow past max_events
        involved = event.get("involvedObject") or {}
        stamp = str(event.get("lastTimestamp") or "")
        combined = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": _event_name(str(involved.get("name") or "unknown")),
                "namespace": (event.get("metadata") or {}).get("namespace"),
            },
            "involvedObject": involved,
            "type": event.get("type"),
            "reason": event.get("reason"),
            "message": aggregate_message(event),
            "source": event.get("source"),
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        return combined, aggregate_key

    def _observe(self, event: JSON, key: tuple[str, ...]) -> tuple[JSON, JSON | None]:
        event = copy.copy(event)
        patch = None
        last = self._observed.get(key)
        if last is not None and last.count > 0:
            event["metadata"] = {**(event.get("metadata") or {}), "name": last.name}
            event["firstTimestamp"] = last.first_timestamp
            event["count"] = last.count + 1
            patch = {
                "count": event["count"],
                "lastTimestamp": event.get("lastTimestamp"),
                "message": event.get("message"),
            }
        name = str((event.get("metadata") or {}).get("name") or "")
        self._observed[key] = _Observed(
            int(event.get("count") or 1), str(event.get("firstTimestamp") or ""), name
        )
        return event, patch

    def _filter(self, event: JSON) -> bool:
        """True when the source+object bucket is empty: drop the Event."""
        key = self.spam_key_func(event)
        now = self.clock()
        bucket = self._spam.get(key)
        if bucket is None:
            bucket = TokenBucket(self.spam_qps, self.spam_burst, now)
        skip = not bucket.try_accept(now)
        self._spam[key] = bucket
        return skip


# -- the recorder --------------------------------------------------------------------


class EventRecorder:
    def __init__(
        self,
        client: Client,
        component: str = "gpuctl",
        namespace_for_cluster_scoped: str = "default",
        *,
        correlator: EventCorrelator | None = None,
    ) -> None:
        self.client = client
        self.component = component
        self.namespace_for_cluster_scoped = namespace_for_cluster_scoped
        self.correlator = correlator or EventCorrelator()
        self.failures = 0  # writes that failed (logged)
        self.skipped = 0  # Events the spam filter dropped
        self.created = 0
        self.patched = 0
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    async def record(self, obj: JSON, type: EventType, reason: str, message: str) -> None:
        """Record an Event about `obj` (best effort: never raises)."""
        try:
            event = self._event(obj, type, reason, message[:MAX_MESSAGE])
            lock = self._lock(obj)
            async with lock:
                result = self.correlator.correlate(event)
                if result.skip or result.event is None:
                    self.skipped += 1
                    log.debug("event %s/%s about %s dropped (spam)", type, reason, _ref(obj))
                    return
                await self._write(result.event, result.patch)
        except Exception as err:
            self.failures += 1
            log.warning("event %s/%s about %s not recorded: %s", type, reason, _ref(obj), err)

    def _lock(self, obj: JSON) -> asyncio.Lock:
        meta = obj.get("metadata") or {}
        key = str(meta.get("uid") or _ref(obj))
        lock = self._locks.get(key)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[key] = lock
        return lock

    async def _write(self, event: JSON, patch: JSON | None) -> None:
        """client-go's recordEvent: patch a repeat, create when new or the patch 404s."""
        meta = event["metadata"]
        answer: JSON | None = None
        if patch is not None and int(event.get("count") or 1) > 1:
            try:
                answer = await self.client.patch(
                    EVENTS, meta["name"], patch, namespace=meta["namespace"], patch_type="merge"
                )
                self.patched += 1
            except Exception as err:
                if not is_not_found(err):
                    raise
        if answer is None:
            body = {**event, "metadata": {"name": meta["name"], "namespace": meta["namespace"]}}
            try:
                answer = await self.client.create(EVENTS, body)
            except Exception as err:
                if is_already_exists(err):  # as client-go: the server has it; no retry
                    return
                raise
            self.created += 1
        self.correlator.update_state(answer)

    def _event(self, obj: JSON, type: EventType, reason: str, message: str) -> JSON:
        meta = obj.get("metadata") or {}
        name = str(meta.get("name") or "unknown")
        namespace = meta.get("namespace") or self.namespace_for_cluster_scoped
        involved = {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        }
        now = rfc3339(datetime.now(UTC))
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": _event_name(name), "namespace": namespace},
            "involvedObject": {k: v for k, v in involved.items() if v},
            "type": type,
            "reason": reason,
            "message": message,
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }


def _event_name(object_name: str) -> str:
    return f"{object_name[:_MAX_NAME_PREFIX].rstrip('-.')}.{time.time_ns():x}"


def _ref(obj: JSON) -> str:
    meta = obj.get("metadata") or {}
    name = (
        f"{meta.get('namespace')}/{meta.get('name')}" if meta.get("namespace") else meta.get("name")
    )
    return f"{obj.get('kind', 'object')} {name}"
