"""Pool provisioning on the real cluster: pending GPU pods make the cheapest machines appear.

Real kube-apiserver, kube-scheduler (it marks pods Unschedulable and binds them once the
machines join) and kube-controller-manager (Deployments, the garbage collector that
deletes a deleted pool's requests); simulated clouds whose machines join with the node
agent; the operator with a short batch window. What is checked is what the cluster and
the clouds hold: the pool's GPUNodeRequests, the simulators' instances, the pods' Nodes.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest

from gpuctl.controllers import naming
from gpuctl.controllers.pool.disruption.settings import DisruptionSettings
from gpuctl.controllers.resources import GPUNODEPOOLS, GPUNODEREQUESTS
from gpuctl.dev.controlplane import ControlPlane
from gpuctl.runtime.client import Client, is_not_found
from gpuctl.runtime.resources import EVENTS, NODES, PODS, Resource
from gpuctl.sim import Simulator
from tests.e2e.conftest import Env, Running, operator_config, start_operator, wait_for
from tests.wheel import Installed, run_args, start_gpuctl

DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment", namespaced=True)
NS = "default"
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}
FAST = {"pool_batch_idle": 0.3, "pool_batch_max": 2.0, "pool_resync": 2.0}


@pytest.fixture
async def operator(env: Env, control_plane: ControlPlane) -> AsyncIterator[Running]:
    # Drains (the pool's machines are drained before they go) poll quickly too.
    quick = DisruptionSettings(poll=0.3)
    running = await start_operator(operator_config(env, control_plane, disruption=quick, **FAST))
    yield running
    await running.halt()


def requirement(key: str, *values: str) -> dict[str, Any]:
    return {"key": key, "operator": "In", "values": list(values)}


@attrs.define
class Cluster:
    """The test's pools and Deployments; cleanup deletes them and waits for the machines."""

    api: Client
    env: Env
    pools: list[str] = attrs.field(factory=list)
    deployments: list[str] = attrs.field(factory=list)

    async def pool(self, name: str, *requirements: dict[str, Any], **spec: Any) -> str:
        full = f"{name}-{self.env.suffix}"
        template = {"taints": [GPU_TAINT], "requirements": list(requirements)}
        body = {
            "apiVersion": "gpuctl.io/v1alpha1",
            "kind": "GPUNodePool",
            "metadata": {"name": full},
            "spec": {"template": template, **spec},
        }
        await self.api.create(GPUNODEPOOLS, body)
        self.pools.append(full)
        return full

    async def deployment(self, name: str, replicas: int, gpus: int, **pod: Any) -> str:
        full = f"{name}-{self.env.suffix}"
        labels = {"app": full}
        container = {
            "name": "train",
            "image": "registry.example/train:1",
            "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
        }
        spec = {
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
            "terminationGracePeriodSeconds": 0,
            "containers": [container],
            **pod,
        }
        body = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": full, "namespace": NS},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": spec},
            },
        }
        await self.api.create(DEPLOYMENTS, body, namespace=NS)
        self.deployments.append(full)
        return full

    async def pods(self, deployment: str) -> list[dict[str, Any]]:
        found = await self.api.list(PODS, namespace=NS, label_selector=f"app={deployment}")
        return list(found["items"])

    async def requests(self, pool: str) -> list[dict[str, Any]]:
        found = await self.api.list(GPUNODEREQUESTS, label_selector=f"gpuctl.io/pool={pool}")
        return list(found["items"])

    async def running(self, deployment: str) -> list[dict[str, Any]]:
        return [p for p in await self.pods(deployment) if p["status"].get("phase") == "Running"]

    async def cleanup(self) -> None:
        for name in self.deployments:
            await _quietly(self.api.delete(DEPLOYMENTS, name, namespace=NS))
        for name in self.pools:
            await _quietly(self.api.delete(GPUNODEPOOLS, name))

        async def no_requests() -> bool:
            for pool in self.pools:
                if await self.requests(pool):
                    return False
            return True

        # The garbage collector deletes the pool's requests; each tears its machine down.
        await wait_for(no_requests, 90, "the pools' GPUNodeRequests deleted with the pools")


async def _quietly(call: Any) -> None:
    try:
        await call
    except Exception as err:
        if not is_not_found(err):
            raise


@pytest.fixture
async def cluster(api: Client, env: Env) -> AsyncIterator[Cluster]:
    made = Cluster(api, env)
    yield made
    await made.cleanup()


