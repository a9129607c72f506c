"""The Manager against the real API server: probes, metrics, leader-only work,
graceful shutdown (drain before release), lost leadership, signals.

Informers are gpuctl's real ones on ConfigMaps, except where a test needs to
hold the cache unsynced: there a stand-in informer (not a fake API) is used.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client

from gpuctl.runtime.client import Client
from gpuctl.runtime.controller import Controller
from gpuctl.runtime.informer import Informer
from gpuctl.runtime.leaderelection import LeaderElectionLost
from gpuctl.runtime.manager import LeaderElectionConfig, Manager
from gpuctl.runtime.reconcile import Result
from gpuctl.runtime.resources import CONFIGMAPS

SLACK = 1.0
FAST = {"lease_duration": 3.0, "renew_deadline": 2.0, "retry_period": 0.5}


class StubInformer:
    """An informer whose sync the test controls (no API traffic)."""

    def __init__(self) -> None:
        self.synced = asyncio.Event()
        self.handlers: list[Any] = []
        self._stopped = asyncio.Event()

    async def run(self) -> None:
        await self._stopped.wait()

    def stop(self) -> None:
        self._stopped.set()

    @property
    def has_synced(self) -> bool:
        return self.synced.is_set()

    async def wait_synced(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self.synced.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def add_handler(self, handler: Any) -> None:
        self.handlers.append(handler)


class Recorder:
    """A reconciler that records keys; optionally slow, optionally checking the Lease."""

    def __init__(self, delay: float = 0.0, after: Callable[[str], Any] | None = None) -> None:
        self.delay = delay
        self.after = after
        self.seen: list[str] = []
        self.in_flight = asyncio.Event()
        self.completed: list[str] = []
        self.cancelled: list[str] = []

    async def reconcile(self, key: str) -> Result:
        self.seen.append(key)
        self.in_flight.set()
        try:
            await asyncio.sleep(self.delay)
            if self.after is not None:
                await self.after(key)
        except asyncio.CancelledError:
            self.cancelled.append(key)
            raise
        self.completed.append(key)
        return Result()


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


async def eventually(condition: Callable[[], bool], within: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def http_get(port: int, path: str) -> tuple[int, str]:
    timeout = aiohttp.ClientTimeout(total=5)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        return response.status, await response.text()


async def read_lease(kube: client.ApiClient, namespace: str, name: str) -> Any:
    return await client.CoordinationV1Api(kube).read_namespaced_lease(
        name, namespace, _request_timeout=10
    )


@pytest.fixture
async def running() -> AsyncIterator[Callable[..., asyncio.Task[None]]]:
    """Start `manager.run(stop)` in a task; whatever is left is stopped at teardown."""
    started: list[tuple[asyncio.Task[None], asyncio.Event]] = []

    def start(manager: Manager, stop: asyncio.Event) -> asyncio.Task[None]:
        task = asyncio.create_task(manager.run(stop))
        started.append((task, stop))
        return task

    yield start
    for task, stop in started:
        stop.set()
        await asyncio.wait({task}, timeout=10)
        if not task.done():
            task.cancel()
            await asyncio.wait({task})


async def test_probes_metrics_and_end_to_end_reconcile(
    kube: client.ApiClient, namespace: str, running: Callable[..., asyncio.Task[None]]
) -> None:
    informer = Informer(Client(kube), CONFIGMAPS, namespace=namespace)
    recorder = Recorder()
    controller = Controller(unique("configmaps"), recorder)
    controller.watch(informer)
    manager = Manager(kube, health_port=0, handle_signals=False)
    manager.add_informer(informer)
    manager.add_controller(controller)
    stop = asyncio.Event()
    task = running(manager, stop)
    await asyncio.wait_for(manager.serving.wait(), 10)
    port = manager.health_port
    assert port

    assert await http_get(port, "/healthz") == (200, "ok")
    await eventually(lambda: informer.has_synced)
    assert await http_get(port, "/readyz") == (200, "ok")
    status, body = await http_get(port, "/readyz?verbose")
    assert status == 200 and "[+]informers-synced ok" in body

    await client.CoreV1Api(kube).create_namespaced_config_map(
        namespace, {"metadata": {"name": "hello"}, "data": {"k": "v"}}
    )
    await eventually(lambda: f"{namespace}/hello" in recorder.completed)

    status, text = await http_get(port, "/metrics")
    assert status == 200
    assert f'gpuctl_reconcile_total{{controller="{controller.name}",result="success"}}' in text
    assert f'gpuctl_workqueue_adds_total{{name="{controller.name}"}}' in text
    assert "gpuctl_reconcile_duration_seconds_bucket" in text

    stop.set()
    await asyncio.wait_for(task, 10)
    assert task.result() is None
    assert manager.health_port is None
    with pytest.raises(aiohttp.ClientConnectionError):
        await http_get(port, "/healthz")


async def test_not_ready_and_no_work_until_caches_sync(
    kube: client.ApiClient, running: Callable[..., asyncio.Task[None]]
) -> None:
    informer = StubInformer()
    leader_work = asyncio.Event()

    async def runnable() -> None:
        leader_work.set()
        await asyncio.Event().wait()

    manager = Manager(kube, health_port=0, handle_signals=False)
    manager.add_informer(informer)
    manager.add_runnable(runnable)
    running(manager, asyncio.Event())
    await asyncio.wait_for(manager.serving.wait(), 10)
    assert manager.health_port
    status, body = await http_get(manager.health_port, "/readyz")
    assert status == 500 and "[-]informers-synced failed" in body
    assert (await http_get(manager.health_port, "/healthz"))[0] == 200
    await asyncio.sleep(0.1)
    assert not leader_work.is_set()

    informer.synced.set()
    await asyncio.wait_for(leader_work.wait(), 5)
    assert (await http_get(manager.health_port, "/readyz"))[0] == 200


async def test_one_of_two_managers_leads_and_a_graceful_stop_hands_over(
    kube: client.ApiClient, namespace: str, running: Callable[..., asyncio.Task[None]]
) -> None:
    lease = unique("gpuctl-leader")
    events = {"a": asyncio.Event(), "b": asyncio.Event()}
    managers: dict[str, Manager] = {}
    stops: dict[str, asyncio.Event] = {}
    tasks: dict[str, asyncio.Task[None]] = {}
    for name in ("a", "b"):
        config = LeaderElectionConfig(
            namespace=namespace,
            name=lease,
            identity=f"manager-{name}",
            **{**FAST, "lease_duration": 20.0},
        )
        manager = Manager(kube, leader_election=config, handle_signals=False)

        async def lead(event: asyncio.Event = events[name]) -> None:
            event.set()
            await asyncio.Event().wait()

        manager.add_runnable(lead)
        managers[name], stops[name] = manager, asyncio.Event()
        tasks[name] = running(manager, stops[name])

    done, _ = await asyncio.wait(
        [asyncio.ensure_future(e.wait()) for e in events.values()],
        timeout=10,
        return_when=asyncio.FIRST_COMPLETED,
    )
    assert done
    leader = "a" if events["a"].is_set() else "b"
    other = "b" if leader == "a" else "a"
    await asyncio.sleep(1.5)  # three retry periods
    assert not events[other].is_set()
    assert managers[leader].is_leader and not managers[other].is_leader

    loop = asyncio.get_running_loop()
    stopped_at = loop.time()
    stops[leader].set()
    await asyncio.wait_for(tasks[leader], 10)
    await asyncio.wait_for(events[other].wait(), 1.1 * 2.2 + SLACK)
    assert loop.time() - stopped_at < 20, "handed over by release, not by expiry"
    assert (await read_lease(kube, namespace, lease)).spec.holder_identity == "manager-" + other


async def test_graceful_stop_drains_reconciles_before_releasing_the_lease(
    kube: client.ApiClient, namespace: str, running: Callable[..., asyncio.Task[None]]
) -> None:
    lease = unique("gpuctl-leader")
    holders_at_end: list[str] = []

    async def check_lease(key: str) -> None:
        holders_at_end.append((await read_lease(kube, namespace, lease)).spec.holder_identity)

    recorder = Recorder(delay=0.5, after=check_lease)
    controller = Controller(unique("drain"), recorder)
    config = LeaderElectionConfig(namespace=namespace, name=lease, identity="drainer", **FAST)
    manager = Manager(kube, leader_election=config, handle_signals=False)
    manager.add_controller(controller)
    stop = asyncio.Event()
    task = running(manager, stop)
    await eventually(lambda: manager.is_leader)
    controller.queue.add("slow")
    await asyncio.wait_for(recorder.in_flight.wait(), 5)

    stop.set()
    await asyncio.wait_for(task, 10)
    assert recorder.completed == ["slow"] and recorder.cancelled == []
    assert holders_at_end == ["drainer"], "the Lease was held until the reconcile finished"
    assert (await read_lease(kube, namespace, lease)).spec.holder_identity in ("", None)


async def test_graceful_timeout_cancels_stuck_reconciles(
    kube: client.ApiClient, running: Callable[..., asyncio.Task[None]]
) -> None:
    recorder = Recorder(delay=60)
    controller = Controller(unique("stuck"), recorder)
    manager = Manager(kube, graceful_shutdown_timeout=0.2, handle_signals=False)
    manager.add_controller(controller)
    stop = asyncio.Event()
    task = running(manager, stop)
    await eventually(lambda: manager.is_leader)
    controller.queue.add("stuck")
    await asyncio.wait_for(recorder.in_flight.wait(), 5)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert recorder.cancelled == ["stuck"]


async def test_lost_leadership_cancels_work_and_raises(
    kube: client.ApiClient, namespace: str, running: Callable[..., asyncio.Task[None]]
) -> None:
    lease = unique("gpuctl-leader")
    recorder = Recorder(delay=60)
    controller = Controller(unique("lost"), recorder)
    config = LeaderElectionConfig(namespace=namespace, name=lease, identity="victim", **FAST)
    manager = Manager(kube, leader_election=config, handle_signals=False)
    manager.add_controller(controller)
    task = running(manager, asyncio.Event())
    await eventually(lambda: manager.is_leader)
    controller.queue.add("busy")
    await asyncio.wait_for(recorder.in_flight.wait(), 5)

    current = await read_lease(kube, namespace, lease)
    current.spec.holder_identity = "usurper"
    await client.CoordinationV1Api(kube).replace_namespaced_lease(
        lease, namespace, current, _request_timeout=10
    )
    with pytest.raises(LeaderElectionLost):
        await asyncio.wait_for(task, FAST["renew_deadline"] + 1.0 + SLACK)
    assert recorder.cancelled == ["busy"], "not drained: another leader may already act"
    assert not manager.is_leader


async def test_sigterm_stops_gracefully_and_restores_handlers(
    kube: client.ApiClient, running: Callable[..., asyncio.Task[None]]
) -> None:
    before = signal.getsignal(signal.SIGTERM)
    recorder = Recorder(delay=0.3)
    controller = Controller(unique("sigterm"), recorder)
    manager = Manager(kube, handle_signals=True)
    manager.add_controller(controller)
    task = running(manager, asyncio.Event())
    await eventually(lambda: manager.is_leader)
    controller.queue.add("k")
    await asyncio.wait_for(recorder.in_flight.wait(), 5)
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(task, 10)
    assert recorder.completed == ["k"]
    assert signal.getsignal(signal.SIGTERM) == before


async def test_a_failing_runnable_stops_the_manager(
    kube: client.ApiClient, running: Callable[..., asyncio.Task[None]]
) -> None:
    async def broken() -> None:
        raise ValueError("runnable broke")

    controller = Controller(unique("bystander"), Recorder())
    manager = Manager(kube, handle_signals=False)
    manager.add_controller(controller)
    manager.add_runnable(broken, needs_leader=False)
    task = running(manager, asyncio.Event())
    with pytest.raises(ValueError, match="runnable broke"):
        await asyncio.wait_for(task, 5)
    assert controller.stopping
