"""An indexed cache of API objects (client-go's `cache.Indexer`, for one event loop).

Objects are the plain dicts the API server sent, stored as-is and handed out as-is:
callers must not mutate what `get`/`list`/`by_index` return (copy first), exactly as
with client-go's informer caches. Not thread-safe: one asyncio loop owns a store.

- Keys come from a key function: `namespace/name`, or `name` for cluster-scoped objects
  (`object_key`, client-go's `MetaNamespaceKeyFunc`).
- `add` and `update` are the same upsert; `delete` removes by the object's key.
- `replace(objects)` swaps the whole contents (a relist) and returns the objects that
  were present before and are absent now, so the informer can deliver deletes that
  happened while it was not watching.
- Indexers map an object to zero or more index values; `by_index(name, value)` returns
  the objects indexed under `value`. Indexes are kept current on every change.
  `label_index(key)` indexes by one label's value, `namespace_index` by namespace
  (registered on every store as `NAMESPACE_INDEX`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

JSON = dict[str, Any]
KeyFunc = Callable[[JSON], str]
IndexFunc = Callable[[JSON], list[str]]
# Aliases: inside `Store`, the name `list` is the method (mypy resolves it so).
Objects = list[JSON]
Keys = list[str]

NAMESPACE_INDEX = "namespace"


def object_key(obj: JSON) -> str:
    """`namespace/name`, or `name` for a cluster-scoped object."""
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    if not name:
        raise ValueError("object has no metadata.name")
    namespace = meta.get("namespace")
    return f"{namespace}/{name}" if namespace else str(name)


def split_key(key: str) -> tuple[str | None, str]:
    """`(namespace, name)` of a key made by `object_key` (namespace None if cluster-scoped)."""
    namespace, _, name = key.rpartition("/")
    return (namespace or None), name


def namespace_index(obj: JSON) -> list[str]:
    namespace = (obj.get("metadata") or {}).get("namespace")
    return [str(namespace)] if namespace else []


def label_index(label: str) -> IndexFunc:
    """Index by the value of label `label` (objects without the label are not indexed)."""

    def index(obj: JSON) -> list[str]:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return [str(labels[label])] if label in labels else []

    return index


class Store:
    """Objects by key, plus secondary indexes."""

    def __init__(self, key_func: KeyFunc = object_key) -> None:
        self.key_func = key_func
        self._items: dict[str, JSON] = {}
        self._indexers: dict[str, IndexFunc] = {}
        # index name -> index value -> the key of the one object indexed under it, or
        # the set of keys once there are several (most values -- a uid, an instance
        # name -- index one object: a set each would be 216 bytes more per object)
        self._indices: dict[str, dict[str, str | set[str]]] = {}
        self.add_indexer(NAMESPACE_INDEX, namespace_index)

    # -- reads -------------------------------------------------------------------

    def get(self, key: str) -> JSON | None:
        return self._items.get(key)

    def get_for(self, obj: JSON) -> JSON | None:
        """The stored object with the same key as `obj`."""
        return self._items.get(self.key_func(obj))

    def list(self) -> Objects:
        return list(self._items.values())

    def keys(self) -> Keys:
        return list(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[JSON]:
        return iter(list(self._items.values()))

    def by_index(self, index_name: str, value: str) -> Objects:
        return [self._items[key] for key in self.index_keys(index_name, value)]

    def index_keys(self, index_name: str, value: str) -> Keys:
        """Keys of the objects indexed under `value` (sorted, for stable output)."""
        if index_name not in self._indices:
            raise KeyError(f"no indexer named {index_name!r}")
        keys = self._indices[index_name].get(value, ())
        return [keys] if isinstance(keys, str) else sorted(keys)

    def index_values(self, index_name: str) -> Keys:
        """Every value some object is indexed under."""
        if index_name not in self._indices:
            raise KeyError(f"no indexer named {index_name!r}")
        return sorted(self._indices[index_name])

    # -- writes ------------------------------------------------------------------

    def add_indexer(self, name: str, fn: IndexFunc) -> None:
        """Register an index; objects already stored are indexed right away."""
        if name in self._indexers:
            raise ValueError(f"indexer {name!r} already exists")
        self._indexers[name] = fn
        self._indices[name] = {}
        for key, obj in self._items.items():
            self._index_one(name, key, obj)

    def add(self, obj: JSON) -> JSON | None:
        """Insert or overwrite; returns the object previously stored under that key."""
        key = self.key_func(obj)
        old = self._items.get(key)
        if old is not None:
            self._unindex(key, old)
        self._items[key] = obj
        self._index(key, obj)
        return old

    update = add

    def delete(self, obj: JSON) -> JSON | None:
        """Remove the object with `obj`'s key; returns what was stored (None if nothing)."""
        return self.delete_key(self.key_func(obj))

    def delete_key(self, key: str) -> JSON | None:
        old = self._items.pop(key, None)
        if old is not None:
            self._unindex(key, old)
        return old

    def replace(self, objects: Iterable[JSON]) -> Objects:
        """Make the store hold exactly `objects`; returns the stored objects now gone."""
        fresh = {self.key_func(obj): obj for obj in objects}
        gone = [obj for key, obj in self._items.items() if key not in fresh]
        self._items = fresh
        self._indices = {name: {} for name in self._indexers}
        for key, obj in fresh.items():
            self._index(key, obj)
        return gone

    # -- indexing ----------------------------------------------------------------

    def _index(self, key: str, obj: JSON) -> None:
        for name in self._indexers:
            self._index_one(name, key, obj)

    def _index_one(self, name: str, key: str, obj: JSON) -> None:
        index = self._indices[name]
        for value in self._indexers[name](obj):
            keys = index.get(value)
            if keys is None or keys == key:
                index[value] = key
            elif isinstance(keys, str):
                index[value] = {keys, key}
            else:
                keys.add(key)

    def _unindex(self, key: str, obj: JSON) -> None:
        # Recompute the old object's values (client-go does the same) rather than keep
        # a reverse map: index functions are cheap, memory for 20,000 objects is not.
        for name, fn in self._indexers.items():
            index = self._indices[name]
            for value in fn(obj):
                keys = index.get(value)
                if keys is None:
                    continue
                if isinstance(keys, str):
                    if keys == key:
                        del index[value]
                    continue
                keys.discard(key)
                if len(keys) == 1:
                    index[value] = keys.pop()  # back to the compact form
                elif not keys:
                    del index[value]
