"""Simulated RunPod: REST v1 pods and the v2 catalog, spec-valid, with RunPod's errors."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from gpuctl.providers import catalog
from gpuctl.sim import ManualClock, SimConfig, Simulator
from tests.unit.test_sim_support import CloudClient, no_violations

H100 = "NVIDIA H100 80GB HBM3"
POD = {
    "name": "gpu-b-1",
    "gpuTypeIds": [H100],
    "gpuCount": 2,
    "cloudType": "COMMUNITY",
    "interruptible": True,
    "imageName": "ghcr.io/gpuctl/node:1",
    "env": {"GPUCTL_NODE_NAME": "gpu-b-1"},
    "dataCenterIds": ["EU-RO-1", "US-GA-1"],
    "dataCenterPriority": "custom",
}


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    config = SimConfig(seed=7, boot_seconds=60, terminate_seconds=30)
    async with Simulator(config, clock=ManualClock()) as simulator:
        yield simulator


@pytest.fixture
async def api(sim: Simulator) -> AsyncIterator[CloudClient]:
    async with aiohttp.ClientSession() as session:
        yield CloudClient(sim, "runpod", session)


async def test_catalog(sim: Simulator, api: CloudClient) -> None:
    plain = (await api.call("GET", "/v2/catalog/gpus")).body["gpus"]
    h100 = next(g for g in plain if g["id"] == H100)
    assert h100["price"] == {"secure": 2.69, "community": 1.99}
    assert h100["maxCount"]["secure"] == 8 and "dataCenters" not in h100
    assert all(catalog.gpu_type_of("runpod", g["id"]) for g in plain)

    sim.state.set_capacity("runpod", "US-GA-1", H100, 8)
    sim.state.set_capacity("runpod", "EU-RO-1", H100, 0)
    params = [("include", "AVAILABILITY"), ("product", "POD"), ("count", "8")]
    gpus = (await api.call("GET", "/v2/catalog/gpus", params=params)).body["gpus"]
    centres = {
        d["id"]: d["availability"] for d in next(g for g in gpus if g["id"] == H100)["dataCenters"]
    }
    assert centres["US-GA-1"] == "LOW" and centres["EU-RO-1"] == "NONE"
    assert centres["US-TX-3"] == "MEDIUM"  # 16 free GPUs: two 8-GPU pods

    params = [("include", "GPU_AVAILABILITY")]
    dcs = (await api.call("GET", "/v2/catalog/datacenters", params=params)).body["dataCenters"]
    assert {d["id"] for d in dcs} >= {"US-GA-1", "EU-RO-1", "CA-MTL-1"}
    assert all(catalog.region_of("runpod", d["id"]) for d in dcs)
    assert dcs[0]["gpuAvailability"]
    no_violations(sim)


async def test_pod_flow(sim: Simulator, api: CloudClient) -> None:
    clock = sim.clock
    assert isinstance(clock, ManualClock)
    created = await api.call("POST", "/v1/pods", json_body=POD)
    pod = created.body
    assert created.status == 201
    assert pod["desiredStatus"] == "RUNNING" and pod["publicIp"] is None
    assert pod["interruptible"] is True
    assert pod["costPerHr"] == pytest.approx(round(1.99 * 0.6, 4) * 2)

    got = (await api.call("GET", f"/v1/pods/{pod['id']}", params={"includeMachine": "true"})).body
    assert got["machine"]["dataCenterId"] == "EU-RO-1"  # custom priority: first listed
    clock.advance(60)
    got = (await api.call("GET", f"/v1/pods/{pod['id']}")).body
    assert got["publicIp"] and got["portMappings"]

    listed = (await api.call("GET", "/v1/pods", params={"name": "gpu-b-1"})).body
    assert [p["id"] for p in listed] == [pod["id"]]
    assert (await api.call("GET", "/v1/pods", params={"desiredStatus": "EXITED"})).body == []
    elsewhere = await api.call("GET", "/v1/pods", params={"dataCenterId": "US-GA-1"})
    assert elsewhere.body == []

    stopped = await api.call("POST", f"/v1/pods/{pod['id']}/stop")
    assert stopped.body["desiredStatus"] == "EXITED"
    started = await api.call("POST", f"/v1/pods/{pod['id']}/start")
    assert started.body["desiredStatus"] == "RUNNING"

    deleted = await api.call("DELETE", f"/v1/pods/{pod['id']}")
    assert deleted.status == 204
    assert (await api.call("GET", f"/v1/pods/{pod['id']}")).body["desiredStatus"] == "TERMINATED"
    clock.advance(30)
    gone = await api.call("GET", f"/v1/pods/{pod['id']}")
    assert (gone.status, gone.body["detail"]) == (404, "pod not found")
    assert (await api.call("GET", "/v1/pods")).body == []
    (record,) = sim.instances("runpod")
    assert record.join_env == {"GPUCTL_NODE_NAME": "gpu-b-1"} and record.spot
    assert sim.state.cloud("runpod").free("EU-RO-1", H100) == 16
    no_violations(sim)


async def test_rate_limit_headers(sim: Simulator, api: CloudClient) -> None:
    first = await api.call("GET", "/v1/pods")
    second = await api.call("GET", "/v2/catalog/gpus")
    assert first.headers["RateLimit-Policy"].startswith('"minute";q=60;w=60')
    assert '"minute";r=59;' in first.headers["RateLimit"]
    assert '"minute";r=58;' in second.headers["RateLimit"]
    unauthorized = await api.call("GET", "/v1/pods", key="wrong")
    assert "RateLimit" not in unauthorized.headers


async def test_rate_limit_enforced() -> None:
    config = SimConfig(enforce_rate_limits=True)
    async with (
        Simulator(config, clock=ManualClock()) as sim,
        aiohttp.ClientSession() as session,
    ):
        api = CloudClient(sim, "runpod", session)
        for _ in range(60):
            assert (await api.call("GET", "/v1/pods")).status == 200
        limited = await api.call("GET", "/v1/pods")
        assert limited.status == 429 and int(limited.headers["Retry-After"]) > 0
        assert limited.body["title"] == "Too Many Requests"


async def test_invalid_requests(sim: Simulator, api: CloudClient) -> None:
    bad = await api.call("POST", "/v1/pods", json_body={"gpuCount": 0, "gpuTypeIds": ["H100"]})
    assert bad.status == 400 and bad.content_type == "application/problem+json"
    assert bad.body["errors"]
    v2 = await api.call("GET", "/v2/catalog/gpus", params={"include": "EVERYTHING"})
    assert v2.status == 422
    assert [v.operation for v in sim.violations] == ["CreatePod", "listGpuTypes"]
    assert all(v.direction == "request" for v in sim.violations)
    needs_product = await api.call("GET", "/v2/catalog/gpus", params={"include": "AVAILABILITY"})
    assert needs_product.status == 400  # a rule, not a schema violation
    assert len(sim.violations) == 2


async def test_auth_and_not_found(sim: Simulator, api: CloudClient) -> None:
    wrong = await api.call("GET", "/v1/pods", key="nope")
    assert (wrong.status, wrong.body["title"]) == (401, "Unauthorized")
    missing = await api.call("DELETE", "/v1/pods/doesnotexist")
    # The v1 spec documents 400 "Invalid Pod ID." (no 404) for DELETE of an unknown pod.
    assert (missing.status, missing.body["detail"]) == (400, "Invalid Pod ID.")
    assert (await api.call("GET", "/v1/pods/doesnotexist")).status == 404
    templates = await api.call("GET", "/v2/templates")
    assert templates.status == 404  # in the v2 spec, not simulated
    no_violations(sim)


async def test_capacity_error(sim: Simulator, api: CloudClient) -> None:
    for centre in ("EU-RO-1", "US-GA-1"):
        sim.state.set_capacity("runpod", centre, H100, 1)
    full = await api.call("POST", "/v1/pods", json_body=POD)
    assert full.status == 400 and "no instances available" in full.body["detail"]
    too_many = await api.call("POST", "/v1/pods", json_body={**POD, "gpuCount": 9})
    assert too_many.status == 400
    assert not sim.instances("runpod")
    no_violations(sim)


async def test_placement_prefers_availability(sim: Simulator, api: CloudClient) -> None:
    sim.state.set_capacity("runpod", "US-GA-1", H100, 40)
    body = {k: v for k, v in POD.items() if k not in ("dataCenterIds", "dataCenterPriority")}
    pod = (await api.call("POST", "/v1/pods", json_body=body)).body
    (record,) = sim.instances("runpod")
    assert record.id == pod["id"] and record.region == "US-GA-1"
    secure = {**body, "interruptible": False, "cloudType": "SECURE", "gpuCount": 1}
    on_demand = (await api.call("POST", "/v1/pods", json_body=secure)).body
    assert on_demand["costPerHr"] == 2.69


async def test_v2_pods_share_state_and_report_v2_statuses(sim: Simulator, api: CloudClient) -> None:
    clock = sim.clock
    assert isinstance(clock, ManualClock)
    pod = (await api.call("POST", "/v1/pods", json_body=POD)).body
    path = f"/v2/pods/{pod['id']}"
    got = (await api.call("GET", path)).body
    assert (got["status"], got["actions"], got["dataCenterId"]) == (
        "PROVISIONING",
        ["stop", "terminate"],
        "EU-RO-1",
    )
    assert got["ssh"]["direct"] is None and got["runtime"] is None
    clock.advance(30)
    assert (await api.call("GET", path)).body["status"] == "STARTING"
    clock.advance(30)
    running = (await api.call("GET", path)).body
    assert running["status"] == "RUNNING" and running["ssh"]["direct"]
    assert running["cost"] == pod["costPerHr"]
    assert [p["id"] for p in (await api.call("GET", "/v2/pods")).body["pods"]] == [pod["id"]]

    start = await api.call("POST", f"{path}/action", json_body={"action": "start"})
    assert start.status == 409
    stopped = await api.call("POST", f"{path}/action", json_body={"action": "stop"})
    assert (stopped.body["status"], stopped.body["cost"]) == ("EXITED", 0.0)
    v1 = (await api.call("GET", f"/v1/pods/{pod['id']}")).body
    assert v1["desiredStatus"] == "EXITED"
    bad = await api.call("POST", f"{path}/action", json_body={"action": "explode"})
    assert bad.status == 422
    assert (await api.call("DELETE", path)).status == 204
    clock.advance(30)
    assert (await api.call("GET", path)).status == 404
    assert [v.operation for v in sim.violations] == ["podAction"]
    no_violations(sim)
