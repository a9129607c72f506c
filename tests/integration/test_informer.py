"""The informer converges to the API server's state through 410s, restarts and gaps.

Restart tests run on a private control plane (module fixture) so that stopping
kube-apiserver and compacting etcd cannot disturb other tests.

How a real 410 is produced: the informer holds resourceVersion r; we write an
unrelated object, compact etcd at the current revision (> r) through etcd's HTTP
gateway, and restart kube-apiserver. Its fresh watch cache starts above r and etcd no
longer has r, so the watch from r fails with 410 ("too old resource version", sent as
an ERROR event) and so does the exact relist at r ("The resourceVersion for the
provided list is too old"): the informer must fall back to a quorum list. An expired
continue token is produced the same way, by compacting between two pages of a list.

Faults the real server cannot be made to produce on cue (a 500 on a watch, a stream
that loses an event, a proxy that drops watches at once) are injected by `FaultyClient`,
a real `Client` whose requests otherwise reach the real API server.
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
import attrs
import pytest
from kubernetes_asyncio import client as k8s
from prometheus_client import CollectorRegistry

from gpuctl.dev.controlplane import ControlPlane
from gpuctl.runtime.client import ApiError, Client
from gpuctl.runtime.informer import Backoff, Informer, drop_managed_fields
from gpuctl.runtime.kubeclient import api_client
from gpuctl.runtime.resources import CONFIGMAPS, NAMESPACES, Resource
from gpuctl.runtime.store import label_index, object_key

FAST = Backoff(initial=0.1, cap=0.5)
PODS = Resource("", "v1", "pods", "Pod", namespaced=True)


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
    informer disconnected for as long as a test needs, without mocking the server.
    It records the resourceVersion of every list request (None for a continue)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = asyncio.Event()
        self.gate.set()
        self.list_rvs: list[str | None] = []
        self.watch_timeouts: list[int] = []

    async def list(self, *args: Any, **kwargs: Any) -> Any:
        await self.gate.wait()
        self.list_rvs.append(kwargs.get("resource_version"))
        return await super().list(*args, **kwargs)

    async def watch(self, *args: Any, **kwargs: Any) -> Any:
        await self.gate.wait()
        self.watch_timeouts.append(kwargs["timeout_seconds"])
        async for event in super().watch(*args, **kwargs):
            yield event


def internal_error(message: str) -> ApiError:
    """What kube-apiserver answers (or sends as an ERROR event) on an internal error."""
    status = {"kind": "Status", "code": 500, "reason": "InternalError", "message": message}
    return ApiError.from_status(status)


class FaultyClient(GatedClient):
    """A gated real client with faults on cue:

    - `fail_watches`: the next watch requests fail with these errors, as the server's
      answer, without reaching it;
    - `lose_delete_of`: the DELETED event of that object name is lost and the stream ends
      with an ERROR event carrying a 500 (a server that could not send the event);
    - `drop_watches_after`: every watch is cut that many seconds after it was opened (a
      proxy or load balancer that drops long requests at once); `cut_watches()` cuts
      the open ones now;
    - `compact_before_continue`: before the next continue request, etcd is compacted past
      the list's revision (the token expires for real).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fail_watches: list[ApiError] = []
        self.lose_delete_of: str | None = None
        self.drop_watches_after: float | None = None
        self.compact_before_continue: Callable[[], Any] | None = None
        self._open: set[asyncio.Timeout] = set()

    def cut_watches(self) -> None:
        """End every open watch stream now (as a dropped connection would)."""
        now = asyncio.get_running_loop().time()
        for timeout in self._open:
            with contextlib.suppress(RuntimeError):  # not entered yet, or already left
                timeout.reschedule(now)

    async def list(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("continue_") and self.compact_before_continue is not None:
            compact, self.compact_before_continue = self.compact_before_continue, None
            await compact()
        return await super().list(*args, **kwargs)

    async def watch(self, *args: Any, **kwargs: Any) -> Any:
        await self.gate.wait()
        if self.fail_watches:
            raise self.fail_watches.pop(0)
        stream = super().watch(*args, **kwargs)
        timeout = asyncio.timeout(self.drop_watches_after)
        self._open.add(timeout)
        try:
            async with contextlib.aclosing(stream), timeout:
                async for kind, obj in stream:
                    if kind == "DELETED" and obj["metadata"]["name"] == self.lose_delete_of:
                        self.lose_delete_of = None
                        raise internal_error("unable to encode watch object")
                    yield kind, obj
        except TimeoutError:
            return  # dropped: the stream just ends
        finally:
            self._open.discard(timeout)


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
    api = Client(api.api_client, registry=CollectorRegistry())  # not gated, not recorded
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


async def restart_etcd(cp: ControlPlane) -> None:
    """Kill etcd (SIGKILL) and start it again with the same data and ports; wait until it
    serves. kube-apiserver keeps running and reconnects (its watch cache reinitializes).
    ControlPlane has no etcd restart of its own, hence its private child here."""
    etcd = cp._etcd
    assert etcd is not None and etcd.pid is not None
    os.kill(etcd.pid, signal.SIGKILL)
    await etcd.stop()  # reaps it
    await etcd.start()
    deadline = time.monotonic() + 30
    last: object = None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while True:
            try:
                async with session.get(f"{cp.etcd_url}/health") as r:
                    last = (r.status, await r.text())
                    if (
                        r.status == 200
                        and (await r.json(content_type=None)).get("health") == "true"
                    ):
                        return
            except (aiohttp.ClientError, TimeoutError, OSError) as err:
                last = err
            assert time.monotonic() < deadline, f"etcd did not come back: {last!r}"
            await asyncio.sleep(0.1)


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
    # 1.5 s of silence kills the watch; it lasted over a second, so (as client-go treats
    # a timeout on the stream) it is resumed from the same resourceVersion: no relist.
    informer = Informer(api, CONFIGMAPS, namespace=namespace, read_timeout=1.5, backoff=FAST)
    seen = Recorder()
    informer.add_handler(seen)
    async with running(informer):
        await eventually(lambda: informer.stats.watches >= 2)  # the first died of silence
        await api.create(CONFIGMAPS, cm("after-silence", namespace))
        await converge(informer, api)
    assert informer.stats.errors >= 1 and informer.stats.lists == 1
    assert informer.stats.backoffs == 0
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
async def own_api(own_cp: ControlPlane) -> AsyncIterator[FaultyClient]:
    async with await api_client(own_cp.kubeconfig) as raw:
        client = FaultyClient(raw, registry=CollectorRegistry())
        yield client
        client.gate.set()


@pytest.mark.parametrize("watch_cache", [True, False], ids=["watch-cache", "no-watch-cache"])
async def test_converges_after_410_gone(watch_cache: bool, private: PrivateControlPlanes) -> None:
    cp = await private.get(watch_cache)
    async with await api_client(cp.kubeconfig) as raw:
        api = GatedClient(raw, registry=CollectorRegistry())
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
            # Gated: the informer's next watch reaches the restarted, ready server (a
            # watch that hits it while it starts fails otherwise, and relists at once).
            api.gate.clear()
            await restart_apiserver(cp)
            await api.delete(CONFIGMAPS, "c1", namespace=ns)
            await api.create(CONFIGMAPS, cm("c9", ns))
            api.gate.set()
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
        # A watch that breaks within a second of its start, with no event, is a "very
        # short watch" and would relist by itself: let it last.
        await asyncio.sleep(1.2)
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


# -- client-go fidelity: relists, backoff, quiet relists, expired continues --------------


def bound_pod(name: str, namespace: str) -> dict[str, Any]:
    """A Pod bound to a Node that does not exist: a normal delete leaves it terminating
    for its grace period (no kubelet will ever confirm), a force delete removes it."""
    return {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "nodeName": "ghost-node",
            "terminationGracePeriodSeconds": 3600,
            "containers": [{"name": "c", "image": "registry.invalid/none"}],
        },
    }


