"""Simulated Crusoe: signed requests only, VMs through operations, capacities; spec-valid."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from gpuctl.providers.crusoe import signing
from gpuctl.sim import ManualClock, SimConfig, Simulator
from tests.unit.test_sim_support import CloudClient, no_violations

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGdwdWN0bCB0ZXN0IGtleQ gpuctl"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    config = SimConfig(seed=7, boot_seconds=60, terminate_seconds=30)
    async with Simulator(config, clock=ManualClock()) as simulator:
        yield simulator


@pytest.fixture
async def api(sim: Simulator) -> AsyncIterator[CloudClient]:
    async with aiohttp.ClientSession() as session:
        yield CloudClient(sim, "crusoe", session)


async def _project(api: CloudClient) -> str:
    projects = (await api.call("GET", "/v1/organizations/projects")).body["items"]
    return str(projects[0]["id"])


def _vm(name: str, vm_type: str = "a100-80gb.1x", **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": vm_type, "location": "us-east1-a", "ssh_public_key": KEY, **extra}


async def test_only_correctly_signed_requests_pass(sim: Simulator, api: CloudClient) -> None:
    key_id, secret = sim.api_key("crusoe").split(":")
    url = sim.endpoint("crusoe") + "/v1/organizations/projects"
    path = "/v1/organizations/projects"
    good = signing.headers(key_id, secret, "GET", path)
    cases = {
        "none": {},
        "bearer key": {"Authorization": f"Bearer {sim.api_key('crusoe')}"},
        "other path signed": signing.headers(key_id, secret, "GET", "/v1/locations"),
        "other method signed": signing.headers(key_id, secret, "POST", path),
        "stale": signing.headers(key_id, secret, "GET", path, stamp="2026-01-01T00:00:00Z"),
        "unknown key id": signing.headers("someone", secret, "GET", path),
        "wrong secret": signing.headers(key_id, "c2VjcmV0", "GET", path),
    }
    for what, headers in cases.items():
        async with api.session.get(url, headers=headers) as response:
            assert response.status == 401, what
            assert await response.json() == {"code": "401", "message": "bad_credential"}, what
    async with api.session.get(url, headers=good) as response:
        assert response.status == 200
    no_violations(sim)


async def test_vm_lifecycle_through_operations(sim: Simulator, api: CloudClient) -> None:
    clock = sim.clock
    assert isinstance(clock, ManualClock)
    project = await _project(api)
    instances = f"/v1/projects/{project}/compute/vms/instances"
    script = "#!/bin/bash\necho join\n"
    created = await api.call("POST", instances, json_body=_vm("c-1", startup_script=script))
    operation = created.body["operation"]
    assert (operation["state"], operation["completed_at"]) == ("IN_PROGRESS", "")
    (vm,) = sim.instances("crusoe")
    assert (vm.name, vm.join_script, vm.price_per_hour) == ("c-1", script, 2.00)

    listed = (await api.call("GET", instances, params={"names": "c-1"})).body
    assert [v["state"] for v in listed["items"]] == ["STATE_DEFINING"]
    assert listed["next_page_token"] == ""
    assert (await api.call("GET", instances, params={"names": "other"})).body["items"] == []

    clock.advance(61)
    op_path = f"{instances}/operations/{operation['operation_id']}"
    done = (await api.call("GET", op_path)).body
    assert done["state"] == "SUCCEEDED"
    assert (done["result"]["id"], done["result"]["state"]) == (vm.id, "STATE_RUNNING")

    deleting = (await api.call("DELETE", f"{instances}/{vm.id}")).body["operation"]
    assert deleting["state"] == "IN_PROGRESS"
    assert (await api.call("GET", f"{instances}/{vm.id}")).body["state"] == "STATE_SHUTDOWN"
    clock.advance(31)
    assert (await api.call("GET", f"{instances}/{vm.id}")).status == 404
    assert (await api.call("DELETE", f"{instances}/{vm.id}")).status == 404
    assert (await api.call("GET", f"{instances}/operations/{deleting['operation_id']}")).body[
        "state"
    ] == "SUCCEEDED"
    assert (await api.call("GET", instances)).body["items"] == []
    no_violations(sim)


async def test_no_capacity_and_failed_provisioning(sim: Simulator, api: CloudClient) -> None:
    project = await _project(api)
    instances = f"/v1/projects/{project}/compute/vms/instances"
    sim.state.set_capacity("crusoe", "us-east1-a", "h100-80gb-sxm-ib.8x", 0)
    capacities = (
        await api.call("GET", "/v1/capacities", params=[("product_name", "h100-80gb-sxm-ib.8x")])
    ).body["items"]
    assert {(c["location"], c["quantity"]) for c in capacities} >= {("us-east1-a", 0)}
    answer = await api.call("POST", instances, json_body=_vm("c-2", "h100-80gb-sxm-ib.8x"))
    failed = answer.body["operation"]
    assert (failed["state"], failed["result"]["code"]) == ("FAILED", "out_of_stock")
    assert sim.instances("crusoe") == []

    sim.state.fail_next_boots("crusoe", 1, "hypervisor error")
    blocked = (await api.call("POST", instances, json_body=_vm("c-3"))).body["operation"]
    assert (blocked["state"], blocked["result"]["message"]) == ("FAILED", "hypervisor error")
    listed = (await api.call("GET", instances)).body["items"]
    assert [(v["name"], v["state"]) for v in listed] == [("c-3", "STATE_BLOCKED")]
    no_violations(sim)


async def test_refusals(sim: Simulator, api: CloudClient) -> None:
    project = await _project(api)
    instances = f"/v1/projects/{project}/compute/vms/instances"
    bad_key = await api.call("POST", instances, json_body=_vm("c-4", ssh_public_key="nope"))
    assert (bad_key.status, bad_key.body["code"]) == (400, "400")
    unknown = await api.call("POST", instances, json_body=_vm("c-5", "a40.1x"))
    assert unknown.status == 400
    missing = {k: v for k, v in _vm("c-6").items() if k != "location"}
    assert (await api.call("POST", instances, json_body=missing)).status == 400
    assert [v.direction for v in sim.violations] == ["request"]  # the missing field
    other = "/v1/projects/00000000-0000-0000-0000-000000000000/compute/vms/instances"
    assert (await api.call("GET", other)).status == 403
    assert sim.instances("crusoe") == []
