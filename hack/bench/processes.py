"""Child processes of a benchmark: the operator (`gpuctl run`) and the simulated clouds
(`gpuctl sim`).

- `Child` runs a process in its own session with PR_SET_PDEATHSIG=SIGKILL, so a crashed
  or killed benchmark leaves no operator or simulator behind; stdout and stderr go to a
  log file whose tail is shown when something fails. `stop()` sends SIGTERM (a graceful
  stop) and SIGKILL after a grace period.
- `OperatorProcess` serves /readyz and /metrics on a free loopback port; `memory()` and
  `cpu_seconds()` read its /proc figures.
- `SimProcess` writes a simulator configuration file, starts `gpuctl sim -o json`, reads
  the endpoints and keys it announces and talks to its control API (ledger, instances,
  spec violations). For the lifecycle benchmark its machines run their join data
  (`execute_join_data`: real `kubeadm join` and kubelet, gpuctl-node-agent).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import IO, Any

import aiohttp
import attrs
import yaml

from bench.cluster import OPERATOR_NAMESPACE, wait_until
from bench.host import Memory, cpu_seconds_of, memory_of
from bench.promtext import Metrics
from gpuctl.dev.controlplane import ControlPlane, free_port
from gpuctl.sim import CLOUDS, SimConfig

JSON = dict[str, Any]
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """preexec_fn: own session (Ctrl-C reaches only us), SIGKILL when the parent dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    os.setsid()


