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
import ctypes
import os
import signal
import sys
import time
from pathlib import Path
from typing import IO

import aiohttp
import attrs

_PR_SET_PDEATHSIG = 1


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
            "--health-host", "127.0.0.1", "--health-port", str(self.health_port),
            "--ready-poll", "3", "--joining-poll", "1", "--termination-poll", "1",
            "--provider-refresh", "60", "--gc-interval", "10", "--gc-grace", "60",
            "--log-level", self.log_level,
        ]  # fmt: skip


def _die_with_parent() -> None:
    """preexec_fn: own session, and SIGKILL when the demo process dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    os.setsid()


@attrs.define
class OperatorProcess:
    args: OperatorArgs
    log_path: Path
    process: asyncio.subprocess.Process | None = None
    _log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.args.health_port}/metrics"

    async def start(self, timeout: float = 60.0) -> None:  # noqa: ASYNC109
        self._log = self.log_path.open("wb")
        # The PDEATHSIG is tied to the thread that forks: this is the event loop's.
        self.process = await asyncio.create_subprocess_exec(
            *self.args.argv(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            env={k: v for k, v in os.environ.items() if k != "GPUCTL_CRASH_AT"},  # no test crashes
            preexec_fn=_die_with_parent,
        )
        await self._wait_ready(timeout)

    async def _wait_ready(self, timeout: float) -> None:  # noqa: ASYNC109
        url = f"http://127.0.0.1:{self.args.health_port}/readyz"
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while time.monotonic() < deadline:
                if self.process is None or self.process.returncode is not None:
                    raise OperatorError(f"the operator exited:\n{self.log_tail()}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                    async with session.get(url) as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.2)
        raise OperatorError(f"the operator was not ready after {timeout}s:\n{self.log_tail()}")

    async def wait(self) -> int | None:
        """Until the process exits: its exit status (None if never started)."""
        process = self.process
        return None if process is None else await process.wait()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def stop(self, grace: float = 35.0) -> None:
        process, self.process = self.process, None
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
