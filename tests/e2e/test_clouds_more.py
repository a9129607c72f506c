"""The newer clouds end to end: a request becomes a Ready Node and goes back to nothing on
each, and one request fails over across all six clouds.

The machines are the simulated clouds' (gpuctl.sim): each runs the join data gpuctl gave
it as its cloud does (cloud-init user data on Hyperstack and DigitalOcean, Crusoe's
startup script), a real kubeadm join (gpuctl-node-agent), so Ready here means a real
kubelet registered with the API server on a machine of that cloud.
"""

from __future__ import annotations

import pytest

from gpuctl.controllers.resources import GPUNODEREQUESTS
from gpuctl.runtime.client import Client
from gpuctl.runtime.resources import NODES
from gpuctl.sim import Simulator
from tests.e2e.conftest import CLOUDS, Env, MakeRequest, delete_and_wait, wait_phase
from tests.e2e.test_failover import providers_ready

# cloud -> (request, the instance type it must land on, how its join data starts)
READY = {
    "hyperstack": ({"gpu": {"type": "A100-80GB", "count": 1}}, "n3-A100x1", "#cloud-config"),
    "digitalocean": (
        {"gpu": {"type": "L40S-48GB", "count": 1}},
        "gpu-l40sx1-48gb",
        "#cloud-config",
    ),
    # Crusoe runs a startup script (a shell script), not cloud-init user data.
    "crusoe": ({"gpu": {"type": "A100-80GB", "count": 1}}, "a100-80gb.1x", "#!/bin/bash"),
}
# Where each cloud sells 8x H100 in us-east in the default simulated catalogue, by price:
# Hyperstack $15.20, RunPod $21.52, Lambda and DigitalOcean $23.92, Crusoe $31.20,
# Paperspace $47.60.
H100X8_US_EAST = {
    "hyperstack": [("US-1", "n3-H100x8")],
    "runpod": [("US-GA-1", "NVIDIA H100 80GB HBM3")],
    "lambda": [("us-east-1", "gpu_8x_h100_sxm5")],
    "digitalocean": [("nyc2", "gpu-h100x8-640gb"), ("nyc3", "gpu-h100x8-640gb")],
    "crusoe": [("us-east1-a", "h100-80gb-sxm-ib.8x")],
}


@pytest.mark.parametrize("cloud", sorted(READY))
async def test_ready_and_back_to_nothing(
    api: Client, sim: Simulator, env: Env, make_request: MakeRequest, cloud: str
) -> None:
    spec, instance_type, join_format = READY[cloud]
    name = await make_request(cloud, {**spec, "providers": [env.providers[cloud]]})
    status = (await wait_phase(api, name, "Ready"))["status"]
    assert status["offer"]["provider"] == env.providers[cloud]
    assert status["offer"]["instanceType"] == instance_type
    [machine] = sim.instances(cloud)
    assert machine.id == status["instance"]["id"]
    assert machine.join_script.startswith(join_format)  # the join data it ran
    node = await api.get(NODES, status["nodeName"])
    assert node["metadata"]["labels"]["gpuctl.io/request"] == name
    assert node["status"]["capacity"]["nvidia.com/gpu"] == "1"
    assert node["spec"]["providerID"].endswith("/" + machine.id)

    await delete_and_wait(api, name)
    assert [i.phase.live for i in sim.instances(cloud)] == [False]
    assert sim.state.billed_usd(cloud, machine.id) > 0
    nodes = await api.list(NODES, label_selector=f"gpuctl.io/request={name}")
    assert nodes["items"] == []
    assert not sim.violations


async def test_failover_across_all_six_clouds(
    api: Client, sim: Simulator, env: Env, make_request: MakeRequest
) -> None:
    assert set(CLOUDS) >= {*H100X8_US_EAST, "paperspace"}
    await providers_ready(api, env)
    # The catalogs were read while there was capacity; now it is gone everywhere but on
    # Paperspace, the dearest: each cheaper launch fails with that cloud's capacity error.
    for cloud, offers in H100X8_US_EAST.items():
        for region, instance_type in offers:
            sim.state.set_capacity(cloud, region, instance_type, 0)
    name = await make_request(
        "failover",
        {
            "gpu": {"type": "H100-80GB", "count": 8},
            "capacityType": "on-demand",
            "maxPricePerHour": "50",
            "regions": ["us-east"],
            "providers": [env.providers[c] for c in CLOUDS],
        },
    )
    status = (await wait_phase(api, name, "Ready", timeout=120))["status"]
    assert status["offer"]["provider"] == env.providers["paperspace"]
    failed = [(f["provider"], f["reason"]) for f in status["failedOffers"]]
    by_cloud = {cloud: provider for cloud, provider in env.providers.items()}
    # Clouds whose cached catalog still showed the offer failed over with a capacity
    # error (RunPod re-reads availability per GPU count and skips it instead).
    for cloud in ("hyperstack", "lambda", "digitalocean"):
        assert (by_cloud[cloud], "CapacityError") in failed, failed
    assert {p for p, _ in failed} <= {by_cloud[c] for c in H100X8_US_EAST}
    assert status["attempt"] == len(failed) + 1
    for cloud in H100X8_US_EAST:
        assert sim.instances(cloud) == [], cloud  # no failed launch left a machine
    assert len(sim.instances("paperspace")) == 1
    request = await api.get(GPUNODEREQUESTS, name)
    assert request["status"]["phase"] == "Ready"
    assert not sim.violations
