"""The manager: one process's informers, controllers and runnables, with leader election.

Mirrors controller-runtime's `pkg/manager`. `Manager.run(stop)`:

1. serves `/healthz`, `/readyz` and `/metrics` on one port (health.py), if a port
   is configured; `/readyz` passes once every informer has synced and until
   shutdown begins;
2. starts every informer and waits (at most `cache_sync_timeout`) until all have
   synced — raising `CacheSyncTimeout` otherwise;
3. starts the runnables added with `needs_leader=False`;
4. with leader election configured, campaigns for the Lease and runs the
   controllers and leader runnables only while leading; without it, runs them
   at once;
5. runs until `stop` is set — by the caller, by SIGTERM/SIGINT (when
   `handle_signals`), or by the manager itself when a component fails.

Graceful shutdown (stop set): readiness turns false; controllers stop taking
work and finish their in-flight reconciles, leader runnables are cancelled, all
within `graceful_shutdown_timeout` (30 s) after which whatever is left is
cancelled; only then is the Lease released (so two leaders never act at once);
then the other runnables and the informers are stopped and the port closed.
A second signal cancels everything at once.

`run()` returns None after a graceful stop. It raises `LeaderElectionLost` when
the Lease could not be renewed: the leader's work has been cancelled (not
drained: another replica may take over as soon as the Lease expires), and the
process should exit non-zero so the pod restarts clean — controller-runtime
exits the process at that point; raising lets the CLI do it after its own
cleanup. It raises the exception of any informer, controller or runnable that
fails (after shutting the rest down gracefully), and `CacheSyncTimeout`.

Runnables are `async def fn() -> None` callables that run until cancelled
(cancellation is their stop signal, like a cancelled context in Go).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import uuid
from collections.abc import Callable, Coroutine, Iterable, Iterator
from typing import Any, Protocol

import attrs
from aiohttp import web

from gpuctl.runtime.controller import CacheSyncTimeout, Controller
from gpuctl.runtime.health import HealthServer
from gpuctl.runtime.leaderelection import LeaderElector
from gpuctl.runtime.transport import Transport

log = logging.getLogger(__name__)

Runnable = Callable[[], Coroutine[Any, Any, None]]

_INFORMER_STOP_TIMEOUT = 5.0


class Informer(Protocol):
    """The part of an informer the manager drives."""

    async def run(self) -> None: ...

    @property
    def has_synced(self) -> bool: ...

    async def wait_synced(self, timeout: float | None = None) -> bool: ...  # noqa: ASYNC109

    def stop(self) -> None: ...


def default_identity() -> str:
    """controller-runtime's default: hostname plus a random suffix, unique per process."""
    return f"{socket.gethostname()}_{uuid.uuid4()}"


@attrs.frozen
class LeaderElectionConfig:
    """Where the Lease lives and how it is timed (see leaderelection.py)."""

    namespace: str
    name: str = "gpuctl-leader"
    identity: str = attrs.field(factory=default_identity)
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    release_on_cancel: bool = True


