"""Event handlers: turn informer events into work-queue keys (controller-runtime `pkg/handler`).

An informer calls a handler synchronously with raw JSON objects (dicts as the
API server sends them): `on_add(obj)`, `on_update(old, new)`, `on_delete(obj)`
(a delete carries the last state the informer knew). A handler only computes
keys and adds them to a queue; it never blocks and never talks to the API.

- `EnqueueForObject(queue)`: the object's own key (`object_key`: `name` when
  cluster-scoped, `namespace/name` when namespaced) — controller-runtime's
  `EnqueueRequestForObject`.
- `EnqueueMapped(queue, fn)`: the keys `fn(obj)` returns, e.g. a Node to the
  request that launched it — `EnqueueRequestsFromMapFunc`. On update, the keys
  of both the old and the new object are added (deduplicated), so a label that
  moved from one owner to another wakes both.
- `owner_keys(api_group, kind)`: a map function to the keys of an object's owners
  of that kind — `EnqueueRequestForOwner`.

Predicates filter events before any key is computed; all given predicates must
accept. `GENERATION_CHANGED` (spec changes only), `RESOURCE_VERSION_CHANGED`
(drops resync updates), `LABELS_CHANGED`, `ANNOTATIONS_CHANGED`, `Funcs(...)`
for ad-hoc rules and `AnyOf(...)` to combine. Like controller-runtime's, the
update-only predicates accept every create and delete.

Priorities (controller-runtime's priority queue): adds delivered while the source
is still doing its initial list, and updates whose resourceVersion did not change
(resyncs), are enqueued at low priority so live changes overtake them. A handler
knows the source's state through `initial_list()`; `Controller.watch` wires it
to the source's `has_synced` when it is not given.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from gpuctl.runtime.queue import WorkQueue

log = logging.getLogger(__name__)

Object = dict[str, Any]
MapFunc = Callable[[Object], Iterable[str]]


def object_key(obj: Object) -> str:
    """client-go's MetaNamespaceKeyFunc: `namespace/name`, or `name` when cluster-scoped."""
    meta = obj.get("metadata") or {}
    name: str = meta["name"]
    namespace = meta.get("namespace")
    return f"{namespace}/{name}" if namespace else name


def _meta(obj: Object) -> dict[str, Any]:
    meta: dict[str, Any] = obj.get("metadata") or {}
    return meta


def _resource_version(obj: Object) -> str | None:
    version: str | None = _meta(obj).get("resourceVersion")
    return version


class Predicate:
    """Accepts every event; subclasses override the kinds they filter."""

    def create(self, obj: Object) -> bool:
        return True

    def update(self, old: Object, new: Object) -> bool:
        return True

    def delete(self, obj: Object) -> bool:
        return True


class GenerationChanged(Predicate):
    """Updates that changed `metadata.generation`, i.e. the spec (status writes don't)."""

    def update(self, old: Object, new: Object) -> bool:
        return _meta(old).get("generation") != _meta(new).get("generation")


class ResourceVersionChanged(Predicate):
    """Updates that changed anything at all: drops periodic resyncs."""

    def update(self, old: Object, new: Object) -> bool:
        return _resource_version(old) != _resource_version(new)


class LabelsChanged(Predicate):
    def update(self, old: Object, new: Object) -> bool:
        return _meta(old).get("labels") != _meta(new).get("labels")


class AnnotationsChanged(Predicate):
    def update(self, old: Object, new: Object) -> bool:
        return _meta(old).get("annotations") != _meta(new).get("annotations")


class Funcs(Predicate):
    """A predicate from plain functions; a kind without a function is accepted."""

    def __init__(
        self,
        *,
        create: Callable[[Object], bool] | None = None,
        update: Callable[[Object, Object], bool] | None = None,
        delete: Callable[[Object], bool] | None = None,
    ) -> None:
        self._create = create
        self._update = update
        self._delete = delete

    def create(self, obj: Object) -> bool:
        return self._create is None or self._create(obj)

    def update(self, old: Object, new: Object) -> bool:
        return self._update is None or self._update(old, new)

    def delete(self, obj: Object) -> bool:
        return self._delete is None or self._delete(obj)


