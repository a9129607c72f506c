"""Money safety under SIGKILL: the operator is killed at precise points, then restarted.

Each case runs `gpuctl run` from the installed wheel (tests/wheel.py) as a real
subprocess with `GPUCTL_CRASH_AT` naming a crash point (gpuctl/util/crashpoints.py): the
process SIGKILLs itself there. A second, uncrashed operator then takes over. The
simulated clouds' records prove the outcome: every request converges, and each one got
exactly one machine — no duplicate launch — and nothing is left running after the
requests are deleted.
"""

from __future__ import annotations

import asyncio
import datetime
import signal
import subprocess
from pathlib import Path

import pytest

from gpuctl.controllers import naming
from gpuctl.controllers.resources import GPUNODEREQUESTS
from gpuctl.dev.controlplane import ControlPlane
from gpuctl.runtime.client import Client
from gpuctl.sim import Simulator
from tests.e2e.conftest import CLOUDS, Env, delete_and_wait, operator_config, wait_phase
from tests.processes import wait_gone
from tests.wheel import Installed, run_args, start_gpuctl

SPECS = {
    "lambda": {
        "big": {"gpu": {"type": "H100-80GB", "count": 8}, "maxPricePerHour": "30"},
        "small": {"gpu": {"type": "A10-24GB", "count": 1}},
    },
    # Hyperstack and DigitalOcean: the survivor finds the machine by name (DigitalOcean
    # lists GPU Droplets only with type=gpus).
    "hyperstack": {
        "big": {"gpu": {"type": "H100-80GB", "count": 8}, "maxPricePerHour": "30"},
        "small": {"gpu": {"type": "A100-80GB", "count": 1}},
    },
    "digitalocean": {
        "big": {"gpu": {"type": "H100-80GB", "count": 8}, "maxPricePerHour": "30"},
        "small": {"gpu": {"type": "L40S-48GB", "count": 1}},
    },
    # Crusoe's create is asynchronous (an operation the driver follows).
    "crusoe": {
        "big": {"gpu": {"type": "H100-80GB", "count": 8}, "maxPricePerHour": "40"},
        "small": {"gpu": {"type": "A100-80GB", "count": 1}},
    },
}
POINTS = (
    "after-finalizer",
    "after-status-write-Pending",
    "after-launch",
    "after-status-write-Provisioning",
    "after-terminate",
)
# Crusoe: a kill right after the launch, while the create's operation may still run.
CASES = [(p, "lambda") for p in POINTS] + [
    ("after-launch", c) for c in ("crusoe", "hyperstack", "digitalocean")
]


def start(
    installed: Installed, env: Env, cp: ControlPlane, log: Path, crash: str | None = None
) -> subprocess.Popen[bytes]:
    config = operator_config(env, cp, gc_grace=datetime.timedelta(seconds=3))
    crash_env = {"GPUCTL_CRASH_AT": crash} if crash else None
    return start_gpuctl(installed, run_args(config), log, crash_env).process


async def exited(proc: subprocess.Popen[bytes], timeout: float) -> int:
    return await asyncio.to_thread(proc.wait, timeout)


def machines_of(sim: Simulator, env: Env, uid: str) -> list[object]:
    prefix = naming.prefix(env.cluster) + naming.uid_part(uid) + "-"
    return [i for cloud in CLOUDS for i in sim.instances(cloud)
            if i.name.startswith(prefix)]  # fmt: skip


async def create(api: Client, env: Env, name: str, cloud: str) -> str:
    full = f"{name}-{env.suffix}"
    spec = {**SPECS[cloud][name], "providers": [env.providers[cloud]]}
    body = {"apiVersion": "gpuctl.io/v1alpha1", "kind": "GPUNodeRequest",
            "metadata": {"name": full}, "spec": spec}  # fmt: skip
    created = await api.create(GPUNODEREQUESTS, body)
    return str(created["metadata"]["name"])


@pytest.mark.parametrize(("point", "cloud"), CASES)
async def test_sigkill_at_any_point_leaves_exactly_one_machine_per_request(
    point: str,
    cloud: str,
    api: Client,
    sim: Simulator,
    env: Env,
    control_plane: ControlPlane,
    tmp_path: Path,
    gpuctl_wheel: Installed,
) -> None:
    log = tmp_path / "operator.log"
    crashing = point == "after-terminate"
    first = start(gpuctl_wheel, env, control_plane, log, None if crashing else point)
    names = [await create(api, env, n, cloud) for n in SPECS[cloud]]
    survivor: subprocess.Popen[bytes] | None = None
    try:
        if crashing:  # the crash comes during teardown: get to Ready, then delete
            for name in names:
                await wait_phase(api, name, "Ready")
            first.send_signal(signal.SIGTERM)
            assert await exited(first, 40) == 0, log.read_text()[-3000:]
            first = start(gpuctl_wheel, env, control_plane, log, point)
            await api.delete(GPUNODEREQUESTS, names[0])
        assert await exited(first, 60) == -signal.SIGKILL, log.read_text()[-3000:]
        survivor = start(gpuctl_wheel, env, control_plane, log)
        uids = {}
        for name in names:
            obj = await api.get(GPUNODEREQUESTS, name) if not crashing or name != names[0] else None
            if obj is not None:
                uids[name] = obj["metadata"]["uid"]
                obj = await wait_phase(api, name, "Ready")
                assert obj["status"]["attempt"] == 1
                assert len(machines_of(sim, env, uids[name])) == 1, sim.instances(cloud)
        for name in names:
            await delete_and_wait(api, name)
        live = [i for i in sim.instances(cloud) if i.phase.live]
        assert live == []
        assert len(sim.instances(cloud)) == len(names)  # one machine per request, ever
        assert not sim.violations
    finally:
        for proc in (first, survivor):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await exited(proc, 40)
                except subprocess.TimeoutExpired:
                    proc.kill()
        assert await asyncio.to_thread(wait_gone, f"--cluster-name {env.cluster}", 5) == []
        logs = log.read_text()
        assert not [c for c in CLOUDS if sim.api_key(c) in logs]
