"""The simulator's money-safety knobs: faults that act and then lose the answer, a list
that lags its writes, failed provisioning in Paperspace's machine events, and the
billing reference (`SimState.billed_usd`). Every answer is validated against the cloud's
spec (`CloudClient`) and the simulator records no violation."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from gpuctl.sim import SimConfig, Simulator
from gpuctl.sim.clock import ManualClock
from tests.unit.test_sim_support import CloudClient, no_violations

LAUNCH = {
    "region_name": "us-east-1",
    "instance_type_name": "gpu_1x_a10",
    "ssh_key_names": ["gpuctl"],
    "name": "lost-answer",
}
MACHINE = {
    "name": "m1",
    "machineType": "A4000",
    "templateId": "tkni3aa4",
    "diskSize": 50,
    "region": "ny2",
}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def sim(clock: ManualClock) -> AsyncIterator[Simulator]:
    config = SimConfig(seed=5, boot_seconds=10.0, terminate_seconds=2.0)
    async with Simulator(config, clock=clock) as simulator:
        yield simulator


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(force_close=True)  # a dropped answer stays dropped
    async with aiohttp.ClientSession(connector=connector) as client:
        yield client


async def test_drop_runs_the_operation_and_answers_nothing(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    sim.faults.add("lambda", operation="launchInstance", kind="drop")
    url = sim.endpoint("lambda") + "/api/v1/instance-operations/launch"
    headers = {"Authorization": f"Bearer {sim.api_key('lambda')}"}
    with pytest.raises(aiohttp.ServerDisconnectedError):
        async with session.post(url, json=LAUNCH, headers=headers) as response:
            await response.read()
    assert [i.name for i in sim.instances("lambda")] == ["lost-answer"]  # it did launch
    assert (sim.ledger[-1].status, sim.ledger[-1].fault) == (0, "drop")


async def test_500_after_runs_the_operation_and_answers_an_error(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    api = CloudClient(sim, "runpod", session)
    sim.faults.add("runpod", operation="CreatePod", kind="500-after")
    pod = {
        "name": "p1",
        "imageName": "i",
        "gpuTypeIds": ["NVIDIA RTX A6000"],
        "gpuCount": 1,
        "dataCenterIds": ["US-GA-1"],
    }
    answer = await api.call("POST", "/v1/pods", json_body=pod)
    assert answer.status == 500 and answer.body["title"] == "Internal Server Error"
    assert [i.name for i in sim.instances("runpod")] == ["p1"]
    assert sim.ledger[-1].fault == "500-after"
    no_violations(sim)


@pytest.mark.parametrize(
    ("cloud", "path", "items"),
    [
        ("lambda", "/api/v1/instances", lambda body: body["data"]),
        ("runpod", "/v1/pods", lambda body: body),
        ("runpod", "/v2/pods", lambda body: body["pods"]),
        ("paperspace", "/v1/machines", lambda body: body["items"]),
    ],
)
async def test_lists_lag_their_writes_reads_by_id_do_not(
    sim: Simulator, clock: ManualClock, session: aiohttp.ClientSession, cloud: str, path: str,
    items: object,
) -> None:  # fmt: skip
    made = sim.state.launch(
        cloud, instance_id="i1", name="n1", instance_type=next(iter(
            sim.state.cloud(cloud).catalog.types)), region=next(iter(
            sim.state.cloud(cloud).catalog.regions)), gpu_count=1, vcpus=1, memory_gib=1,
        units=1, spot=False, price_per_hour=1.0,
    )  # fmt: skip
    sim.state.set_list_lag(cloud, 5.0)
    api = CloudClient(sim, cloud, session)
    assert callable(items)
    assert items((await api.call("GET", path)).body) == []
    clock.advance(5.0)
    assert [i["id"] for i in items((await api.call("GET", path)).body)] == [made.id]
    no_violations(sim)


async def test_paperspace_failed_provisioning_shows_in_the_create_event(
    sim: Simulator, clock: ManualClock, session: aiohttp.ClientSession
) -> None:
    api = CloudClient(sim, "paperspace", session)
    sim.state.fail_next_boots("paperspace", error="no hypervisor")
    created = (await api.call("POST", "/v1/machines", json_body=MACHINE)).body
    event, machine = created["event"], created["data"]
    assert (event["name"], event["state"]) == ("create", "new")
    clock.advance(60)
    got = (await api.call("GET", f"/v1/machine-events/{event['id']}")).body
    assert (got["state"], got["error"]) == ("error", "no hypervisor")
    assert (await api.call("GET", f"/v1/machines/{machine['id']}")).body["state"] == "provisioning"
    listed = await api.call("GET", "/v1/machine-events", params={"machineId": machine["id"]})
    assert [e["id"] for e in listed.body["items"]] == [event["id"]]
    ok = (await api.call("POST", "/v1/machines", json_body={**MACHINE, "name": "m2"})).body
    clock.advance(60)
    done = (await api.call("GET", f"/v1/machine-events/{ok['event']['id']}")).body
    assert (done["state"], done["error"]) == ("done", None)
    await api.call("DELETE", f"/v1/machines/{ok['data']['id']}")
    names = await api.call("GET", "/v1/machine-events", params={"machineId": ok["data"]["id"]})
    assert {e["name"] for e in names.body["items"]} == {"create", "deactivate"}
    assert set(sim.state.cloud("paperspace").objects["password-emails"]) == {
        machine["id"],
        ok["data"]["id"],
    }  # neither create said emailPassword: false
    no_violations(sim)


async def test_paperspace_unassign(sim: Simulator, session: aiohttp.ClientSession) -> None:
    api = CloudClient(sim, "paperspace", session)
    script = (
        await api.call(
            "POST", "/v1/startup-scripts", json_body={"name": "s", "script": "#!/bin/bash\n"}
        )
    ).body
    body = {**MACHINE, "startupScriptId": script["id"], "emailPassword": False}
    machine = (await api.call("POST", "/v1/machines", json_body=body)).body["data"]
    assert "password-emails" not in sim.state.cloud("paperspace").objects
    path = f"/v1/startup-scripts/{script['id']}"
    assert (await api.call("GET", path)).body["assignedMachineIds"] == [machine["id"]]
    answer = await api.call("POST", f"{path}/unassign", json_body={"machineId": machine["id"]})
    assert answer.body["assignedMachineIds"] == []
    no_violations(sim)


def test_billing_is_price_times_the_seconds_an_instance_exists(
    sim: Simulator, clock: ManualClock
) -> None:
    made = sim.state.launch(
        "lambda", instance_id="i1", name="n", instance_type="gpu_1x_a10", region="us-east-1",
        gpu_count=1, vcpus=1, memory_gib=1, units=1, spot=False, price_per_hour=36.0,
    )  # fmt: skip
    clock.advance(100)
    assert sim.state.billed_usd("lambda", made.id) == pytest.approx(1.0)
    sim.state.terminate(made)  # terminating bills until it is terminated (2 s later)
    clock.advance(50)
    sim.state.advance()
    assert sim.state.billed_usd("lambda", made.id) == pytest.approx(1.02)
