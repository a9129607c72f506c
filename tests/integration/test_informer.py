"""The informer converges to the API server's state through 410s, restarts and gaps.

Restart tests run on a private control plane (module fixture) so that stopping
kube-apiserver and compacting etcd cannot disturb other tests.

How a real 410 is produced: the informer holds resourceVersion r; we write an
unrelated object, compact etcd at the current revision (> r) through etcd's HTTP
gateway, and restart kube-apiserver. Its fresh watch cache starts above r and etcd no
longer has r, so the watch from r fails with 410 ("too old resource version", sent as
an ERROR event) and so does the exact relist at r ("The resourceVersion for the
provided list is too old"): the informer must fall back to a quorum list.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client as k8s
from prometheus_client import CollectorRegistry

from gpuctl.dev.controlplane import ControlPlane
from gpuctl.runtime.client import Client
from gpuctl.runtime.informer import (
    Backoff,
    BackoffTimer,
    Informer,
    drop_managed_fields,
)
from gpuctl.runtime.kubeclient import api_client
from gpuctl.runtime.resources import CONFIGMAPS, NAMESPACES
from gpuctl.runtime.store import label_index, object_key

FAST = Backoff(initial=0.1, cap=0.5)


class Recorder:
    """A handler that remembers every call as (verb, key, resourceVersion)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.deleted: dict[str, dict[str, Any]] = {}

    def on_add(self, obj: dict[str, Any]) -> None:
        self.calls.append(("add", object_key(obj), obj["metadata"]["resourceVersion"]))

    def on_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        self.calls.append(("update", object_key(new), new["metadata"]["resourceVersion"]))

    def on_delete(self, obj: dict[str, Any]) -> None:
        self.calls.append(("delete", object_key(obj), obj["metadata"]["resourceVersion"]))
        self.deleted[object_key(obj)] = obj

    def verbs(self, verb: str) -> list[str]:
        return [key for v, key, _ in self.calls if v == verb]


class GatedClient(Client):
    """A real client whose lists and watches wait while `gate` is closed: it keeps the
    informer disconnected for as long as a test needs, without mocking the server."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = asyncio.Event()
        self.gate.set()

    async def list_all(self, *args: Any, **kwargs: Any) -> Any:
        await self.gate.wait()
        return await super().list_all(*args, **kwargs)

    async def watch(self, *args: Any, **kwargs: Any) -> Any:
        await self.gate.wait()
        async for event in super().watch(*args, **kwargs):
            yield event


def cm(name: str, namespace: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, "labels": labels}}


@contextlib.asynccontextmanager
async def running(informer: Informer) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(informer.run())
    try:
        assert await informer.wait_synced(15), "informer did not sync"
        yield task
    finally:
        informer.stop()
        await asyncio.wait_for(task, 10)


async def converge(informer: Informer, api: Client, within: float = 30) -> dict[str, str]:
    """Wait until the store holds exactly what a fresh quorum LIST returns (keys and RVs)."""
    deadline = time.monotonic() + within
    while True:
        fresh = await api.list_all(
            informer.resource, namespace=informer.namespace, resource_version=""
        )
        want = {object_key(o): o["metadata"]["resourceVersion"] for o in fresh.items}
        have = {object_key(o): o["metadata"]["resourceVersion"] for o in informer.store.list()}
        if have == want:
            return have
        assert time.monotonic() < deadline, f"store {have} != server {want}"
        await asyncio.sleep(0.05)


async def eventually(condition: Callable[[], bool], within: float = 10) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition never became true")


async def new_namespace(api: Client) -> str:
    name = f"inf-{secrets.token_hex(4)}"
    await api.create(NAMESPACES, {"metadata": {"name": name}})
    return name


async def restart_apiserver(cp: ControlPlane) -> None:
    """Kill kube-apiserver (SIGKILL: a graceful stop waits ~10 s for open watches to end)
    and start it again on the same port; etcd keeps the data."""
    for pid in cp.pids:
        with contextlib.suppress(OSError):  # another component may be restarting
            if b"kube-apiserver" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
    await cp.stop_apiserver()  # reaps it
    await cp.start_apiserver()


async def compact_etcd(cp: ControlPlane) -> int:
    """Compact etcd at its current revision (what kube-apiserver does every 5 minutes)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        async with session.post(f"{cp.etcd_url}/v3/kv/range", json={"key": "AA=="}) as r:
            revision = int((await r.json())["header"]["revision"])
        body = {"revision": str(revision), "physical": True}
        async with session.post(f"{cp.etcd_url}/v3/kv/compaction", json=body) as r:
            assert r.status == 200, await r.text()
    return revision


