"""`Simulator`: three simulated GPU clouds, their control API and their machines.

```
async with Simulator(SimConfig(seed=1, boot_seconds=0.0)) as sim:
    sim.endpoint("lambda")  # http://127.0.0.1:PORT, one port per cloud
    sim.api_key("lambda")   # the one key the cloud accepts
    sim.state.set_capacity("lambda", "us-east-1", "gpu_8x_h100_sxm5", 0)
    sim.faults.add("runpod", operation="CreatePod", kind="429")
    sim.ledger, sim.violations, sim.instances("paperspace")
```

Every server binds 127.0.0.1. A ticker task applies state transitions at their
due time (and every request does first), so clients always observe current
state. With `execute_join_data`, each running instance is a machine that runs
its join data the way its cloud would (gpuctl.sim.machines); the simulator
itself never talks to Kubernetes. `stop()` cuts hanging faults short, kills
every machine, removes their files and closes every site.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from types import TracebackType

import attrs
from aiohttp import web

from gpuctl.sim import control, crusoe, digitalocean, hyperstack, lambdacloud, paperspace, runpod
from gpuctl.sim.clock import Clock, SystemClock
from gpuctl.sim.config import CLOUDS, SimConfig
from gpuctl.sim.faults import Faults
from gpuctl.sim.machines import Machines
from gpuctl.sim.model import LedgerEntry, SimInstance, Violation
from gpuctl.sim.server import CloudApi, CloudServer, Context
from gpuctl.sim.state import SimState

HOST = "127.0.0.1"
# The ticker looks at the clock at least this often (a ManualClock may jump).
MAX_TICK = 0.5

_APIS: dict[str, type[CloudApi]] = {
    "lambda": lambdacloud.LambdaApi,
    "runpod": runpod.RunPodApi,
    "paperspace": paperspace.PaperspaceApi,
    "crusoe": crusoe.CrusoeApi,
    "hyperstack": hyperstack.HyperstackApi,
    "digitalocean": digitalocean.DigitalOceanApi,
}
NATIVE_STATE: dict[str, Callable[[SimInstance, float], str]] = {
    "lambda": lambdacloud.native_state,
    "runpod": runpod.native_state,
    "paperspace": paperspace.native_state,
    "crusoe": crusoe.native_state,
    "hyperstack": hyperstack.native_state,
    "digitalocean": digitalocean.native_state,
}


class Simulator:
    def __init__(self, config: SimConfig | None = None, *, clock: Clock | None = None) -> None:
        self.config = config or SimConfig()
        self.clock: Clock = clock or SystemClock()
        self.state = SimState(self.config, self.clock)
        self.faults = Faults(self.config.seed)  # seeds the draws of fault rates
        self.ledger: list[LedgerEntry] = []
        self.violations: list[Violation] = []
        self.machines = Machines(self.config)
        self.state.subscribe(self.machines.on_transition)
        self._ports: dict[str, int] = {}
        self._runners: list[web.AppRunner] = []
        self._sites: dict[str, tuple[web.AppRunner, web.SockSite]] = {}
        self._outages: set[asyncio.Task[None]] = set()
        self._context: Context | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self.state.wake = self._wake.set

    # -- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        context = Context(
            config=self.config,
            clock=self.clock,
            state=self.state,
            faults=self.faults,
            ledger=self.ledger,
            violations=self.violations,
            stopping=self._stopping,
        )
        self._context = context
        try:
            await self.machines.start()
            for cloud in CLOUDS:
                api = _APIS[cloud](self.state, self.config)
                app = CloudServer(api, context).application()
                self._ports[cloud] = await self._serve(app, self.config.ports.get(cloud, 0), cloud)
            control_app = control.application(self)
            self._ports["control"] = await self._serve(
                control_app, self.config.ports.get("control", 0)
            )
        except BaseException:
            await self.stop()
            raise
        self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def stop(self) -> None:
        self._stopping.set()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        for task in self._outages:
            task.cancel()
        await self.machines.stop()
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()

    async def _serve(self, app: web.Application, port: int, name: str = "control") -> int:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        self._runners.append(runner)
        return await self._listen(runner, port, name)

    async def _listen(self, runner: web.AppRunner, port: int, name: str) -> int:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, port))
        site = web.SockSite(runner, sock)
        await site.start()
        self._sites[name] = (runner, site)
        return int(sock.getsockname()[1])

    async def outage(self, cloud: str, seconds: float) -> None:
        """The cloud's API is down for `seconds`: its port refuses connections and a
        request on a connection opened before is reset unanswered; nothing runs. The
        machines keep running. Then it listens on the same port again."""
        if self._context is None or cloud not in self._sites:
            raise RuntimeError("the simulator is not started")
        self._context.outages[cloud] = self.clock.now() + seconds
        runner, site = self._sites[cloud]
        await site.stop()
        task = asyncio.get_running_loop().create_task(self._reopen(runner, cloud, seconds))
        self._outages.add(task)
        task.add_done_callback(self._outages.discard)

    async def _reopen(self, runner: web.AppRunner, cloud: str, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self._listen(runner, self._ports[cloud], cloud)

    async def _tick(self) -> None:
        # Python 3.11's wait_for swallows a cancel that arrives as the wait ends (a wake
        # set just before stop()): also stop once stop() said so, or stop() waits forever.
        while not self._stopping.is_set():
            self.state.advance()
            due = self.state.next_due()
            delay = MAX_TICK if due is None else min(MAX_TICK, max(0.0, due - self.clock.now()))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    # -- the public surface -------------------------------------------------------------

    def endpoint(self, cloud: str) -> str:
        """Base URL of a cloud's API (paths as in its spec, e.g. /api/v1/instances)."""
        if cloud not in CLOUDS:
            raise KeyError(f"unknown cloud {cloud!r}; one of {CLOUDS}")
        return f"http://{HOST}:{self._port(cloud)}"

    def api_key(self, cloud: str) -> str:
        return self.config.api_key(cloud)

    @property
    def control_url(self) -> str:
        return f"http://{HOST}:{self._port('control')}"

    def instances(self, cloud: str) -> list[SimInstance]:
        """Snapshots of every instance the cloud ever created, oldest first.

        `state` is the cloud's own status value now (e.g. Lambda "active").
        """
        self.state.advance()
        now = self.clock.now()
        render = NATIVE_STATE[cloud]
        instances = list(self.state.cloud(cloud).instances.values())
        for instance in instances:
            self.machines.refresh(instance)
        return [attrs.evolve(i, state=render(i, now)) for i in instances]

    def instance(self, cloud: str, instance_id: str) -> SimInstance:
        """A snapshot of one instance (KeyError if the cloud never had it)."""
        for instance in self.instances(cloud):
            if instance.id == instance_id:
                return instance
        raise KeyError(f"{cloud}: no instance {instance_id!r}")

    async def settle(self) -> None:
        """Apply due transitions and wait until the machines they boot or kill are booted
        (their processes started) or gone. A join itself takes real time: see `wait_join`."""
        self.state.advance()
        await self.machines.idle()

    async def wait_join(self, cloud: str, instance_id: str, seconds: float = 60.0) -> SimInstance:
        """Until the machine joined, its boot program ended, or the machine is gone;
        a snapshot then. TimeoutError after `seconds`."""
        self.state.advance()
        await self.machines.wait_join(self.state.instance(cloud, instance_id), seconds)
        return self.instance(cloud, instance_id)

    async def wait_gone(self, cloud: str, instance_id: str, seconds: float = 60.0) -> SimInstance:
        """Until no process of the machine is left (it stopped, or a container exited)."""
        self.state.advance()
        await self.machines.wait_gone(self.state.instance(cloud, instance_id), seconds)
        return self.instance(cloud, instance_id)

    async def hang(self, cloud: str, instance_id: str) -> None:
        """The machine hangs (kernel panic, dead kubelet): every process of it is killed
        while the cloud keeps reporting it running and billing it."""
        self.state.advance()
        await self.machines.hang(self.state.instance(cloud, instance_id))

    def machine_file(self, cloud: str, instance_id: str, path: str) -> bytes | None:
        """A file the machine wrote, e.g. "/var/log/kubelet.log" (None if it has none)."""
        return self.machines.machine_file(self.state.instance(cloud, instance_id), path)

    def console(self, cloud: str, instance_id: str) -> str:
        """The machine's console log (its serial console): "" if it never booted."""
        return self.machines.console(self.state.instance(cloud, instance_id))

    def reset(self) -> None:
        """Forget instances, faults, ledger and violations; capacity and prices as configured."""
        self.machines.reset()
        self.state.reset()
        self.faults.clear()
        self.ledger.clear()
        self.violations.clear()

    def _port(self, name: str) -> int:
        try:
            return self._ports[name]
        except KeyError:
            raise RuntimeError("the simulator is not started") from None
