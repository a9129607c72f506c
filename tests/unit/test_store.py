"""The indexed store: keys, upserts, replace() reporting vanished objects, live indexes."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpuctl.runtime.store import (
    NAMESPACE_INDEX,
    Store,
    label_index,
    object_key,
    split_key,
)


def obj(name: str, namespace: str | None = None, rv: str = "1", **labels: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "resourceVersion": rv, "labels": labels}
    if namespace:
        meta["namespace"] = namespace
    return {"metadata": meta}


def test_keys_are_namespace_slash_name_or_name() -> None:
    assert object_key(obj("a", "ns")) == "ns/a"
    assert object_key(obj("node-1")) == "node-1"
    assert split_key("ns/a") == ("ns", "a")
    assert split_key("node-1") == (None, "node-1")
    with pytest.raises(ValueError):
        object_key({"metadata": {}})


def test_add_update_delete_return_the_previous_object() -> None:
    store = Store()
    first, second = obj("a", "ns", rv="1"), obj("a", "ns", rv="2")
    assert store.add(first) is None
    assert store.update(second) is first
    assert store.get("ns/a") is second
    assert store.get_for(first) is second
    assert len(store) == 1 and "ns/a" in store
    assert store.delete(obj("a", "ns")) is second
    assert store.delete(obj("a", "ns")) is None
    assert store.keys() == [] and store.list() == []


def test_replace_returns_what_vanished_and_reindexes() -> None:
    store = Store()
    store.add_indexer("pool", label_index("pool"))
    kept, gone = obj("a", "ns", pool="x"), obj("b", "ns", pool="x")
    store.add(kept)
    store.add(gone)
    newer = obj("a", "ns", rv="5", pool="y")
    fresh = obj("c", "other", pool="x")
    vanished = store.replace([newer, fresh])
    assert vanished == [gone]
    assert sorted(store.keys()) == ["ns/a", "other/c"]
    assert store.by_index("pool", "x") == [fresh]
    assert store.by_index("pool", "y") == [newer]
    assert store.by_index(NAMESPACE_INDEX, "ns") == [newer]
    assert store.index_values(NAMESPACE_INDEX) == ["ns", "other"]


def test_update_moves_an_object_between_index_values() -> None:
    store = Store()
    store.add_indexer("pool", label_index("pool"))
    store.add(obj("n1", pool="x"))
    store.add(obj("n1", rv="2", pool="y"))
    assert store.by_index("pool", "x") == []
    assert store.index_values("pool") == ["y"]
    store.add(obj("n1", rv="3"))  # label removed: not indexed at all
    assert store.index_values("pool") == []


def test_indexer_added_later_indexes_existing_objects() -> None:
    store = Store()
    store.add(obj("a", "ns", team="red"))
    store.add(obj("b", "ns"))
    store.add_indexer("team", label_index("team"))
    assert store.index_keys("team", "red") == ["ns/a"]
    with pytest.raises(ValueError):
        store.add_indexer("team", label_index("team"))
    with pytest.raises(KeyError):
        store.by_index("nope", "x")


def test_custom_key_function() -> None:
    store = Store(key_func=lambda o: o["metadata"]["uid"])
    store.add({"metadata": {"name": "a", "uid": "u1"}})
    assert store.keys() == ["u1"]


_names = st.sampled_from(["a", "b", "c", "d"])
_namespaces = st.sampled_from([None, "n1", "n2"])
_pools = st.sampled_from([None, "x", "y"])
_ops = st.lists(
    st.tuples(st.sampled_from(["add", "delete", "replace"]), _names, _namespaces, _pools),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(_ops)
def test_indexes_always_match_a_brute_force_scan(
    ops: list[tuple[str, str, str | None, str | None]],
) -> None:
    store = Store()
    store.add_indexer("pool", label_index("pool"))
    model: dict[str, dict[str, Any]] = {}
    for op, name, namespace, pool in ops:
        item = obj(name, namespace, **({"pool": pool} if pool else {}))
        key = object_key(item)
        if op == "add":
            store.add(item)
            model[key] = item
        elif op == "delete":
            assert store.delete(item) is model.pop(key, None)
        else:
            survivors = {k: v for k, v in model.items() if k < key}
            survivors[key] = item
            vanished = store.replace(list(survivors.values()))
            assert sorted(map(object_key, vanished)) == sorted(set(model) - set(survivors))
            model = survivors
    assert sorted(store.keys()) == sorted(model)
    for value in ("x", "y"):
        expected = sorted(
            k for k, o in model.items() if o["metadata"]["labels"].get("pool") == value
        )
        assert store.index_keys("pool", value) == expected
    for namespace in ("n1", "n2"):
        expected = sorted(k for k in model if k.startswith(f"{namespace}/"))
        assert store.index_keys(NAMESPACE_INDEX, namespace) == expected