# -- on the shared control plane ------------------------------------------------------


@pytest.fixture
def api(kube: k8s.ApiClient) -> Client:
    return Client(kube, registry=CollectorRegistry())


async def test_list_then_watch_delivers_every_change(api: Client, namespace: str) -> None:
    await api.create(CONFIGMAPS, cm("before", namespace, pool="a"))
    informer = Informer(api, CONFIGMAPS, namespace=namespace, transform=drop_managed_fields)
    informer.store.add_indexer("pool", label_index("pool"))
    seen = Recorder()
    informer.add_handler(seen)
    assert not informer.has_synced
    async with running(informer):
        assert informer.has_synced
        assert seen.verbs("add") == [f"{namespace}/before"]
        assert informer.last_sync_resource_version
        await api.create(CONFIGMAPS, cm("new", namespace, pool="b"))
        await api.patch(
            CONFIGMAPS, "before", {"metadata": {"labels": {"pool": "b"}}}, namespace=namespace
        )
        await api.delete(CONFIGMAPS, "new", namespace=namespace)
        await converge(informer, api)
        await eventually(lambda: len(seen.calls) >= 4)
        assert [(v, k) for v, k, _ in seen.calls] == [
            ("add", f"{namespace}/before"),
            ("add", f"{namespace}/new"),
            ("update", f"{namespace}/before"),
            ("delete", f"{namespace}/new"),
        ]
        assert [o["metadata"]["name"] for o in informer.store.by_index("pool", "b")] == ["before"]
        assert "managedFields" not in informer.store.list()[0]["metadata"]
        late = Recorder()
        informer.add_handler(late)  # a late subscriber hears the cache as adds
        assert late.verbs("add") == [f"{namespace}/before"]
    assert informer.stats.lists == 1 and informer.stats.events == 3


async def test_a_failing_handler_does_not_stop_delivery(api: Client, namespace: str) -> None:
    class Broken:
        def on_add(self, obj: dict[str, Any]) -> None:
            raise RuntimeError("boom")

        on_update = on_delete = on_add  # type: ignore[assignment]

    informer = Informer(api, CONFIGMAPS, namespace=namespace, resync_period=0.2)
    seen = Recorder()
    informer.add_handler(Broken())  # type: ignore[arg-type]
    informer.add_handler(seen)
    async with running(informer):
        await api.create(CONFIGMAPS, cm("x", namespace))
        await eventually(lambda: f"{namespace}/x" in seen.verbs("update"))  # a resync
    assert seen.verbs("add") == [f"{namespace}/x"]
    assert informer.stats.handler_errors >= 2 and informer.stats.resyncs >= 1


async def test_silent_watch_is_replaced(api: Client, namespace: str) -> None:
    informer = Informer(api, CONFIGMAPS, namespace=namespace, read_timeout=0.5, backoff=FAST)
    seen = Recorder()
    informer.add_handler(seen)
    async with running(informer):
        await eventually(lambda: informer.stats.watches >= 2)  # the first died of silence
        await api.create(CONFIGMAPS, cm("after-silence", namespace))
        await converge(informer, api)
    assert informer.stats.errors >= 1 and informer.stats.lists == 1
    assert seen.verbs("add") == [f"{namespace}/after-silence"]


async def test_watches_the_server_ends_are_resumed_without_relisting(
    api: Client, namespace: str
) -> None:
    informer = Informer(api, CONFIGMAPS, namespace=namespace, watch_timeout=(1, 1))
    seen = Recorder()
    informer.add_handler(seen)
    async with running(informer):
        await eventually(lambda: informer.stats.watches >= 3)
        await api.create(CONFIGMAPS, cm("late", namespace))
        await converge(informer, api)
    assert seen.verbs("add") == [f"{namespace}/late"] and len(seen.calls) == 1
    assert informer.stats.errors == 0 and informer.stats.lists == 1