@attrs.define
class Child:
    """One child process whose output goes to `log_path`."""

    name: str
    argv: list[str]
    log_path: Path
    process: asyncio.subprocess.Process | None = None
    _log: IO[bytes] | None = None

    async def start(self) -> None:
        self._log = self.log_path.open("ab")
        self.process = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            preexec_fn=_die_with_parent,
        )

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"{self.name} is not started")
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def stop(self, grace: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after `grace` seconds; the exit code (None if never run)."""
        process = self.process
        code = None
        if process is not None:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
                try:
                    await asyncio.wait_for(process.wait(), grace)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    await process.wait()
            code = process.returncode
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def gpuctl_argv(*args: str) -> list[str]:
    """argv running the gpuctl CLI of this interpreter (the checkout's .venv)."""
    return [sys.executable, "-m", "gpuctl.cli.main", *args]


# -- the operator process ---------------------------------------------------------------


@attrs.define
class OperatorProcess:
    """`gpuctl run` as a child process; None for a poll setting keeps gpuctl's default."""

    kubeconfig: Path
    ca_cert_hash: str
    log_path: Path
    cluster_name: str = "bench"
    namespace: str = OPERATOR_NAMESPACE
    workers: int = 0  # 0: gpuctl run's default (sized from the providers' limits)
    ready_poll: float | None = None
    joining_poll: float | None = None
    termination_poll: float | None = None
    status_coalesce: float | None = None
    log_level: str = "info"
    port: int = attrs.field(factory=free_port)
    child: Child | None = None

    def argv(self) -> list[str]:
        args = [
            "run",
            f"--kubeconfig={self.kubeconfig}",
            f"--ca-cert-hash={self.ca_cert_hash}",
            f"--cluster-name={self.cluster_name}",
            f"--namespace={self.namespace}",
            "--health-host=127.0.0.1",
            f"--health-port={self.port}",
            f"--workers={self.workers}",
            f"--log-level={self.log_level}",
        ]
        polls = {
            "--ready-poll": self.ready_poll,
            "--joining-poll": self.joining_poll,
            "--termination-poll": self.termination_poll,
            "--status-coalesce": self.status_coalesce,
        }
        args += [f"{flag}={value}" for flag, value in polls.items() if value is not None]
        return gpuctl_argv(*args)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self.child is None:
            raise RuntimeError("the operator is not started")
        return self.child.pid

    async def start(self) -> None:
        self.child = Child("operator", self.argv(), self.log_path)
        await self.child.start()

    async def wait_ready(self, timeout: float) -> float:  # noqa: ASYNC109
        """Seconds until /readyz answers 200 (every informer synced)."""
        started = time.monotonic()

        async def ready() -> bool:
            if self.child is None or not self.child.running:
                raise RuntimeError(f"the operator exited:\n{self.log_tail()}")
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                return await self._get("/readyz") is not None
            return False

        await wait_until(ready, timeout, "operator /readyz", interval=0.1)
        return time.monotonic() - started

    async def metrics(self) -> Metrics:
        text = await self._get("/metrics")
        if text is None:
            raise RuntimeError("the operator's /metrics did not answer 200")
        return Metrics.parse(text)

    def memory(self) -> Memory:
        return memory_of(self.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds_of(self.pid)

    async def stop(self) -> int | None:
        return None if self.child is None else await self.child.stop()

    def log_tail(self, lines: int = 40) -> str:
        return "" if self.child is None else self.child.log_tail(lines)

    async def _get(self, path: str) -> str | None:
        timeout = aiohttp.ClientTimeout(total=30)
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.get(self.url + path) as response,
        ):
            return await response.text() if response.status == 200 else None


# -- the simulated clouds ------------------------------------------------------------------


@attrs.define
class SimProcess:
    """`gpuctl sim` with the benchmark's configuration; its control API for the ledger."""

    workdir: Path
    config: JSON
    child: Child | None = None
    info: JSON = attrs.field(factory=dict)

    @classmethod
    def for_benchmark(
        cls, workdir: Path, cp: ControlPlane, capacity: int, machines: Path | None = None
    ) -> SimProcess:
        """Zero boot and termination delay, `capacity` of everything; with `machines`,
        every instance boots as a machine running its join data (real node agents;
        needs root), its files under that directory."""
        config: JSON = {
            "seed": 1,
            "boot_seconds": 0.0,
            "terminate_seconds": 0.0,
            "kubeconfig": str(cp.kubeconfig),
            "ca_file": str(cp.ca_file),
            **({"execute_join_data": True, "workdir": str(machines)} if machines else {}),
            # `capacity` tables are replaced whole: every (region, type) gets the default.
            **{cloud: {"default_capacity": capacity, "capacity": {}} for cloud in CLOUDS},
        }
        SimConfig.from_dict(config)  # fail here, not in the child, on a bad configuration
        return cls(workdir, config)

    async def start(self, timeout: float = 60.0) -> None:  # noqa: ASYNC109
        path = self.workdir / "sim.yaml"
        path.write_text(yaml.safe_dump(self.config))
        self.child = Child(
            "sim", gpuctl_argv("sim", f"--config={path}", "-o", "json"), self.workdir / "sim.log"
        )
        await self.child.start()

        async def announced() -> bool:
            assert self.child is not None
            if not self.child.running:
                raise RuntimeError(f"gpuctl sim exited:\n{self.child.log_tail()}")
            for line in self.child.log_path.read_text(errors="replace").splitlines():
                if line.startswith("{"):
                    self.info = json.loads(line)
                    return True
            return False

        await wait_until(announced, timeout, "gpuctl sim to announce its endpoints", 0.1)

    @property
    def pid(self) -> int:
        assert self.child is not None
        return self.child.pid

    def endpoint(self, cloud: str) -> str:
        return str(self.info["endpoints"][cloud])

    def api_key(self, cloud: str) -> str:
        return str(self.info["api_keys"][cloud])

    async def ledger(self, since: int = 0) -> list[JSON]:
        entries: list[JSON] = await self._get(f"/ledger?since={since}")
        return entries

    async def instances(self) -> list[JSON]:
        instances: list[JSON] = await self._get("/instances")
        return instances

    async def violations(self) -> list[JSON]:
        violations: list[JSON] = await self._get("/violations")
        return violations

    async def stop(self) -> None:
        if self.child is not None:
            await self.child.stop(grace=10.0)

    async def post(self, path: str, body: Any) -> Any:
        """POST to the simulator's control API (e.g. /fault-rates)."""
        timeout = aiohttp.ClientTimeout(total=120)
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.post(self.info["control_url"] + path, json=body) as response,
        ):
            response.raise_for_status()
            return await response.json()

    async def _get(self, path: str) -> Any:
        timeout = aiohttp.ClientTimeout(total=120)
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.get(self.info["control_url"] + path) as response,
        ):
            response.raise_for_status()
            return await response.json()
