"""Simulated Lambda Cloud: spec-valid answers, Lambda's errors and semantics."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import aiohttp
import pytest

from gpuctl.providers import catalog
from gpuctl.sim import ManualClock, SimConfig, Simulator
from tests.unit.test_sim_support import CloudClient, no_violations

LAUNCH = {
    "region_name": "us-east-1",
    "instance_type_name": "gpu_1x_h100_sxm5",
    "ssh_key_names": ["gpuctl"],
    "name": "gpu-a-1",
    "user_data": "#cloud-config\n",
}


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    config = SimConfig(seed=7, boot_seconds=60, terminate_seconds=30)
    async with Simulator(config, clock=ManualClock()) as simulator:
        yield simulator


@pytest.fixture
async def api(sim: Simulator) -> AsyncIterator[CloudClient]:
    async with aiohttp.ClientSession() as session:
        yield CloudClient(sim, "lambda", session)


async def test_normal_flow(sim: Simulator, api: CloudClient) -> None:
    clock = sim.clock
    assert isinstance(clock, ManualClock)
    types = (await api.call("GET", "/api/v1/instance-types")).body["data"]
    h100 = types["gpu_1x_h100_sxm5"]
    assert h100["instance_type"]["price_cents_per_hour"] == 329
    assert catalog.gpu_type_of("lambda", h100["instance_type"]["gpu_description"]) == "H100-80GB"
    assert {"name": "us-east-1", "description": "Virginia, USA"} in h100[
        "regions_with_capacity_available"
    ]
    regions = (await api.call("GET", "/api/v1/regions")).body["data"]
    assert "us-east-1" in [r["name"] for r in regions]
    keys = (await api.call("GET", "/api/v1/ssh-keys")).body["data"]
    assert [k["name"] for k in keys] == ["gpuctl"]

    launched = await api.call("POST", "/api/v1/instance-operations/launch", json_body=LAUNCH)
    (instance_id,) = launched.body["data"]["instance_ids"]
    got = (await api.call("GET", f"/api/v1/instances/{instance_id}")).body["data"]
    assert (got["status"], got["name"], "ip" in got) == ("booting", "gpu-a-1", False)

    clock.advance(60)
    got = (await api.call("GET", f"/api/v1/instances/{instance_id}")).body["data"]
    assert got["status"] == "active" and got["ip"]
    listed = (await api.call("GET", "/api/v1/instances")).body["data"]
    assert [i["id"] for i in listed] == [instance_id]

    done = await api.call(
        "POST", "/api/v1/instance-operations/terminate", json_body={"instance_ids": [instance_id]}
    )
    assert done.body["data"]["terminated_instances"][0]["status"] == "terminating"
    clock.advance(30)
    assert (await api.call("GET", "/api/v1/instances")).body["data"] == []
    got = (await api.call("GET", f"/api/v1/instances/{instance_id}")).body["data"]
    assert got["status"] == "terminated"
    (record,) = sim.instances("lambda")
    assert (record.state, record.join_script) == ("terminated", "#cloud-config\n")
    assert record.terminated_at == clock.now()
    no_violations(sim)
    assert [e.operation for e in sim.ledger][:4] == [
        "listInstanceTypes",
        "listRegions",
        "listSSHKeys",
        "launchInstance",
    ]


async def test_invalid_request_gets_lambdas_error_and_is_recorded(
    sim: Simulator, api: CloudClient
) -> None:
    bad = {"region_name": 1, "ssh_key_names": ["gpuctl"]}
    answer = await api.call("POST", "/api/v1/instance-operations/launch", json_body=bad)
    assert answer.status == 400
    assert answer.body["error"]["code"] == "global/invalid-parameters"
    (violation,) = sim.violations
    assert (violation.direction, violation.operation) == ("request", "launchInstance")
    assert "instance_type_name" in violation.message
    assert sim.ledger[-1].violation == violation.message
    assert not sim.instances("lambda")


async def test_launch_rules_beyond_the_schema(sim: Simulator, api: CloudClient) -> None:
    path = "/api/v1/instance-operations/launch"
    two_keys = await api.call("POST", path, json_body={**LAUNCH, "ssh_key_names": ["a", "b"]})
    assert two_keys.body["error"]["code"] == "global/invalid-parameters"
    unknown_key = await api.call("POST", path, json_body={**LAUNCH, "ssh_key_names": ["nope"]})
    assert (unknown_key.status, unknown_key.body["error"]["code"]) == (
        404,
        "global/object-does-not-exist",
    )
    big = await api.call("POST", path, json_body={**LAUNCH, "user_data": "x" * (1024 * 1024 + 1)})
    assert big.status == 400
    region = await api.call("POST", path, json_body={**LAUNCH, "region_name": "mars-1"})
    assert region.status == 400
    assert not sim.violations  # all schema-valid requests
    assert not sim.instances("lambda")


async def test_duplicate_names_are_allowed(sim: Simulator, api: CloudClient) -> None:
    path = "/api/v1/instance-operations/launch"
    first = await api.call("POST", path, json_body=LAUNCH)
    second = await api.call("POST", path, json_body=LAUNCH)
    assert first.body != second.body
    assert [i.name for i in sim.instances("lambda")] == ["gpu-a-1", "gpu-a-1"]


async def test_capacity_error(sim: Simulator, api: CloudClient) -> None:
    sim.state.set_capacity("lambda", "us-east-1", "gpu_1x_h100_sxm5", 1)
    path = "/api/v1/instance-operations/launch"
    await api.call("POST", path, json_body=LAUNCH)
    full = await api.call("POST", path, json_body=LAUNCH)
    assert (full.status, full.body["error"]["code"]) == (
        400,
        "instance-operations/launch/insufficient-capacity",
    )
    types = (await api.call("GET", "/api/v1/instance-types")).body["data"]
    regions = types["gpu_1x_h100_sxm5"]["regions_with_capacity_available"]
    assert "us-east-1" not in [r["name"] for r in regions]
    no_violations(sim)


async def test_auth(sim: Simulator, api: CloudClient) -> None:
    wrong = await api.call("GET", "/api/v1/instances", key="not-the-key")
    assert (wrong.status, wrong.body["error"]["code"]) == (401, "global/invalid-api-key")
    missing = await api.call("GET", "/api/v1/instances", key="")
    assert missing.status == 401
    basic = base64.b64encode(f"{sim.api_key('lambda')}:".encode()).decode()
    url = sim.endpoint("lambda") + "/api/v1/instances"
    async with api.session.get(url, headers={"Authorization": f"Basic {basic}"}) as response:
        assert response.status == 200
    assert not sim.violations


async def test_unknown_instances_and_paths(sim: Simulator, api: CloudClient) -> None:
    missing = await api.call("GET", "/api/v1/instances/0123")
    assert (missing.status, missing.body["error"]["code"]) == (404, "global/object-does-not-exist")
    term = await api.call(
        "POST", "/api/v1/instance-operations/terminate", json_body={"instance_ids": ["0123"]}
    )
    assert term.status == 404
    not_simulated = await api.call("GET", "/api/v1/images")
    assert not_simulated.status == 404
    assert not sim.violations  # in the spec, just not simulated
    unknown = await api.call("GET", "/api/v1/bogus")
    assert unknown.status == 404
    (violation,) = sim.violations
    assert violation.operation is None and "not in the spec" in violation.message
