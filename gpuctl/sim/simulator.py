"""`Simulator`: three simulated GPU clouds, their control API and the simulated kubelet.

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
state. `stop()` cuts hanging faults short, cancels the kubelet's operations and
closes every site; Nodes already registered stay in the cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from types import TracebackType

import attrs
from aiohttp import web

from gpuctl.sim import control, lambdacloud, paperspace, runpod
from gpuctl.sim.clock import Clock, SystemClock
from gpuctl.sim.config import CLOUDS, SimConfig
from gpuctl.sim.faults import Faults
from gpuctl.sim.kubelet import Kubelet
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
}
NATIVE_STATE: dict[str, Callable[[SimInstance, float], str]] = {
    "lambda": lambdacloud.native_state,
    "runpod": runpod.native_state,
    "paperspace": paperspace.native_state,
}


class Simulator:
    def __init__(self, config: SimConfig | None = None, *, clock: Clock | None = None) -> None:
        self.config = config or SimConfig()
        self.clock: Clock = clock or SystemClock()
        self.state = SimState(self.config, self.clock)
        self.faults = Faults()
        self.ledger: list[LedgerEntry] = []
        self.violations: list[Violation] = []
        self.kubelet = Kubelet(kubeconfig=self.config.kubeconfig, ca_file=self.config.ca_file)
        self.state.subscribe(self.kubelet.on_transition)
        self._ports: dict[str, int] = {}
        self._runners: list[web.AppRunner] = []
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
        try:
            for cloud in CLOUDS:
                api = _APIS[cloud](self.state, self.config)
                app = CloudServer(api, context).application()
                self._ports[cloud] = await self._serve(app, self.config.ports.get(cloud, 0))
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
        await self.kubelet.stop()
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()

    async def _serve(self, app: web.Application, port: int) -> int:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        self._runners.append(runner)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, port))
        await web.SockSite(runner, sock).start()
        return int(sock.getsockname()[1])

    async def _tick(self) -> None:
        while True:
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
        return [
            attrs.evolve(i, state=render(i, now))
            for i in self.state.cloud(cloud).instances.values()
        ]

    async def settle(self) -> None:
        """Apply due transitions and wait for the kubelet to finish what they started."""
        self.state.advance()
        await self.kubelet.idle()

    def reset(self) -> None:
        """Forget instances, faults, ledger and violations; capacity and prices as configured."""
        self.state.reset()
        self.faults.clear()
        self.ledger.clear()
        self.violations.clear()

    def _port(self, name: str) -> int:
        try:
            return self._ports[name]
        except KeyError:
            raise RuntimeError("the simulator is not started") from None
