"""An AMD GPU pod under a pool, on the real cluster: it gets an AMD machine.

A pod asking for `amd.com/gpu: 1` under a pool that may rent any DigitalOcean GPU
Droplet: the cheapest 1-GPU size there is an NVIDIA L40S ($1.57/h), but the pod's
resource is AMD's, so gpuctl buys the MI300X ($1.99/h). The Droplet joins with the node
agent, whose device plugin registers `amd.com/gpu` (the simulator writes the vendor's
resource into the machine's hardware file); the request waits for that resource before
it is Ready, and the kube-scheduler binds the pod there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from gpuctl.controllers.resources import GPUNODEPOOLS, GPUNODEREQUESTS
from gpuctl.dev.controlplane import ControlPlane
from gpuctl.runtime.client import Client
from gpuctl.runtime.resources import NODES, PODS
from gpuctl.sim import Simulator
from tests.e2e.conftest import (
    Env,
    Running,
    delete_and_wait,
    operator_config,
    start_operator,
    wait_for,
)

NS = "default"
AMD = "amd.com/gpu"
TAINT = {"key": AMD, "value": "true", "effect": "NoSchedule"}


@pytest.fixture
async def operator(env: Env, control_plane: ControlPlane) -> AsyncIterator[Running]:
    fast = {"pool_batch_idle": 0.3, "pool_batch_max": 2.0, "pool_resync": 2.0}
    running = await start_operator(operator_config(env, control_plane, **fast))
    yield running
    await running.halt()


def amd_pod(name: str) -> dict[str, Any]:
    container = {"name": "rocm", "image": "registry.example/rocm:1",
                 "resources": {"limits": {AMD: "1"}}}  # fmt: skip
    return {
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "containers": [container],
            "tolerations": [{"key": AMD, "operator": "Exists"}],
            "terminationGracePeriodSeconds": 0,
        },
    }


async def pool_requests(api: Client, pool: str) -> list[dict[str, Any]]:
    found = await api.list(GPUNODEREQUESTS, label_selector=f"gpuctl.io/pool={pool}")
    return list(found["items"])


async def test_an_amd_gpu_pod_gets_an_mi300x_droplet(
    api: Client, env: Env, sim: Simulator, operator: Running
) -> None:
    provider = env.providers["digitalocean"]
    pool = f"amd-{env.suffix}"
    requirement = {"key": "gpuctl.io/provider", "operator": "In", "values": [provider]}
    body = {
        "apiVersion": "gpuctl.io/v1alpha1",
        "kind": "GPUNodePool",
        "metadata": {"name": pool},
        "spec": {"template": {"taints": [TAINT], "requirements": [requirement]}},
    }
    await api.create(GPUNODEPOOLS, body)
    name = f"rocm-{env.suffix}"
    await api.create(PODS, amd_pod(name), namespace=NS)
    try:
        running: dict[str, Any] = {}

        async def pod_running() -> bool:
            running.update(await api.get(PODS, name, namespace=NS))
            return bool(running["status"].get("phase") == "Running")

        # Batch window, launch, boot, a real join and the device plugin: seconds here;
        # the bound is generous for a loaded machine, nothing is asserted on the time.
        await wait_for(pod_running, 90, f"pod {name} Running")
        [request] = await pool_requests(api, pool)
        offer = request["status"]["offer"]
        assert (offer["provider"], offer["gpuType"]) == (provider, "MI300X-192GB")
        assert offer["instanceType"] == "gpu-mi300x1-192gb"
        node = await api.get(NODES, running["spec"]["nodeName"])
        assert node["metadata"]["labels"]["gpuctl.io/request"] == request["metadata"]["name"]
        assert node["status"]["capacity"][AMD] == "1"
        assert "nvidia.com/gpu" not in node["status"]["capacity"]
        [droplet] = [i for i in sim.instances("digitalocean") if i.phase.live]
        assert droplet.instance_type == "gpu-mi300x1-192gb"
    finally:
        await api.delete(PODS, name, namespace=NS)
        await api.delete(GPUNODEPOOLS, pool)
        for request in await pool_requests(api, pool):
            await delete_and_wait(api, request["metadata"]["name"], timeout=90)
    assert [i.phase.live for i in sim.instances("digitalocean")] == [False]
    assert not sim.violations