async def retrying(call: Callable[[], Any], within: float = 30) -> Any:
    """`await call()` until it succeeds (the API server may be reconnecting to etcd)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await call()
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_a_500_on_watch_relists_and_delivers_a_force_delete(
    own_api: FaultyClient,
) -> None:
    """client-go relists after any watch error but 429 / connection refused: the delete
    that happened while the watch was down reaches handlers from the relist (not from a
    watch resumed at the last resourceVersion, which the server could still serve)."""
    ns = await new_namespace(own_api)
    for name in ("p1", "p2"):
        await own_api.create(PODS, bound_pod(name, ns))
    informer = Informer(own_api, PODS, namespace=ns, backoff=FAST)
    seen = Recorder()
    informer.add_handler(seen)
    async with running(informer):
        last_known = {k: o["metadata"]["resourceVersion"] for k, o in _items(informer)}
        # A watch that breaks within a second of its start, with no event, is a "very
        # short watch" and would relist by itself: let it last.
        await asyncio.sleep(1.2)
        own_api.gate.clear()  # the informer may not reconnect until we say so
        own_api.cut_watches()  # its watch breaks (the server keeps every resourceVersion)
        held = informer.last_sync_resource_version
        lists = len(own_api.list_rvs)
        # kubectl delete --force --grace-period=0: gone at once, no terminating phase
        await own_api.delete(PODS, "p1", namespace=ns, grace_period_seconds=0)
        await own_api.delete(PODS, "p2", namespace=ns)  # terminating for an hour
        own_api.fail_watches.append(internal_error("etcdserver: leader changed"))
        own_api.gate.set()
        await converge(informer, own_api)
    assert own_api.list_rvs[lists] == held  # relisted, from the last resourceVersion
    assert informer.stats.relists == 1 and informer.stats.errors >= 1
    assert seen.verbs("delete") == [f"{ns}/p1"]
    # the last object the informer knew: the delete came from the relist's diff
    assert seen.deleted[f"{ns}/p1"]["metadata"]["resourceVersion"] == last_known[f"{ns}/p1"]
    p2 = informer.store.get(f"{ns}/p2")
    assert p2 is not None and p2["metadata"].get("deletionTimestamp")
    assert f"{ns}/p2" in seen.verbs("update")


async def test_an_error_event_after_a_lost_event_relists(own_api: FaultyClient) -> None:
    """The stream loses the DELETED event and ends with an ERROR event carrying a 500.
    Resuming from the last resourceVersion would trust a stream that just failed; the
    informer relists (client-go) and the delete is delivered from the relist's diff."""
    ns = await new_namespace(own_api)
    for name in ("x", "y"):
        await own_api.create(CONFIGMAPS, cm(name, ns))
    informer = Informer(own_api, CONFIGMAPS, namespace=ns, backoff=FAST)
    seen = Recorder()
    informer.add_handler(seen)
    async with running(informer):
        known = informer.store.get(f"{ns}/x")
        assert known is not None
        own_api.lose_delete_of = "x"
        await own_api.delete(CONFIGMAPS, "x", namespace=ns)
        await converge(informer, own_api)
        await eventually(lambda: bool(seen.verbs("delete")))
    assert own_api.lose_delete_of is None  # the event was lost
    assert seen.verbs("delete") == [f"{ns}/x"]
    assert (
        seen.deleted[f"{ns}/x"]["metadata"]["resourceVersion"]
        == (known["metadata"]["resourceVersion"])
    )
    assert informer.stats.relists == 1 and informer.stats.backoffs == 1
    assert seen.verbs("update") == []  # y, unchanged, was not re-delivered


