"""Interruptions: a preempted spot machine or a vanished instance is replaced; its Node goes."""

from __future__ import annotations

from gpuctl.controllers.resources import GPUNODEREQUESTS
from gpuctl.runtime.client import Client, is_not_found
from gpuctl.runtime.resources import EVENTS, NODES
from gpuctl.sim import Simulator
from tests.e2e.conftest import Env, MakeRequest, wait_for, wait_phase


async def node_gone(api: Client, name: str) -> bool:
    try:
        await api.get(NODES, name)
    except Exception as err:
        if is_not_found(err):
            return True
        raise
    return False


async def replaced(api: Client, name: str, attempt: int) -> dict[str, object]:
    async def ready_again() -> bool:
        status = (await api.get(GPUNODEREQUESTS, name)).get("status") or {}
        return status.get("phase") == "Ready" and status.get("attempt") == attempt

    await wait_for(ready_again, 60, f"{name} Ready at attempt {attempt}")
    return await api.get(GPUNODEREQUESTS, name)


async def test_preempted_spot_machine_is_replaced_and_its_node_removed(
    api: Client, env: Env, make_request: MakeRequest, sim: Simulator
) -> None:
    name = await make_request(
        "preempt",
        {
            "gpu": {"type": "RTX-4090", "count": 2},
            "capacityType": "spot",
            "providers": [env.providers["runpod"]],
        },
    )
    first = (await wait_phase(api, name, "Ready"))["status"]
    sim.state.interrupt("runpod", first["instance"]["id"])
    obj = await replaced(api, name, 2)
    status = obj["status"]
    assert status["interruptions"] == 1
    assert status["instance"]["id"] != first["instance"]["id"]
    assert status["offer"]["capacityType"] == "spot"
    # The lost machine's spot offer is in the capacity cache: the replacement is elsewhere.
    assert status["offer"]["nativeRegion"] != first["offer"]["nativeRegion"]
    await wait_for(lambda: node_gone(api, first["nodeName"]), 30, "old Node deleted")
    assert [f["reason"] for f in status["failedOffers"]] == ["Interrupted"]
    events = await api.list(
        EVENTS, namespace="default", field_selector=f"involvedObject.name={name}"
    )
    assert any(e["reason"] == "Interrupted" and e["type"] == "Warning" for e in events["items"])
    assert len([i for i in sim.instances("runpod") if i.phase.live]) == 1


async def test_vanished_instance_is_handled_as_interrupted(
    api: Client, env: Env, make_request: MakeRequest, sim: Simulator
) -> None:
    name = await make_request(
        "vanish", {"gpu": {"type": "A10-24GB", "count": 1}, "providers": [env.providers["lambda"]]}
    )
    first = (await wait_phase(api, name, "Ready"))["status"]
    # Someone terminates the machine in the cloud console.
    sim.state.terminate(sim.state.instance("lambda", first["instance"]["id"]))
    status = (await replaced(api, name, 2))["status"]
    assert status["interruptions"] == 1
    await wait_for(lambda: node_gone(api, first["nodeName"]), 30, "old Node deleted")