def spend(requests: list[dict[str, Any]]) -> tuple[int, Decimal]:
    """GPUs and USD/h of a pool's requests, as its limits count them."""
    gpus = sum(int(r["spec"]["gpu"]["count"]) for r in requests)
    price = sum(
        (Decimal((r.get("status") or {}).get("offer", {}).get("pricePerHour")
                 or r["spec"]["maxPricePerHour"]) for r in requests),
        Decimal(0),
    )  # fmt: skip
    return gpus, price


def machines_per_request(sim: Simulator, env: Env, requests: list[dict[str, Any]]) -> list[int]:
    """For each request, its live machines at the clouds (exactly one: none bought twice).

    Machines of requests already deleted (a pool's disruption, a request that could not
    launch) may still be terminating: they are not counted against anyone."""
    live = [
        i
        for cloud in ("lambda", "runpod", "paperspace")
        for i in sim.instances(cloud)
        if i.phase.live
    ]
    prefixes = [
        naming.prefix(env.cluster) + naming.uid_part(r["metadata"]["uid"]) + "-" for r in requests
    ]
    return [sum(1 for i in live if i.name.startswith(p)) for p in prefixes]


def capacity_affinity(capacity: str) -> dict[str, Any]:
    term = {"matchExpressions": [requirement("gpuctl.io/capacity-type", capacity)]}
    required = {"nodeSelectorTerms": [term]}
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}}


async def test_a_deployment_gets_the_cheapest_machines_and_runs_on_them(
    api: Client, env: Env, sim: Simulator, operator: Running, cluster: Cluster
) -> None:
    # A100-80GB from Lambda (8 GPUs at $14.32/h) or RunPod (per GPU: $1.49/h on demand,
    # $0.714/h spot). The Deployment's three 2-GPU pods require on-demand: $8.94/h on
    # RunPod however they are packed, though spot is cheaper; a 1-GPU pod asking for spot
    # gets spot. (Without its affinity the scheduler could place it on the on-demand
    # machine, and the third 2-GPU pod would rightly need another one.)
    pool = await cluster.pool(
        "a100",
        requirement("gpuctl.io/gpu-type", "A100-80GB"),
        requirement("gpuctl.io/provider", env.providers["lambda"], env.providers["runpod"]),
        requirement("gpuctl.io/capacity-type", "spot", "on-demand"),
    )
    deployment = await cluster.deployment(
        "train", replicas=3, gpus=2, affinity=capacity_affinity("on-demand")
    )
    cheap = await cluster.deployment(
        "cheap", replicas=1, gpus=1, affinity=capacity_affinity("spot")
    )

    async def all_running() -> bool:
        return len(await cluster.running(deployment)) == 3 and bool(await cluster.running(cheap))

    await wait_for(all_running, 120, "4 pods Running on the pool's machines")
    requests = await cluster.requests(pool)
    by_capacity: dict[str, list[dict[str, Any]]] = {}
    for request in requests:
        by_capacity.setdefault(request["status"]["offer"]["capacityType"], []).append(request)
    gpus, price = spend(by_capacity["on-demand"])
    assert (gpus, price) == (6, Decimal("8.94")), [r["status"]["offer"] for r in requests]
    assert spend(by_capacity["spot"]) == (1, Decimal("0.714"))
    assert {r["status"]["offer"]["provider"] for r in requests} == {env.providers["runpod"]}
    for request in requests:
        owner = request["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["controller"]) == ("GPUNodePool", pool, True)
    # Each pod runs on a Node of the pool; the affinity kept the Deployment off spot.
    for name, capacity in ((deployment, "on-demand"), (cheap, "spot")):
        for pod in await cluster.running(name):
            labels = (await api.get(NODES, pod["spec"]["nodeName"]))["metadata"]["labels"]
            assert labels["gpuctl.io/pool"] == pool
            assert (labels["gpuctl.io/gpu-type"], labels["gpuctl.io/capacity-type"]) == (
                "A100-80GB",
                capacity,
            )
    # One machine per request: none launched twice for the same pods.
    assert machines_per_request(sim, env, requests) == [1] * len(requests)
    events = await api.list(EVENTS, namespace=NS, field_selector="reason=Nominated")
    assert any("gpunoderequest/" in e["message"] for e in events["items"])

    async def status_counts() -> bool:
        status = (await api.get(GPUNODEPOOLS, pool)).get("status") or {}
        return status.get("gpusInUse") == 7 and status.get("machines") == len(requests)

    await wait_for(status_counts, 30, "the pool's status counting 7 GPUs in use")
    status = (await api.get(GPUNODEPOOLS, pool))["status"]
    assert status["pricePerHour"] == "9.654"
    assert status["lastScaleDecision"]["action"] == "ScaleUp"


async def watch_spend(
    cluster: Cluster, pool: str, peak: list[tuple[int, Decimal]], stop: asyncio.Event
) -> None:
    """Record the pool's GPUs and USD/h every 0.1 s: the limits must hold at every moment."""
    while not stop.is_set():
        peak.append(spend(await cluster.requests(pool)))
        await asyncio.sleep(0.1)


async def test_a_burst_of_50_pods_stays_within_the_gpu_limit(
    api: Client, env: Env, sim: Simulator, operator: Running, cluster: Cluster
) -> None:
    pool = await cluster.pool(
        "burst",
        requirement("gpuctl.io/gpu-type", "A100-80GB"),
        requirement("gpuctl.io/provider", env.providers["runpod"]),
        limits={"gpus": 4, "pricePerHour": "100"},
    )
    seen: list[tuple[int, Decimal]] = []
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch_spend(cluster, pool, seen, stop))
    try:
        deployment = await cluster.deployment("burst", replicas=50, gpus=1)

        async def four_running() -> bool:
            return len(await cluster.running(deployment)) == 4

        await wait_for(four_running, 120, "4 pods Running (the GPU limit)")

        async def limit_reached() -> bool:
            status = (await api.get(GPUNODEPOOLS, pool)).get("status") or {}
            conditions = {c["type"]: c for c in status.get("conditions") or []}
            return conditions.get("LimitReached", {}).get("status") == "True"

        await wait_for(limit_reached, 30, "LimitReached")
        await asyncio.sleep(3)  # a few more rounds (resync 2 s): still nothing bought
    finally:
        stop.set()
        await watcher
    assert max(g for g, _ in seen) == 4
    assert len(await cluster.running(deployment)) == 4
    assert spend(await cluster.requests(pool))[0] == 4
    requests = await cluster.requests(pool)
    assert machines_per_request(sim, env, requests) == [1] * len(requests)
    events = await api.list(EVENTS, namespace=NS, field_selector="reason=FailedScheduling")
    ours = [e for e in events["items"] if "gpuctl could not provision" in e["message"]]
    assert any(f"pool {pool}: limit reached (gpus 5 > 4)" in e["message"] for e in ours)