async def test_relist_of_unchanged_objects_delivers_no_updates(
    own_cp: ControlPlane, own_api: FaultyClient
) -> None:
    """After a 410 relist of N objects, handlers hear only what changed: 1 update,
    1 delete, 0 updates for the N - 2 unchanged ones (client-go: same resourceVersion
    is a sync, delivered to resync listeners only)."""
    ns = await new_namespace(own_api)
    n = 200
    await asyncio.gather(*(own_api.create(CONFIGMAPS, cm(f"u{i:03}", ns)) for i in range(n)))
    informer = Informer(own_api, CONFIGMAPS, namespace=ns, backoff=FAST)
    seen = Recorder()
    informer.add_handler(seen)
    async with running(informer):
        # The first list (RV "0") is served by the watch cache, which may not hold all
        # the creates just acknowledged yet: the rest come through the watch, as adds.
        await eventually(lambda: len(seen.verbs("add")) == n, within=30)
        seen.calls.clear()
        await asyncio.sleep(1.2)  # not a "very short watch": the relist will be the 410's
        own_api.gate.clear()
        held = int(informer.last_sync_resource_version)
        await new_namespace(own_api)
        await new_namespace(own_api)
        assert await compact_etcd(own_cp) >= held + 2
        await restart_apiserver(own_cp)  # the watch from the held RV will get 410
        await own_api.patch(CONFIGMAPS, "u000", {"data": {"v": "1"}}, namespace=ns)
        await own_api.delete(CONFIGMAPS, "u001", namespace=ns)
        own_api.gate.set()
        await eventually(lambda: informer.stats.relists >= 1, within=30)
        await converge(informer, own_api)
    assert informer.stats.expired >= 1
    assert seen.verbs("update") == [f"{ns}/u000"]
    assert seen.verbs("delete") == [f"{ns}/u001"]
    assert informer.stats.unchanged == n - 2


