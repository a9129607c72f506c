"""Informer transforms: cache only what the controllers read, in as few bytes as possible.

controller-runtime's cache takes a `TransformFunc` per type (`cache.Options.ByObject
[...].Transform`) that runs on every object before it is stored; its docs suggest
stripping managedFields and anything else the controllers never read. These are the
building blocks gpuctl's transforms are made of (`gpuctl/controllers/transforms.py`
says which fields each kind keeps):

- `drop_managed_fields(obj)`: `metadata.managedFields` goes (often half an object).
- `keep(obj, fields)`: a copy of `obj` with only the fields named in `fields`, a nested
  mapping of field name to `True` (keep the whole value) or to a nested mapping (keep
  those fields of the value; of each item when the value is a list of objects).
- `interned(obj)`: every mapping key and string value replaced by the interned copy
  of that string (`sys.intern`). JSON decoding shares a key only within one document,
  so each watch event carried its own "metadata", "labels", "gpuctl.io/request",
  "True", "on-demand"... strings; interned, all cached objects share one copy of each
  (interned strings are freed once unused, and a string used once costs the same).
  Measured on the Nodes of hack/bench/memory.py: 6.7 KiB per kept Node, 3.0 interned.

- `Shared()`: equal JSON values stored once. `shared(value)` answers an equal value
  seen before (its first copy) or remembers this one (the last `size` distinct values,
  LRU). Meant for parts that repeat across objects of one kind -- a Node's capacity and
  allocatable (the same for every machine of a type), its taints, a request's spec (a
  pool's requests share theirs) -- a dict costs 200-600 bytes however short its
  strings are. Values compare with their types (`True` is not `1`).

Every transform returns a new or the same dict; values it shares between objects
(`interned` strings, `Shared` parts) are safe because the store hands objects out as
they are, and nobody mutates them (client-go's rule for its caches).
"""

from __future__ import annotations

import sys
from collections.abc import Hashable, Mapping
from typing import Any, Union

from cachetools import LRUCache

JSON = dict[str, Any]
Fields = Mapping[str, Union[bool, "Fields"]]

_intern = sys.intern


def drop_managed_fields(obj: JSON) -> JSON:
    """`metadata.managedFields` removed (in place)."""
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
    return obj


def keep(obj: JSON, fields: Fields) -> JSON:
    """Only the fields of `obj` that `fields` names (see the module docstring)."""
    kept: JSON = {}
    for name, sub in fields.items():
        if name not in obj:
            continue
        value = obj[name]
        if sub is True:
            kept[name] = value
        elif isinstance(sub, Mapping):
            if isinstance(value, dict):
                kept[name] = keep(value, sub)
            elif isinstance(value, list):
                kept[name] = [keep(v, sub) if isinstance(v, dict) else v for v in value]
            else:
                kept[name] = value
    return kept


def interned(obj: Any) -> Any:
    """A copy of `obj` whose keys and string values are interned strings."""
    if isinstance(obj, dict):
        return {_intern(k): interned(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [interned(v) for v in obj]
    if isinstance(obj, str):
        return _intern(obj)
    return obj


class Shared:
    """Equal JSON values stored once (see the module docstring)."""

    def __init__(self, size: int = 4096) -> None:
        self._seen: LRUCache[Hashable, Any] = LRUCache(size)

    def __call__(self, value: Any) -> Any:
        if value is None:
            return None
        key = _frozen(value)
        found = self._seen.get(key)
        if found is None:
            self._seen[key] = value
            return value
        return found


def _frozen(value: Any) -> Hashable:
    """A hashable image of a JSON value that tells types apart (1, 1.0 and True differ)."""
    if isinstance(value, dict):
        return ("{", tuple(sorted((k, _frozen(v)) for k, v in value.items())))
    if isinstance(value, list):
        return ("[", tuple(_frozen(v) for v in value))
    if isinstance(value, str):
        return value
    return (type(value).__name__, value)
