"""The control API mirrors the Python API over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from gpuctl.sim import SimConfig, Simulator
from tests.unit.test_sim_support import CloudClient

H100 = "NVIDIA H100 80GB HBM3"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(seed=11, boot_seconds=0.0, terminate_seconds=0.0)) as s:
        yield s


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def control(
    sim: Simulator, session: aiohttp.ClientSession, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    async with session.request(method, sim.control_url + path, json=body) as response:
        return response.status, await response.json()


async def test_info(sim: Simulator, session: aiohttp.ClientSession) -> None:
    status, info = await control(sim, session, "GET", "/")
    assert status == 200
    assert info["endpoints"]["runpod"] == sim.endpoint("runpod")
    assert info["api_keys"]["lambda"] == sim.api_key("lambda")


async def test_knobs(sim: Simulator, session: aiohttp.ClientSession) -> None:
    runpod = CloudClient(sim, "runpod", session)
    body = {"cloud": "runpod", "region": "US-GA-1", "instance_type": H100, "count": 3}
    assert (await control(sim, session, "POST", "/capacity", body))[0] == 200
    assert sim.state.cloud("runpod").free("US-GA-1", H100) == 3
    price = {"cloud": "runpod", "instance_type": H100, "usd_per_hour": 2.0}
    assert (await control(sim, session, "POST", "/prices", price))[0] == 200
    gpus = (await runpod.call("GET", "/v2/catalog/gpus")).body["gpus"]
    assert next(g for g in gpus if g["id"] == H100)["price"]["secure"] == 2.0

    fault = {"cloud": "runpod", "operation": "ListPods", "kind": "500", "count": 1}
    status, armed = await control(sim, session, "POST", "/faults", fault)
    assert status == 200 and armed["kind"] == "500"
    assert len((await control(sim, session, "GET", "/faults"))[1]) == 1
    assert (await runpod.call("GET", "/v1/pods")).status == 500
    await control(sim, session, "POST", "/faults", {**fault, "count": None})
    assert (await control(sim, session, "DELETE", "/faults"))[0] == 200
    assert (await runpod.call("GET", "/v1/pods")).status == 200


async def test_interrupt_ledger_instances_reset(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    runpod = CloudClient(sim, "runpod", session)
    pod = {"name": "spot", "gpuTypeIds": [H100], "interruptible": True}
    created = (await runpod.call("POST", "/v1/pods", json_body=pod)).body
    await sim.settle()
    target = {"cloud": "runpod", "instance_id": created["id"]}
    status, preempted = await control(sim, session, "POST", "/interrupt", target)
    assert (status, preempted["phase"], preempted["state"]) == (200, "preempted", "EXITED")
    assert (await control(sim, session, "POST", "/interrupt", target))[0] == 409
    assert (await runpod.call("GET", f"/v1/pods/{created['id']}")).body["desiredStatus"] == "EXITED"

    _, instances = await control(sim, session, "GET", "/instances?cloud=runpod")
    assert [i["id"] for i in instances] == [created["id"]]
    assert instances[0]["join_status"] == "disabled"  # no machines without execute_join_data
    console = f"/console?cloud=runpod&instance_id={created['id']}"
    assert await control(sim, session, "GET", console) == (200, {"console": ""})
    _, ledger = await control(sim, session, "GET", "/ledger?cloud=runpod")
    assert [e["operation"] for e in ledger] == ["CreatePod", "GetPod"]
    assert ledger[0]["body"]["name"] == "spot"
    _, tail = await control(sim, session, "GET", "/ledger?since=1")
    assert len(tail) == 1
    assert (await control(sim, session, "GET", "/violations"))[1] == []

    assert (await control(sim, session, "POST", "/reset"))[0] == 200
    assert sim.instances("runpod") == [] and sim.ledger == []


async def test_errors(sim: Simulator, session: aiohttp.ClientSession) -> None:
    unknown = {"cloud": "aws", "region": "x", "instance_type": "y", "count": 1}
    assert (await control(sim, session, "POST", "/capacity", unknown))[0] == 404
    missing = {"cloud": "lambda", "instance_id": "nope"}
    assert (await control(sim, session, "POST", "/interrupt", missing))[0] == 404
    assert (await control(sim, session, "POST", "/faults", {"cloud": "lambda", "kind": "x"}))[
        0
    ] == 400
    assert (await control(sim, session, "POST", "/prices", {"cloud": "lambda"}))[0] == 400
    assert (await control(sim, session, "GET", "/instances?cloud=aws"))[0] == 404
    assert (await control(sim, session, "GET", "/console?cloud=lambda&instance_id=x"))[0] == 404
    assert (await control(sim, session, "GET", "/console?instance_id=x"))[0] == 400