async def test_sigkill_during_a_burst_never_overshoots_the_dollar_limit(
    api: Client,
    env: Env,
    sim: Simulator,
    control_plane: ControlPlane,
    cluster: Cluster,
    tmp_path: Path,
    gpuctl_wheel: Installed,
) -> None:
    # 8-GPU pods, one machine each (RunPod A100-80GB x8, $11.92/h); $40/h allows three.
    pool = await cluster.pool(
        "money",
        requirement("gpuctl.io/gpu-type", "A100-80GB"),
        requirement("gpuctl.io/provider", env.providers["runpod"]),
        limits={"pricePerHour": "40"},
    )
    config = operator_config(env, control_plane, **FAST)
    crash = {"GPUCTL_CRASH_AT": "pool-after-create"}
    first = start_gpuctl(gpuctl_wheel, run_args(config), tmp_path / "first.log", crash).process
    seen: list[tuple[int, Decimal]] = []
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch_spend(cluster, pool, seen, stop))
    second: subprocess.Popen[bytes] | None = None
    try:
        deployment = await cluster.deployment("money", replicas=50, gpus=8)
        # The first operator dies (SIGKILL) right after its first create of the burst.
        code = await asyncio.to_thread(first.wait, 90)
        assert code == -signal.SIGKILL
        assert len(await cluster.requests(pool)) == 1
        second = start_gpuctl(gpuctl_wheel, run_args(config), tmp_path / "second.log").process

        async def three_running() -> bool:
            return len(await cluster.running(deployment)) == 3

        await wait_for(three_running, 150, "3 pods Running (the $40/h limit)")
        await asyncio.sleep(3)
    finally:
        stop.set()
        await watcher
        try:
            await cluster.cleanup()  # with an operator still running to tear down
            cluster.pools.clear()
            cluster.deployments.clear()
        finally:
            for proc in (first, second):
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    await asyncio.to_thread(proc.wait, 40)
    assert max(p for _, p in seen) <= Decimal(40)
    assert max(g for g, _ in seen) == 24