async def test_converges_through_etcd_and_apiserver_restarts(
    own_cp: ControlPlane, own_api: FaultyClient
) -> None:
    ns = await new_namespace(own_api)
    for name in ("a", "b", "c"):
        await own_api.create(CONFIGMAPS, cm(name, ns))
    informer = Informer(own_api, CONFIGMAPS, namespace=ns, backoff=FAST)
    seen = Recorder()
    informer.add_handler(seen)
    async with running(informer):
        own_api.gate.clear()
        await restart_etcd(own_cp)
        await retrying(lambda: own_api.delete(CONFIGMAPS, "a", namespace=ns))
        await retrying(lambda: own_api.patch(CONFIGMAPS, "b", {"data": {"v": "2"}}, namespace=ns))
        own_api.gate.set()
        await converge(informer, own_api, within=60)
        await restart_apiserver(own_cp)
        await restart_etcd(own_cp)
        await retrying(lambda: own_api.create(CONFIGMAPS, cm("d", ns)))
        await retrying(lambda: own_api.delete(CONFIGMAPS, "c", namespace=ns))
        state = await converge(informer, own_api, within=60)
    assert sorted(state) == [f"{ns}/b", f"{ns}/d"]
    assert sorted(seen.verbs("delete")) == [f"{ns}/a", f"{ns}/c"]
    assert seen.verbs("update") == [f"{ns}/b"]


async def test_watches_dropped_at_once_back_off_and_relist(own_api: FaultyClient) -> None:
    """A proxy that cuts every watch at once: each is a "very short watch" (under a
    second, no event), so the informer backs off (0.8 s, 1.6 s, ... jittered up to
    double) and relists, instead of re-opening watches in a tight loop."""
    ns = await new_namespace(own_api)
    await own_api.create(CONFIGMAPS, cm("a", ns))
    informer = Informer(own_api, CONFIGMAPS, namespace=ns)  # client-go's backoff
    own_api.watch_timeouts.clear()
    own_api.drop_watches_after = 0.05
    try:
        async with running(informer):
            await asyncio.sleep(4)
            stats = attrs.evolve(informer.stats)
            own_api.drop_watches_after = None
            await own_api.create(CONFIGMAPS, cm("b", ns))
            await converge(informer, own_api, within=30)
    finally:
        own_api.drop_watches_after = None
    # 4 s: a watch at 0, backoff 0.8-1.6 s, relist + watch, backoff 1.6-3.2 s, ...
    assert 2 <= stats.watches <= 4, stats
    assert stats.short_watches == stats.backoffs >= 2, stats
    assert stats.relists in (stats.backoffs - 1, stats.backoffs), stats
    assert all(300 <= t < 600 for t in own_api.watch_timeouts), own_api.watch_timeouts


async def test_expired_continue_token_falls_back_to_a_full_list(
    private: PrivateControlPlanes,
) -> None:
    """Without the watch cache lists paginate from etcd; compacting etcd between two
    pages expires the continue token (410 Expired). client-go's pager then lists once
    more without pagination, at the requested resourceVersion."""
    cp = await private.get(watch_cache=False)
    async with await api_client(cp.kubeconfig) as raw:
        api = FaultyClient(raw, registry=CollectorRegistry())
        ns = await new_namespace(api)
        for i in range(5):
            await api.create(CONFIGMAPS, cm(f"c{i}", ns))

        async def compact() -> None:
            await new_namespace(api)  # etcd keeps the revision it compacts at
            await compact_etcd(cp)

        api.compact_before_continue = compact
        informer = Informer(api, CONFIGMAPS, namespace=ns, backoff=FAST, page_size=2)
        seen = Recorder()
        informer.add_handler(seen)
        async with running(informer):
            assert api.compact_before_continue is None  # it did compact mid-list
            assert api.list_rvs == ["0", None, "0"]  # page 1, expired continue, full list
            assert informer.stats.full_lists == 1 and informer.stats.lists == 1
            assert sorted(seen.verbs("add")) == [f"{ns}/c{i}" for i in range(5)]
            await api.create(CONFIGMAPS, cm("c5", ns))
            await converge(informer, api)