class BookmarkFirst(Client):
    """Puts one BOOKMARK at a real, current resourceVersion in front of the real watch
    stream: the server's own bookmarks come every ~60 s, too slow for a test."""

    def __init__(self, *args: Any, bookmark_rv: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bookmark_rv = bookmark_rv
        self.sent = False

    async def watch(self, resource: Any, **kwargs: Any) -> Any:
        if not self.sent:
            self.sent = True
            meta = {"resourceVersion": self.bookmark_rv}
            yield "BOOKMARK", {"kind": resource.kind, "apiVersion": "v1", "metadata": meta}
        async for event in super().watch(resource, **kwargs):
            yield event


async def test_bookmarks_only_advance_the_resource_version(
    kube: k8s.ApiClient, api: Client, namespace: str
) -> None:
    await api.create(CONFIGMAPS, cm("a", namespace))
    other = await new_namespace(api)  # the global RV moves past our list's
    current = (await api.list(NAMESPACES, limit=1))["metadata"]["resourceVersion"]
    client = BookmarkFirst(kube, registry=CollectorRegistry(), bookmark_rv=current)
    informer = Informer(client, CONFIGMAPS, namespace=namespace, watch_timeout=(1, 1))
    seen = Recorder()
    informer.add_handler(seen)
    async with running(informer):
        await eventually(lambda: informer.stats.bookmarks == 1)
        assert int(informer.last_sync_resource_version) >= int(current)
        await eventually(lambda: informer.stats.watches >= 2)  # resumed from the bookmark
        await api.create(CONFIGMAPS, cm("b", namespace))
        await converge(informer, api)
    assert seen.verbs("add") == [f"{namespace}/a", f"{namespace}/b"] and len(seen.calls) == 2
    assert informer.stats.errors == 0 and informer.stats.expired == 0
    await api.delete(NAMESPACES, other)


async def test_stop_and_wait_synced() -> None:
    informer = Informer(None, CONFIGMAPS)  # type: ignore[arg-type]
    assert not await informer.wait_synced(0.05)
    informer.stop()
    await asyncio.wait_for(informer.run(), 1)  # stopped before it started: returns


async def test_cancelling_run_propagates(api: Client, namespace: str) -> None:
    informer = Informer(api, CONFIGMAPS, namespace=namespace)
    task = asyncio.create_task(informer.run())
    assert await informer.wait_synced(10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_backoff_doubles_to_the_cap_jitters_and_resets() -> None:
    now = [0.0]
    timer = BackoffTimer(Backoff(), clock=lambda: now[0], rand=lambda: 0.0)
    delays = []
    for _ in range(8):
        delays.append(timer.next_delay())
        now[0] += 1
    assert delays == [0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0]
    now[0] += 121  # two quiet minutes
    assert timer.next_delay() == 0.8
    jittered = BackoffTimer(Backoff(), rand=lambda: 1.0)
    assert jittered.next_delay() == pytest.approx(0.8 * 0.8)


# -- on a private control plane that the tests restart ---------------------------------


class PrivateControlPlanes:
    """Control planes of this module, started on first use: one with the watch cache
    (as clusters run), one without (every list and watch goes to etcd; lists paginate)."""

    def __init__(self) -> None:
        self.started: dict[bool, ControlPlane] = {}

    async def get(self, watch_cache: bool = True) -> ControlPlane:
        if watch_cache not in self.started:
            args = [] if watch_cache else ["--watch-cache=false"]
            cp = ControlPlane(extra_apiserver_args=args)
            await cp.start()
            self.started[watch_cache] = cp
        return self.started[watch_cache]


@pytest.fixture(scope="module")
async def private() -> AsyncIterator[PrivateControlPlanes]:
    planes = PrivateControlPlanes()
    try:
        yield planes
    finally:
        for cp in planes.started.values():
            await cp.stop()


@pytest.fixture(scope="module")
async def own_cp(private: PrivateControlPlanes) -> ControlPlane:
    return await private.get(watch_cache=True)


@pytest.fixture(scope="module")
async def own_api(own_cp: ControlPlane) -> AsyncIterator[GatedClient]:
    async with await api_client(own_cp.kubeconfig) as raw:
        yield GatedClient(raw, registry=CollectorRegistry())


@pytest.mark.parametrize("watch_cache", [True, False], ids=["watch-cache", "no-watch-cache"])
async def test_converges_after_410_gone(watch_cache: bool, private: PrivateControlPlanes) -> None:
    cp = await private.get(watch_cache)
    async with await api_client(cp.kubeconfig) as raw:
        api = Client(raw, registry=CollectorRegistry())
        ns = await new_namespace(api)
        for i in range(5):
            await api.create(CONFIGMAPS, cm(f"c{i}", ns))
        informer = Informer(api, CONFIGMAPS, namespace=ns, backoff=FAST, page_size=2)
        seen = Recorder()
        informer.add_handler(seen)
        async with running(informer):
            await api.patch(CONFIGMAPS, "c0", {"data": {"v": "1"}}, namespace=ns)
            await converge(informer, api)
            held = int(informer.last_sync_resource_version)
            # Two writes: the server watches from held + 1, and etcd keeps the revision
            # it compacts at, so it must compact at held + 2 or later.
            await new_namespace(api)
            await new_namespace(api)
            assert await compact_etcd(cp) >= held + 2
            await restart_apiserver(cp)
            await api.delete(CONFIGMAPS, "c1", namespace=ns)
            await api.create(CONFIGMAPS, cm("c9", ns))
            await converge(informer, api)
    stats = informer.stats
    assert stats.expired >= 1 and stats.relists >= 1, stats
    if not watch_cache:
        # the server paginated the first list, so the relist at the compacted
        # resourceVersion was exact and expired too: only a quorum list could help
        assert stats.expired >= 2 and stats.quorum_lists >= 1, stats
    assert stats.lists <= 4, stats  # converged, not relisting in a loop
    assert f"{ns}/c1" in seen.verbs("delete")
    assert f"{ns}/c9" in seen.verbs("add")


async def test_converges_after_apiserver_restart_mid_watch(
    own_cp: ControlPlane, own_api: GatedClient
) -> None:
    ns = await new_namespace(own_api)
    await own_api.create(CONFIGMAPS, cm("keep", ns))
    await own_api.create(CONFIGMAPS, cm("drop", ns))
    informer = Informer(own_api, CONFIGMAPS, namespace=ns, backoff=FAST)
    seen = Recorder()
    informer.add_handler(seen)
    async with running(informer):
        watches = informer.stats.watches
        await restart_apiserver(own_cp)
        await own_api.create(CONFIGMAPS, cm("added", ns))
        await own_api.patch(CONFIGMAPS, "keep", {"data": {"v": "2"}}, namespace=ns)
        await own_api.delete(CONFIGMAPS, "drop", namespace=ns)
        state = await converge(informer, own_api)
        assert informer.stats.watches > watches
    assert sorted(state) == [f"{ns}/added", f"{ns}/keep"]
    assert seen.verbs("delete") == [f"{ns}/drop"]
    assert f"{ns}/added" in seen.verbs("add")


async def test_deletes_while_disconnected_are_delivered(
    own_cp: ControlPlane, own_api: GatedClient
) -> None:
    ns = await new_namespace(own_api)
    for name in ("a", "b", "c", "d"):
        await own_api.create(CONFIGMAPS, cm(name, ns))
    informer = Informer(own_api, CONFIGMAPS, namespace=ns, backoff=FAST)
    seen = Recorder()
    informer.add_handler(seen)
    async with running(informer):
        last_known = {k: o["metadata"]["resourceVersion"] for k, o in _items(informer)}
        own_api.gate.clear()  # the informer may not reconnect until we say so
        await restart_apiserver(own_cp)  # its watch breaks
        await own_api.delete(CONFIGMAPS, "a", namespace=ns)
        await own_api.delete(CONFIGMAPS, "b", namespace=ns)
        await own_api.create(CONFIGMAPS, cm("e", ns))
        await asyncio.sleep(0)  # (nothing can reach the informer: the gate is shut)
        assert {f"{ns}/a", f"{ns}/b"} <= set(informer.store.keys())
        own_api.gate.set()
        await converge(informer, own_api)
    assert sorted(seen.verbs("delete")) == [f"{ns}/a", f"{ns}/b"]
    for key in (f"{ns}/a", f"{ns}/b"):
        # the last object the informer knew, resourceVersion and all
        assert seen.deleted[key]["metadata"]["resourceVersion"] >= last_known[key]
    assert sorted(informer.store.keys()) == [f"{ns}/c", f"{ns}/d", f"{ns}/e"]


def _items(informer: Informer) -> list[tuple[str, dict[str, Any]]]:
    return [(object_key(o), o) for o in informer.store.list()]