class Manager:
    """Runs a set of informers, controllers and runnables; see the module docstring."""

    def __init__(
        self,
        api_client: Transport,
        *,
        health_port: int | None = None,
        health_host: str = "127.0.0.1",
        leader_election: LeaderElectionConfig | None = None,
        graceful_shutdown_timeout: float = 30.0,
        cache_sync_timeout: float = 120.0,
        handle_signals: bool = True,
    ) -> None:
        self.api_client = api_client
        self.graceful_shutdown_timeout = graceful_shutdown_timeout
        self.cache_sync_timeout = cache_sync_timeout
        self.handle_signals = handle_signals
        self._informers: list[Informer] = []
        self._controllers: list[Controller] = []
        self._leader_runnables: list[Runnable] = []
        self._runnables: list[Runnable] = []
        self._health = HealthServer(health_host, health_port) if health_port is not None else None
        if self._health is not None:
            self._health.add_readyz_check("informers-synced", self._ready)
        self.elector = (
            LeaderElector(
                api_client,
                namespace=leader_election.namespace,
                name=leader_election.name,
                identity=leader_election.identity,
                lease_duration=leader_election.lease_duration,
                renew_deadline=leader_election.renew_deadline,
                retry_period=leader_election.retry_period,
                release_on_cancel=leader_election.release_on_cancel,
            )
            if leader_election is not None
            else None
        )
        self._leading = False
        self._shutting_down = False
        self.serving = asyncio.Event()  # set once the health port is bound (or none is wanted)

    def add_informer(self, informer: Informer) -> None:
        self._informers.append(informer)

    def add_controller(self, controller: Controller) -> None:
        self._controllers.append(controller)

    def add_runnable(self, fn: Runnable, *, needs_leader: bool = True) -> None:
        (self._leader_runnables if needs_leader else self._runnables).append(fn)

    def mount(self, prefix: str, app: web.Application) -> None:
        """Serve another aiohttp app under `prefix` on the health port (before `run`)."""
        if self._health is None:
            raise ValueError("no health port configured: nothing to mount on")
        self._health.mount(prefix, app)

    @property
    def health_port(self) -> int | None:
        """The bound port of the health server, once serving."""
        return self._health.port if self._health is not None else None

    @property
    def is_leader(self) -> bool:
        """True while this manager runs the leader's work."""
        return self._leading

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Run until `stop` is set; see the module docstring for what it raises."""
        stop = stop if stop is not None else asyncio.Event()
        with self._signal_handlers(stop):
            if self._health is not None:
                await self._health.start()
                log.info("serving probes and metrics on %s:%s", self._health.host, self.health_port)
            self.serving.set()
            try:
                await self._run_informers(stop)
            finally:
                self._shutting_down = True
                if self._health is not None:
                    await self._health.stop()
                self.serving.clear()

    def _ready(self) -> bool:
        return not self._shutting_down and all(i.has_synced for i in self._informers)

    async def _run_informers(self, stop: asyncio.Event) -> None:
        tasks = [
            asyncio.create_task(i.run(), name=f"informer-{n}")
            for n, i in enumerate(self._informers)
        ]
        try:
            synced = asyncio.create_task(self._wait_for_caches())
            finished = await _wait_any(stop, finishing=[synced, *tasks])
            if finished is None:  # stopped before the caches synced
                await _cancel_all([synced])
                return
            if finished is not synced:
                await _cancel_all([synced])
                _raise_for(finished, "informer")
            synced.result()
            await self._run_workloads(stop, tasks)
        finally:
            self._shutting_down = True
            for informer in self._informers:
                informer.stop()
            await _finish(tasks, _INFORMER_STOP_TIMEOUT)

    async def _wait_for_caches(self) -> None:
        results = await asyncio.gather(
            *(i.wait_synced(self.cache_sync_timeout) for i in self._informers)
        )
        if not all(results):
            raise CacheSyncTimeout(f"informers not synced after {self.cache_sync_timeout}s")

    async def _run_workloads(
        self, stop: asyncio.Event, informers: list[asyncio.Task[None]]
    ) -> None:
        background = [asyncio.create_task(fn(), name="runnable") for fn in self._runnables]
        main = asyncio.create_task(self._campaign(stop) if self.elector else self._lead(stop))
        try:
            finished = await _wait_any(None, finishing=[main, *informers], failing=background)
            if finished is not None and finished is not main:
                # An informer ended or a runnable failed: shut down gracefully, then report it.
                stop.set()
                await asyncio.wait({main})
                _raise_for(finished, "informer")
            main.result()
        finally:
            await _cancel_all([main, *background])

    async def _campaign(self, stop: asyncio.Event) -> None:
        """Lead while holding the Lease; returns after a graceful stop."""
        assert self.elector is not None
        campaign = asyncio.create_task(self.elector.run(lambda: self._lead(stop)))
        try:
            await _wait_any(stop, finishing=[campaign])
            if not campaign.done() and not self.elector.is_leader:
                # Still campaigning: nothing to drain. (A write racing this cancel may
                # leave the Lease to expire instead of being released.)
                await _cancel_all([campaign])
                return
            # Leading: _lead drains on `stop`, then the elector releases the Lease.
            await asyncio.wait({campaign})
            campaign.result()
        finally:
            await _cancel_all([campaign])

    async def _lead(self, stop: asyncio.Event) -> None:
        """The leader's work: controllers and leader runnables until `stop`, then drain."""
        self._leading = True
        log.info("starting %d controller(s)", len(self._controllers))
        controllers = [
            asyncio.create_task(c.run(), name=f"controller-{c.name}") for c in self._controllers
        ]
        runnables = [
            asyncio.create_task(fn(), name="leader-runnable") for fn in self._leader_runnables
        ]
        try:
            finished = await _wait_any(stop, failing=[*controllers, *runnables])
            await self._drain(controllers, runnables)
        finally:
            # After a drain nothing is left to cancel. When cancelled instead (leadership
            # lost, second signal) everything stops at once: another leader may act soon.
            await _cancel_all([*controllers, *runnables])
            self._leading = False
        if finished is not None:
            finished.result()  # a controller or runnable failed

    async def _drain(
        self, controllers: list[asyncio.Task[None]], runnables: list[asyncio.Task[None]]
    ) -> None:
        log.info("shutting down: draining in-flight reconciles")
        for controller in self._controllers:
            controller.stop()
        for task in runnables:
            task.cancel()
        if not await _finish([*controllers, *runnables], self.graceful_shutdown_timeout):
            log.warning(
                "graceful shutdown timed out after %.0fs; cancelled the rest",
                self.graceful_shutdown_timeout,
            )

    @contextlib.contextmanager
    def _signal_handlers(self, stop: asyncio.Event) -> Iterator[None]:
        """First SIGTERM/SIGINT: graceful stop. Second: cancel everything now."""
        if not self.handle_signals:
            yield
            return
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()

        def on_signal(signum: int) -> None:
            if stop.is_set() and task is not None:
                log.warning("second %s: stopping immediately", signal.Signals(signum).name)
                task.cancel()
            else:
                log.info("%s: shutting down gracefully", signal.Signals(signum).name)
                stop.set()

        previous: dict[int, Any] = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                handler = signal.getsignal(signum)
                loop.add_signal_handler(signum, on_signal, signum)
            except (NotImplementedError, RuntimeError, ValueError):
                continue  # not the main thread, or no signals on this platform
            previous[signum] = handler
        try:
            yield
        finally:
            for installed, handler in previous.items():
                loop.remove_signal_handler(installed)
                if handler is not None:
                    signal.signal(installed, handler)


