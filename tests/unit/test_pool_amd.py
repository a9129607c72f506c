"""AMD GPUs in pools: a pod asking for amd.com/gpu gets an AMD machine, a pod asking for
nvidia.com/gpu never does, and each machine is judged by its vendor's resource."""

from __future__ import annotations

from typing import Any

import yaml

from gpuctl.cli import plan_pods
from gpuctl.cli.config import Source
from gpuctl.controllers.pool import binpack, inflight, offers, pods
from gpuctl.controllers.pool.disruption import fit
from gpuctl.controllers.pool.disruption.machines import Machine
from gpuctl.controllers.pool.requirements import wrong_gpu
from tests.unit.test_cli_offers import FakeDriver, FakeDrivers
from tests.unit.test_cli_offers import offer as cli_offer
from tests.unit.test_pool_disruption import node, request
from tests.unit.test_pool_provisioning import offer, pod, pool, view

Obj = dict[str, Any]
AMD = "amd.com/gpu"
CATALOG = [offer("MI300X-192GB", 1, "1.99"), offer("H100-80GB", 1, "1.50")]


def amd_pod(name: str, gpus: int, **spec: Any) -> Obj:
    p = pod(name, gpus, **spec)
    p["spec"]["containers"][0]["resources"] = {"limits": {AMD: str(gpus)}}
    return p


def test_pods_count_amd_gpus_and_say_which_resource() -> None:
    a = amd_pod("a", 2)
    assert pods.provisionable(a) and pods.gpus(a) == 2
    assert pods.gpu_resources(a) == {AMD}
    assert pods.gpu_resources(pod("n", 1)) == {"nvidia.com/gpu"}
    assert pods.gpu_resources(pod("cpu", 0)) == set()


def test_each_pod_gets_a_machine_of_its_vendor_not_the_cheapest() -> None:
    result = binpack.plan([amd_pod("a", 1), pod("n", 1)], [view(pool(), CATALOG)], [])
    chosen = {m.pods[0]["metadata"]["name"]: m.choice.offer.gpu_type for m in result.new}
    assert chosen == {"a": "MI300X-192GB", "n": "H100-80GB"}
    assert not result.unserved


def test_no_machine_of_the_vendor_is_an_event_naming_why() -> None:
    result = binpack.plan([amd_pod("a", 1)], [view(pool(), CATALOG[1:])], [])
    assert result.new == []
    assert result.unserved == {
        "ml/a": "pool gpu: requests amd.com/gpu; H100-80GB machines advertise nvidia.com/gpu"
    }
    both = amd_pod("b", 1)
    both["spec"]["containers"].append(
        {"name": "d", "resources": {"limits": {"nvidia.com/gpu": "1"}}}
    )
    assert "a machine has one vendor's GPUs" in str(wrong_gpu(both, {}))


def test_a_launching_machine_takes_only_pods_of_its_vendor() -> None:
    labels = offers.machine_labels(pool(), CATALOG[0])
    launching = [binpack.Existing("gpu-amd", "gpu", labels, [], 8)]
    result = binpack.plan([pod("n", 1), amd_pod("a", 1)], [view(pool(), CATALOG)], launching)
    assert result.onto_existing == {"ml/a": "gpu-amd"}
    assert [m.choice.offer.gpu_type for m in result.new] == ["H100-80GB"]


def test_a_joined_node_without_gpuctl_labels_yet_is_judged_by_its_request() -> None:
    req = {
        "metadata": {"name": "r", "labels": {"gpuctl.io/pool": "gpu"}},
        "spec": {"gpu": {"type": "MI300X-192GB", "count": 1}},
        "status": {},
    }
    joined = {"metadata": {"name": "n1", "labels": {"gpuctl.io/pool": "gpu"}}, "spec": {}}
    [found] = inflight.existing([req], lambda _: joined, lambda _: [])
    assert wrong_gpu(amd_pod("a", 1), found.labels) is None
    assert wrong_gpu(pod("n", 1), found.labels) is not None


def amd_node(name: str, gpus: int) -> Obj:
    found = node(name, labels={"gpuctl.io/gpu-type": "MI300X-192GB"})
    found["status"]["allocatable"] = {AMD: str(gpus), "cpu": "32", "memory": "200Gi", "pods": "9"}
    return found


def test_disruption_fits_pods_only_where_their_resource_is() -> None:
    a = amd_pod("a", 1)
    a["spec"]["containers"][0]["resources"]["requests"] = {"cpu": "1"}
    rooms = [fit.Room.of(node("n-nvidia"), []), fit.Room.of(amd_node("n-amd", 1), [])]
    assert fit.place([a, pod("n", 1)], rooms) == []
    assert rooms[1].free[AMD] == 0 and rooms[0].free["nvidia.com/gpu"] == 7
    assert fit.place([amd_pod("b", 1)], rooms)  # no AMD GPU left anywhere


def test_an_amd_machine_is_initialized_once_it_advertises_amd_gpus() -> None:
    obj = request("m")
    obj["status"]["offer"].update(gpuType="MI300X-192GB", gpuCount=1)
    assert Machine(obj=obj, node=amd_node("n-m", 1), pods=()).initialized
    assert not Machine(obj=obj, node=amd_node("n-m", 0), pods=()).initialized
    assert not Machine(obj=obj, node=node("n-m", gpus=8), pods=()).initialized


AMD_DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: rocm, namespace: ml}
spec:
  replicas: 1
  template:
    spec:
      containers: [{name: t, resources: {limits: {amd.com/gpu: 1}}}]
---
apiVersion: gpuctl.io/v1alpha1
kind: GPUNodePool
metadata: {name: gpu}
spec: {template: {}}
"""


async def test_gpuctl_plan_answers_an_amd_pod_with_an_amd_offer() -> None:
    cheap = cli_offer("do", "1.57", gpu_type="L40S-48GB", gpu_count=1)
    amd = cli_offer("do", "1.99", gpu_type="MI300X-192GB", gpu_count=1)
    source = Source(FakeDrivers({"do": FakeDriver("do", [cheap, amd])}), None)
    documents = list(yaml.safe_load_all(AMD_DEPLOYMENT))
    pending = plan_pods.read_pods(documents)
    result = await plan_pods.plan_pods(
        source, pending, plan_pods.read_pools(documents), lambda _: False
    )
    assert [m.choice.offer.gpu_type for m in result.new] == ["MI300X-192GB"]
    assert not result.unserved
