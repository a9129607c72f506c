"""Injected faults: each kind, in each cloud's own format, matched and counted."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from gpuctl.sim import SimConfig, Simulator
from tests.unit.test_sim_support import CloudClient, no_violations

# One cheap read per cloud: (cloud, path, operationId).
READS = [
    ("lambda", "/api/v1/regions", "listRegions"),
    ("runpod", "/v1/pods", "ListPods"),
    ("runpod", "/v2/catalog/gpus", "listGpuTypes"),
    ("paperspace", "/v1/os-templates", "osTemplates-list"),
]
LAUNCH = {
    "region_name": "us-east-1",
    "instance_type_name": "gpu_1x_a10",
    "ssh_key_names": ["gpuctl"],
    "name": "lost-answer",
}


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(seed=3, boot_seconds=0.0)) as simulator:
        yield simulator


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    # No keep-alive: aiohttp retries an idempotent request once when a reused
    # connection drops, which would hide a dropped answer.
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as client:
        yield client


@pytest.mark.parametrize(("cloud", "path", "operation"), READS)
async def test_500_and_429_in_the_clouds_format(
    sim: Simulator, session: aiohttp.ClientSession, cloud: str, path: str, operation: str
) -> None:
    api = CloudClient(sim, cloud, session)  # validates the error bodies
    sim.faults.add(cloud, operation=operation, kind="500")
    sim.faults.add(cloud, operation=operation, kind="429", retry_after=2.5)
    assert (await api.call("GET", path)).status == 500
    limited = await api.call("GET", path)
    assert (limited.status, limited.headers["Retry-After"]) == (429, "3")
    assert (await api.call("GET", path)).status == 200
    assert [e.fault for e in sim.ledger] == ["500", "429", None]
    no_violations(sim)


async def test_matching_by_path_and_count(sim: Simulator, session: aiohttp.ClientSession) -> None:
    api = CloudClient(sim, "runpod", session)
    sim.faults.add("runpod", path="/v1/pods*", kind="500", count=2)
    statuses = [(await api.call("GET", "/v1/pods")).status for _ in range(3)]
    assert statuses == [500, 500, 200]
    assert (await api.call("GET", "/v2/catalog/gpus")).status == 200
    sim.faults.add("lambda", kind="500", count=None)
    lam = CloudClient(sim, "lambda", session)
    assert {(await lam.call("GET", "/api/v1/regions")).status for _ in range(4)} == {500}
    sim.faults.clear()
    assert (await lam.call("GET", "/api/v1/regions")).status == 200


async def test_slow(sim: Simulator, session: aiohttp.ClientSession) -> None:
    api = CloudClient(sim, "paperspace", session)
    sim.faults.add("paperspace", operation="osTemplates-list", kind="slow", seconds=0.3)
    started = time.monotonic()
    assert (await api.call("GET", "/v1/os-templates")).status == 200
    assert time.monotonic() - started >= 0.3


async def test_timeout_runs_the_operation_then_drops_the_connection(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    sim.faults.add("lambda", operation="launchInstance", kind="timeout", seconds=0.2)
    url = sim.endpoint("lambda") + "/api/v1/instance-operations/launch"
    headers = {"Authorization": f"Bearer {sim.api_key('lambda')}"}
    with pytest.raises(aiohttp.ServerDisconnectedError):
        async with session.post(url, json=LAUNCH, headers=headers) as response:
            await response.read()
    assert [i.name for i in sim.instances("lambda")] == ["lost-answer"]  # it did launch
    assert (sim.ledger[-1].status, sim.ledger[-1].fault) == (0, "timeout")


async def test_timeout_outlasts_the_client_and_stop_cuts_it_short(
    session: aiohttp.ClientSession,
) -> None:
    sim = Simulator(SimConfig(hang_seconds=30.0))
    await sim.start()
    sim.faults.add("runpod", operation="ListPods", kind="timeout")
    url = sim.endpoint("runpod") + "/v1/pods"
    headers = {"Authorization": f"Bearer {sim.api_key('runpod')}"}
    with pytest.raises(TimeoutError):
        timeout = aiohttp.ClientTimeout(total=0.3)
        async with session.get(url, headers=headers, timeout=timeout) as response:
            await response.read()
    hung = asyncio.ensure_future(session.get(url, headers=headers))
    sim.faults.add("runpod", operation="ListPods", kind="timeout")
    await asyncio.sleep(0.1)
    started = time.monotonic()
    await sim.stop()
    assert time.monotonic() - started < 5
    with pytest.raises(aiohttp.ClientError):
        await hung


@pytest.mark.parametrize("variant", ["truncated", "wrong-types"])
async def test_malformed(sim: Simulator, session: aiohttp.ClientSession, variant: str) -> None:
    sim.faults.add("lambda", operation="listRegions", kind="malformed", variant=variant)
    url = sim.endpoint("lambda") + "/api/v1/regions"
    headers = {"Authorization": f"Bearer {sim.api_key('lambda')}"}
    async with session.get(url, headers=headers) as response:
        assert response.status == 200
        text = await response.text()
    if variant == "truncated":
        with pytest.raises(json.JSONDecodeError):
            json.loads(text)
    else:
        regions = json.loads(text)["data"]
        assert all(isinstance(r["name"], int) for r in regions)
    assert sim.ledger[-1].fault == "malformed"
    no_violations(sim)


def test_bad_fault_kinds_are_rejected() -> None:
    sim = Simulator()
    with pytest.raises(ValueError, match="kind"):
        sim.faults.add("lambda", kind="503")
    with pytest.raises(ValueError, match="variant"):
        sim.faults.add("lambda", kind="malformed", variant="xml")