async def _wait_any(
    stop: asyncio.Event | None,
    *,
    finishing: Iterable[asyncio.Task[Any]] = (),
    failing: Iterable[asyncio.Task[Any]] = (),
) -> asyncio.Task[Any] | None:
    """Wait for the first of: `stop` set (-> None), a `finishing` task ending in any
    way, a `failing` task ending with an exception or cancelled (-> that task).

    `failing` tasks that return normally are dropped from the wait; with nothing
    left to wait for, returns None.
    """
    finishing = set(finishing)
    pending: set[asyncio.Future[Any]] = {*finishing, *failing}
    stopper = asyncio.ensure_future(stop.wait()) if stop is not None else None
    if stopper is not None:
        pending.add(stopper)
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if stopper is not None and stopper in done:
                return None
            for task in done:
                if task in finishing or task.cancelled() or task.exception() is not None:
                    return task  # type: ignore[return-value]
        return None
    finally:
        if stopper is not None:
            stopper.cancel()


def _raise_for(task: asyncio.Task[Any], what: str) -> None:
    """Re-raise how `task` ended; a task that should not have ended at all is an error too."""
    task.result()
    raise RuntimeError(f"{what} task {task.get_name()} ended unexpectedly")


async def _finish(tasks: list[asyncio.Task[None]], grace: float) -> bool:
    """Wait up to `grace` seconds for `tasks`, then cancel the rest; True if none was cancelled."""
    if not tasks:
        return True
    _, pending = await asyncio.wait(tasks, timeout=grace)
    await _cancel_all(list(pending))
    return not pending


async def _cancel_all(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel `tasks` and wait until they have finished."""
    live = [t for t in tasks if not t.done()]
    for task in live:
        task.cancel()
    if live:
        await asyncio.wait(live)
