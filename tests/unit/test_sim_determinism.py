"""Same seed and call sequence, same simulation; and time moves without requests."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from gpuctl.sim import ManualClock, Phase, SimConfig, Simulator
from tests.unit.test_sim_support import CloudClient

H100 = "NVIDIA H100 80GB HBM3"


async def scenario(seed: int) -> list[Any]:
    """Launch on every cloud, let an hour pass; what the clients and the sim saw."""
    config = SimConfig(seed=seed, boot_seconds=90, interrupt_rate=3.0)
    clock = ManualClock()
    seen: list[Any] = []
    async with Simulator(config, clock=clock) as sim, aiohttp.ClientSession() as session:
        lam = CloudClient(sim, "lambda", session)
        launch = {
            "region_name": "us-west-1",
            "instance_type_name": "gpu_1x_a6000",
            "ssh_key_names": ["gpuctl"],
        }
        seen.append(
            (await lam.call("POST", "/api/v1/instance-operations/launch", json_body=launch)).body
        )
        runpod = CloudClient(sim, "runpod", session)
        for n in range(4):
            body = {"name": f"s{n}", "gpuTypeIds": [H100], "interruptible": True}
            seen.append((await runpod.call("POST", "/v1/pods", json_body=body)).body["id"])
        paperspace = CloudClient(sim, "paperspace", session)
        machine = {
            "name": "m",
            "machineType": "A6000",
            "templateId": "t0nspur5",
            "diskSize": 50,
            "region": "ca1",
        }
        seen.append((await paperspace.call("POST", "/v1/machines", json_body=machine)).body["data"])
        clock.advance(3600)
        for cloud in ("lambda", "runpod", "paperspace"):
            seen += [
                (i.id, i.public_ip, i.phase, i.interrupt_at, i.phase_since)
                for i in sim.instances(cloud)
            ]
    return seen


async def test_same_seed_same_simulation() -> None:
    first, again, other = await scenario(5), await scenario(5), await scenario(6)
    assert first == again
    assert first != other
    assert any(row[2] is Phase.PREEMPTED for row in first if isinstance(row, tuple))


async def test_the_ticker_moves_instances_without_requests() -> None:
    config = SimConfig(boot_seconds=0.2, terminate_seconds=0.1)
    async with Simulator(config) as sim, aiohttp.ClientSession() as session:
        body = {"name": "p", "gpuTypeIds": [H100]}
        await CloudClient(sim, "runpod", session).call("POST", "/v1/pods", json_body=body)
        deadline = time.monotonic() + 5
        while sim.state.cloud("runpod").instances and time.monotonic() < deadline:
            pod = next(iter(sim.state.cloud("runpod").instances.values()))
            if pod.phase is Phase.RUNNING:
                break
            await asyncio.sleep(0.02)
        assert pod.phase is Phase.RUNNING
        assert pod.phase_since - pod.created_at >= 0.2
