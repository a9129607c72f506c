"""Writing an object's status subresource only when it changed, optimistically.

`StatusWriter.update_status(resource, obj, status)`:
- compares `status` with `obj["status"]` (deep equality of the JSON values, nothing
  ignored: a condition's new lastTransitionTime is a change). Equal: no API call,
  returns None. An object without a status counts as having `{}`.
- otherwise PUTs the status subresource with `obj`'s metadata, including its
  resourceVersion: if someone changed the object since `obj` was read, the API server
  answers 409 Conflict and the `ApiError` propagates (`is_conflict`), so the controller
  requeues and recomputes from fresh data. It never retries with stale data and never
  writes without a resourceVersion (that would be a blind overwrite).
- returns the object the server sent back (its new resourceVersion included), and
  counts the write in `gpuctl_status_writes_total{resource}`.

controller-runtime's `Status().Update()` has the same optimistic semantics; the
"only if changed" check is what every reconciler does by hand there.

`written_last(resource, obj)` tells whether `obj` is exactly what this writer's last
write of it returned (same resourceVersion): then a cached copy is as fresh as a quorum
read as far as status goes -- nothing, not even our own write, changed it since.
`behind(resource, obj)` tells whether `obj` is older than that write (the watch has not
delivered it yet). The last 16,384 writes are remembered (LRU); a forgotten one only
answers False.
"""

from __future__ import annotations

from typing import Any

from cachetools import LRUCache
from prometheus_client import CollectorRegistry

from gpuctl.runtime.client import Client, default_registry, registry_counter
from gpuctl.runtime.resources import Resource

JSON = dict[str, Any]
REMEMBERED_WRITES = 16_384


class StatusWriter:
    def __init__(self, client: Client, *, registry: CollectorRegistry | None = None) -> None:
        self.client = client
        self._writes = registry_counter(
            registry if registry is not None else default_registry(),
            "gpuctl_status_writes_total",
            "Status subresource writes that changed something, by resource.",
            ("resource",),
        )
        # resource -> object key -> resourceVersion our last write of it returned
        self._written: dict[str, LRUCache[str, int | str]] = {}

    def behind(self, resource: Resource, obj: JSON) -> bool:
        """True if `obj` is older than what our last status write of it returned: a
        cached copy the watch has not brought up to date yet. Acting on it would redo
        what that write recorded and end in a 409; the watch event of the write is on
        its way and reconciles again. (resourceVersions compare as integers here, as
        etcd's do; anything else never counts as behind.)"""
        meta = obj.get("metadata") or {}
        written = self._written.get(resource.qualified_name)
        last = written.get(_key(meta)) if written is not None else None
        seen = _compact(meta.get("resourceVersion") or "")
        return isinstance(last, int) and isinstance(seen, int) and seen < last

    def written_last(self, resource: Resource, obj: JSON) -> bool:
        """True if `obj` carries the resourceVersion our last status write of it returned."""
        meta = obj.get("metadata") or {}
        rv = meta.get("resourceVersion")
        written = self._written.get(resource.qualified_name)
        return bool(rv) and written is not None and written.get(_key(meta)) == _compact(rv)

    async def update_status(self, resource: Resource, obj: JSON, status: JSON) -> JSON | None:
        """Write `status` unless `obj` already has it; the new object, or None if unchanged."""
        if obj.get("status", {}) == status:
            return None
        metadata = obj.get("metadata") or {}
        if not metadata.get("resourceVersion"):
            raise ValueError("object has no metadata.resourceVersion: refusing a blind write")
        body = {
            "apiVersion": obj.get("apiVersion", resource.api_version),
            "kind": obj.get("kind", resource.kind),
            "metadata": metadata,
            "status": status,
        }
        updated = await self.client.replace_status(resource, body)
        self._writes.labels(resource.qualified_name).inc()
        rv = (updated.get("metadata") or {}).get("resourceVersion")
        if rv:
            written = self._written.setdefault(resource.qualified_name, LRUCache(REMEMBERED_WRITES))
            written[_key(metadata)] = _compact(rv)
        return updated


def _key(metadata: JSON) -> str:
    """`namespace/name`, or the name string itself (shared with the cached object)."""
    name = str(metadata.get("name") or "")
    namespace = metadata.get("namespace")
    return f"{namespace}/{name}" if namespace else name


def _compact(rv: object) -> int | str:
    """A resourceVersion as remembered: an int when it is one (etcd's are), 28 bytes."""
    text = str(rv)
    return int(text) if text.isdigit() else text