class AnyOf(Predicate):
    """Accepts an event if any of `predicates` does (controller-runtime's `predicate.Or`)."""

    def __init__(self, *predicates: Predicate) -> None:
        self.predicates = predicates

    def create(self, obj: Object) -> bool:
        return any(p.create(obj) for p in self.predicates)

    def update(self, old: Object, new: Object) -> bool:
        return any(p.update(old, new) for p in self.predicates)

    def delete(self, obj: Object) -> bool:
        return any(p.delete(obj) for p in self.predicates)


GENERATION_CHANGED = GenerationChanged()
RESOURCE_VERSION_CHANGED = ResourceVersionChanged()
LABELS_CHANGED = LabelsChanged()
ANNOTATIONS_CHANGED = AnnotationsChanged()


def _never() -> bool:
    return False


class QueueHandler:
    """Base of the enqueueing handlers: predicates, priorities, key mapping via `keys()`."""

    def __init__(
        self,
        queue: WorkQueue[str],
        *,
        predicates: Sequence[Predicate] = (),
        initial_list: Callable[[], bool] | None = None,
    ) -> None:
        self.queue = queue
        self.predicates = tuple(predicates)
        # True while the source is still delivering its initial list; None until
        # bound (Controller.watch binds it to the source).
        self.initial_list = initial_list

    def keys(self, obj: Object) -> Iterable[str]:
        raise NotImplementedError

    def on_add(self, obj: Object) -> None:
        if all(p.create(obj) for p in self.predicates):
            self._enqueue([obj], low_priority=(self.initial_list or _never)())

    def on_update(self, old: Object, new: Object) -> None:
        if all(p.update(old, new) for p in self.predicates):
            version = _resource_version(new)
            resync = version is not None and version == _resource_version(old)
            self._enqueue([old, new], low_priority=resync)

    def on_delete(self, obj: Object) -> None:
        if all(p.delete(obj) for p in self.predicates):
            self._enqueue([obj], low_priority=False)

    def _enqueue(self, objs: Sequence[Object], *, low_priority: bool) -> None:
        keys: dict[str, None] = {}  # ordered set
        for obj in objs:
            try:
                keys.update(dict.fromkeys(self.keys(obj)))
            except Exception:
                # A bad object must not hide the keys of the others, nor reach the informer.
                log.exception("%s: cannot map %s to keys", type(self).__name__, _describe(obj))
        for key in keys:
            self.queue.add(key, low_priority=low_priority)


def _describe(obj: Object) -> str:
    meta = _meta(obj)
    return f"{obj.get('kind', 'object')} {meta.get('namespace', '')}/{meta.get('name', '?')}"


class EnqueueForObject(QueueHandler):
    """Enqueue the key of the object itself."""

    def keys(self, obj: Object) -> Iterable[str]:
        return (object_key(obj),)


class EnqueueMapped(QueueHandler):
    """Enqueue the keys a function maps the object to."""

    def __init__(
        self,
        queue: WorkQueue[str],
        fn: MapFunc,
        *,
        predicates: Sequence[Predicate] = (),
        initial_list: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__(queue, predicates=predicates, initial_list=initial_list)
        self.fn = fn

    def keys(self, obj: Object) -> Iterable[str]:
        return self.fn(obj)


def owner_keys(
    api_group: str, kind: str, *, cluster_scoped: bool = False, only_controller: bool = False
) -> MapFunc:
    """Map an object to the keys of its owners of `kind` in `api_group` ("" for core).

    Owner references cannot cross namespaces: a namespaced owner lives in the
    object's namespace. Pass `cluster_scoped=True` when the owner kind is
    cluster-scoped (its key is then its bare name, whatever the object's
    namespace). With `only_controller`, only the reference marked
    `controller: true` counts.
    """

    def keys(obj: Object) -> list[str]:
        meta = _meta(obj)
        namespace = meta.get("namespace")
        found = []
        for ref in meta.get("ownerReferences") or ():
            group = ref.get("apiVersion", "").rpartition("/")[0]
            if ref.get("kind") != kind or group != api_group:
                continue
            if only_controller and not ref.get("controller"):
                continue
            name = ref["name"]
            found.append(name if cluster_scoped or not namespace else f"{namespace}/{name}")
        return found

    return keys
