"""Simulated Paperspace: machines, startup scripts, availability; spec-valid answers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from gpuctl.providers import catalog
from gpuctl.sim import ManualClock, SimConfig, Simulator
from tests.unit.test_sim_support import CloudClient, no_violations

MACHINE = {
    "name": "gpu-c-1",
    "machineType": "H100x8",
    "templateId": "t0nspur5",
    "diskSize": 100,
    "region": "ny2",
}


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    config = SimConfig(seed=7, boot_seconds=60, terminate_seconds=30)
    async with Simulator(config, clock=ManualClock()) as simulator:
        yield simulator


@pytest.fixture
async def api(sim: Simulator) -> AsyncIterator[CloudClient]:
    async with aiohttp.ClientSession() as session:
        yield CloudClient(sim, "paperspace", session)


async def test_account_and_catalogue(sim: Simulator, api: CloudClient) -> None:
    session = (await api.call("GET", "/v1/auth/session")).body
    assert session["team"]["namespace"] == "gpuctl-sim"
    templates = (await api.call("GET", "/v1/os-templates")).body
    assert "t0nspur5" in [t["id"] for t in templates["items"]]
    params = {"machineType": "H100x8", "region": "ams1"}
    assert (await api.call("GET", "/v1/machine-availability", params=params)).body == {
        "available": True
    }
    sim.state.set_capacity("paperspace", "ams1", "H100x8", 0)
    assert (await api.call("GET", "/v1/machine-availability", params=params)).body == {
        "available": False
    }
    no_violations(sim)


async def test_machine_flow_with_startup_script(sim: Simulator, api: CloudClient) -> None:
    clock = sim.clock
    assert isinstance(clock, ManualClock)
    script = "#!/bin/bash\nexport GPUCTL_NODE_NAME='gpu-c-1'\n"
    created = await api.call(
        "POST", "/v1/startup-scripts", json_body={"name": "gpu-c-1", "script": script}
    )
    script_id = created.body["id"]
    listed = (await api.call("GET", "/v1/startup-scripts")).body["items"]
    assert [s["id"] for s in listed] == [script_id]

    answer = await api.call(
        "POST", "/v1/machines", json_body={**MACHINE, "startupScriptId": script_id}
    )
    machine = answer.body["data"]
    assert answer.body["event"]["name"] == "create"
    assert (machine["state"], machine["publicIp"], machine["usageRate"]) == (
        "provisioning",
        None,
        47.60,
    )
    assert catalog.gpu_type_of("paperspace", machine["accelerators"][0]["name"]) == "H100-80GB"
    clock.advance(30)
    assert (await api.call("GET", f"/v1/machines/{machine['id']}")).body["state"] == "starting"
    clock.advance(30)
    ready = (await api.call("GET", f"/v1/machines/{machine['id']}")).body
    assert ready["state"] == "ready" and ready["publicIp"]
    assert (await api.call("GET", f"/v1/startup-scripts/{script_id}")).body[
        "assignedMachineIds"
    ] == [machine["id"]]

    deleted = await api.call("DELETE", f"/v1/machines/{machine['id']}")
    assert deleted.body["event"]["name"] == "deactivate"
    assert deleted.body["data"]["state"] == "stopping"
    clock.advance(30)
    gone = await api.call("GET", f"/v1/machines/{machine['id']}")
    assert (gone.status, gone.body["code"]) == (404, "NOT_FOUND")
    assert (await api.call("GET", "/v1/machines")).body == {"items": [], "hasMore": False}

    await api.call("DELETE", f"/v1/startup-scripts/{script_id}")
    assert (await api.call("GET", f"/v1/startup-scripts/{script_id}")).status == 404
    (record,) = sim.instances("paperspace")
    assert record.join_script == script
    no_violations(sim)


async def test_list_filters_and_pages(sim: Simulator, api: CloudClient) -> None:
    sim.state.set_capacity("paperspace", "ny2", "A4000", 3)
    clock = sim.clock
    assert isinstance(clock, ManualClock)
    for _ in range(3):
        made = await api.call("POST", "/v1/machines", json_body={**MACHINE, "machineType": "A4000"})
        assert made.status == 200
        clock.advance(1)
    await api.call("POST", "/v1/machines", json_body={**MACHINE, "name": "other"})
    page = (await api.call("GET", "/v1/machines", params={"limit": "2"})).body
    assert page["hasMore"] and len(page["items"]) == 2
    assert page["items"][0]["name"] == "other"  # newest first
    rest = await api.call("GET", "/v1/machines", params={"limit": "2", "after": page["nextPage"]})
    assert len(rest.body["items"]) == 2 and not rest.body["hasMore"]
    named = await api.call("GET", "/v1/machines", params={"name": "gpu-c-1"})
    assert len(named.body["items"]) == 3
    by_type = await api.call("GET", "/v1/machines", params={"machineType": "H100x8"})
    assert [m["name"] for m in by_type.body["items"]] == ["other"]
    no_violations(sim)


async def test_errors(sim: Simulator, api: CloudClient) -> None:
    wrong = await api.call("GET", "/v1/machines", key="nope")
    assert (wrong.status, wrong.body["code"]) == (401, "UNAUTHORIZED")
    invalid = await api.call("POST", "/v1/machines", json_body={"name": "x"})
    assert (invalid.status, invalid.body["code"]) == (400, "BAD_REQUEST")
    assert invalid.body["details"]["issues"]
    (violation,) = sim.violations
    assert violation.operation == "machines-create" and violation.direction == "request"
    template = await api.call("POST", "/v1/machines", json_body={**MACHINE, "templateId": "x"})
    assert template.status == 404
    script = await api.call("POST", "/v1/machines", json_body={**MACHINE, "startupScriptId": "s"})
    assert script.status == 404
    small = await api.call("POST", "/v1/machines", json_body={**MACHINE, "diskSize": 10})
    assert small.status == 400
    sim.state.set_capacity("paperspace", "ny2", "H100x8", 0)
    full = await api.call("POST", "/v1/machines", json_body=MACHINE)
    assert full.status == 400 and "not available" in full.body["message"]
    assert not sim.instances("paperspace")
    assert len(sim.violations) == 1
    no_violations(sim)
