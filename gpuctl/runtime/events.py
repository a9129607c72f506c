"""Recording core/v1 Events about objects, aggregating repeats (client-go's EventRecorder).

`EventRecorder.record(obj, type, reason, message)`:
- creates an Event in the object's namespace (cluster-scoped objects such as Nodes:
  in `namespace_for_cluster_scoped`, "default", which is where kubectl looks for them),
  named `<object name>.<hex nanoseconds>` like client-go's, with `involvedObject` =
  apiVersion, kind, name, namespace, uid, resourceVersion of `obj`, `source.component`,
  `count` 1 and first/last timestamps.
- a repeat of the same (object uid, type, reason, message) within `window` seconds
  PATCHes that Event instead: `count` + 1 and a new `lastTimestamp` (what
  `kubectl describe` shows as "(x3 over 2m)"). If that Event has gone meanwhile (the
  API server deletes Events after an hour), a new one is created.
- the recent Events are remembered in a bounded LRU+TTL cache (cachetools.TTLCache,
  `cache_size` entries, `window` seconds), so memory stays bounded however many objects.
- messages are cut to 1024 characters.
- never raises: Events are best effort, a failure is logged and counted in `failures`.
  Concurrent records of the same key are serialised, so they aggregate rather than
  create duplicates.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any, Literal

import attrs
from cachetools import TTLCache

from gpuctl.runtime.client import Client, is_not_found
from gpuctl.runtime.conditions import rfc3339
from gpuctl.runtime.resources import EVENTS

JSON = dict[str, Any]
EventType = Literal["Normal", "Warning"]
MAX_MESSAGE = 1024
# An object name + "." + 16 hex digits must stay a valid (<= 253 character) name.
_MAX_NAME_PREFIX = 253 - 17

log = logging.getLogger(__name__)


@attrs.define
class _Recent:
    """The Event created for one (uid, type, reason, message), once created."""

    lock: asyncio.Lock = attrs.field(factory=asyncio.Lock)
    name: str | None = None
    namespace: str = ""
    count: int = 0


class EventRecorder:
    def __init__(
        self,
        client: Client,
        component: str = "gpuctl",
        namespace_for_cluster_scoped: str = "default",
        *,
        cache_size: int = 4096,
        window: float = 600.0,
    ) -> None:
        self.client = client
        self.component = component
        self.namespace_for_cluster_scoped = namespace_for_cluster_scoped
        self.failures = 0
        self._recent: TTLCache[tuple[str, str, str, str], _Recent] = TTLCache(
            maxsize=cache_size, ttl=window
        )

    async def record(self, obj: JSON, type: EventType, reason: str, message: str) -> None:
        """Record an Event about `obj` (best effort: never raises)."""
        try:
            await self._record(obj, type, reason, message[:MAX_MESSAGE])
        except Exception as err:
            self.failures += 1
            log.warning("event %s/%s about %s not recorded: %s", type, reason, _ref(obj), err)

    async def _record(self, obj: JSON, type: EventType, reason: str, message: str) -> None:
        meta = obj.get("metadata") or {}
        key = (str(meta.get("uid") or _ref(obj)), type, reason, message)
        recent = self._recent.get(key)
        if recent is None:
            recent = self._recent[key] = _Recent()
        async with recent.lock:
            now = rfc3339(datetime.now(UTC))
            if recent.name is not None and await self._bump(recent, recent.name, now):
                return
            event = self._event(obj, type, reason, message, now)
            created = await self.client.create(EVENTS, event)
            recent.name = str(created["metadata"]["name"])
            recent.namespace = str(created["metadata"]["namespace"])
            recent.count = int(created.get("count") or 1)
            if key not in self._recent:  # evicted while we awaited: remember it again
                self._recent[key] = recent

    async def _bump(self, recent: _Recent, name: str, now: str) -> bool:
        """count + 1 on the remembered Event; False if that Event no longer exists."""
        patch = {"count": recent.count + 1, "lastTimestamp": now}
        try:
            updated = await self.client.patch(
                EVENTS, name, patch, namespace=recent.namespace, patch_type="merge"
            )
        except Exception as err:
            if is_not_found(err):
                return False
            raise
        recent.count = int(updated.get("count") or recent.count + 1)
        return True

    def _event(self, obj: JSON, type: EventType, reason: str, message: str, now: str) -> JSON:
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
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{name[:_MAX_NAME_PREFIX].rstrip('-.')}.{time.time_ns():x}",
                "namespace": namespace,
            },
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


def _ref(obj: JSON) -> str:
    meta = obj.get("metadata") or {}
    name = (
        f"{meta.get('namespace')}/{meta.get('name')}" if meta.get("namespace") else meta.get("name")
    )
    return f"{obj.get('kind', 'object')} {name}"
