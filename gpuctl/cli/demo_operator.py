"""The demo's operator: `gpuctl run` as a child process, as it would run in a cluster.

A child process rather than an in-process `Operator` so the demo exercises the
real command line and the operator's JSON logs go to their own file instead of
over the live table. `OperatorProcess.start()` launches
`python -m gpuctl.cli.main run ...` and returns once its `/readyz` answers 200
(informers synced); if the child exits first it raises `OperatorError` with the
log's tail. `stop()` sends SIGTERM (the operator stops gracefully), waits up to
`grace` seconds (more than the manager's 30 s drain), then SIGKILLs.

Like the control plane's children, the operator runs in its own session (a
Ctrl-C in the terminal reaches only the demo, which stops things in order) and
carries PR_SET_PDEATHSIG=SIGKILL, so it cannot outlive a demo that dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path

import aiohttp
import attrs

from gpuctl.dev.process import ChildProcess


class OperatorError(RuntimeError):
    """The operator exited or did not become ready."""


@attrs.frozen
class OperatorArgs:
    kubeconfig: Path
    join_endpoint: str
    health_port: int
    cluster_name: str = "demo"
    namespace: str = "gpuctl-system"
    log_level: str = "info"

    def argv(self) -> list[str]:
        # Short polls so the table moves at the simulator's pace, not a real cloud's.
        return [
            sys.executable, "-m", "gpuctl.cli.main", "run",
            "--kubeconfig", str(self.kubeconfig),
            "--cluster-name", self.cluster_name,
            "--namespace", self.namespace,
            "--join-endpoint", self.join_endpoint,
            "--health-host", "127.0.0.1", "--health-port", str(self.health_port), "--ui",
            "--ready-poll", "3", "--joining-poll", "1", "--termination-poll", "1",
            "--provider-refresh", "60", "--gc-interval", "10", "--gc-grace", "60",
            "--log-level", self.log_level,
        ]  # fmt: skip


@attrs.define
class OperatorProcess:
    args: OperatorArgs
    log_path: Path
    child: ChildProcess | None = None

    @property
    def pid(self) -> int | None:
        return None if self.child is None else self.child.pid

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.args.health_port}/metrics"

    @property
    def dashboard_url(self) -> str:
        """The operator's read-only dashboard (`gpuctl run --ui`, docs/dashboard.md)."""
        return f"http://127.0.0.1:{self.args.health_port}/ui/"

    async def start(self, timeout: float = 60.0) -> None:  # noqa: ASYNC109
        self.log_path.write_bytes(b"")
        env = {k: v for k, v in os.environ.items() if k != "GPUCTL_CRASH_AT"}  # no test crashes
        self.child = ChildProcess("operator", self.args.argv(), self.log_path, env=env)
        await self.child.start()
        await self._wait_ready(timeout)

    async def _wait_ready(self, timeout: float) -> None:  # noqa: ASYNC109
        url = f"http://127.0.0.1:{self.args.health_port}/readyz"
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while time.monotonic() < deadline:
                if not self.running:
                    raise OperatorError(f"the operator exited:\n{self.log_tail()}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                    async with session.get(url) as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.2)
        raise OperatorError(f"the operator was not ready after {timeout}s:\n{self.log_tail()}")

    async def wait(self) -> int | None:
        """Until the process exits: its exit status (None if never started)."""
        return None if self.child is None else await self.child.wait()

    @property
    def running(self) -> bool:
        return self.child is not None and self.child.running

    async def stop(self, grace: float = 35.0) -> None:
        if self.child is not None:
            await self.child.stop(grace)

    def log_tail(self, lines: int = 20) -> str:
        return "" if self.child is None else self.child.log_tail(lines)
