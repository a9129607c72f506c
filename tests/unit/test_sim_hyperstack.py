"""Simulated Hyperstack: environments, key pairs, flavors, stock, pricebook, VMs; on spec."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from gpuctl.sim import JoinStatus, ManualClock, SimConfig, Simulator
from gpuctl.sim.machines import joindata
from gpuctl.sim.machines.joindata import NotRun
from tests.unit.test_sim_joindata import HARDWARE, boot_plan, kubeadm_user_data
from tests.unit.test_sim_joindata import instance as joindata_instance
from tests.unit.test_sim_support import CloudClient, no_violations

VM = {
    "name": "gpu-c-1",
    "environment_name": "gpuctl-canada-1",
    "flavor_name": "n3-H100x8",
    "key_name": "gpuctl",
    "count": 1,
    "user_data": "#cloud-config\nruncmd: [[true]]\n",
    "assign_floating_ip": True,
    "security_rules": [
        {
            "direction": "ingress",
            "ethertype": "IPv4",
            "protocol": "tcp",
            "remote_ip_prefix": "0.0.0.0/0",
            "port_range_min": 10250,
            "port_range_max": 10250,
        }
    ],
}


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    config = SimConfig(seed=7, boot_seconds=60, terminate_seconds=30)
    async with Simulator(config, clock=ManualClock()) as simulator:
        yield simulator


@pytest.fixture
async def api(sim: Simulator) -> AsyncIterator[CloudClient]:
    async with aiohttp.ClientSession() as session:
        yield CloudClient(sim, "hyperstack", session)


async def environment(api: CloudClient) -> None:
    body = {"name": "gpuctl-canada-1", "region": "CANADA-1"}
    assert (await api.call("POST", "/v1/core/environments", json_body=body)).status == 200
    again = await api.call("POST", "/v1/core/environments", json_body=body)
    assert again.status == 409 and again.body["status"] is False
    key = {
        "name": "gpuctl",
        "environment_name": "gpuctl-canada-1",
        "public_key": "ssh-ed25519 AAAA x",
    }
    assert (await api.call("POST", "/v1/core/keypairs", json_body=key)).status == 200


async def test_auth_and_catalogue(sim: Simulator, api: CloudClient) -> None:
    assert (await api.call("GET", "/v1/core/flavors", key="wrong")).status == 401
    flavors = (await api.call("GET", "/v1/core/flavors", params={"region": "CANADA-1"})).body
    groups = {(g["gpu"], g["region_name"]): g["flavors"] for g in flavors["data"]}
    h100 = {f["name"]: f for f in groups[("H100-80G-PCIe", "CANADA-1")]}
    assert h100["n3-H100x8"]["stock_available"] and h100["n3-H100x8"]["gpu_count"] == 8
    prices = {p["name"]: p["value"] for p in (await api.call("GET", "/v1/pricebook")).body}
    assert prices["H100-80G-PCIe"] == 1.9  # per GPU-hour
    sim.state.set_capacity("hyperstack", "CANADA-1", "n3-H100x8", 0)
    stocks = (await api.call("GET", "/v1/core/stocks")).body["stocks"]
    canada = next(s for s in stocks if s["region"] == "CANADA-1")
    model = next(m for m in canada["models"] if m["model"] == "H100-80G-PCIe")
    assert model["configurations"]["8x"] == 0 and model["configurations"]["1x"] == 2
    flavors = (await api.call("GET", "/v1/core/flavors", params={"region": "CANADA-1"})).body
    eight = [f for g in flavors["data"] for f in g["flavors"] if f["name"] == "n3-H100x8"]
    assert eight[0]["stock_available"] is False
    no_violations(sim)


async def test_vm_lifecycle_and_capacity(sim: Simulator, api: CloudClient) -> None:
    clock = sim.clock
    assert isinstance(clock, ManualClock)
    missing = await api.call("POST", "/v1/core/virtual-machines", json_body=VM)
    assert missing.status == 404  # no such environment yet
    await environment(api)
    created = (await api.call("POST", "/v1/core/virtual-machines", json_body=VM)).body
    vm = created["instances"][0]
    assert vm["status"] == "CREATING" and vm["environment"]["region"] == "CANADA-1"
    [made] = sim.instances("hyperstack")
    assert made.join_script == VM["user_data"] and str(vm["id"]) == made.id
    clock.advance(31)
    assert (await api.call("GET", f"/v1/core/virtual-machines/{vm['id']}")).body["instance"][
        "status"
    ] == "BUILD"
    clock.advance(30)
    got = (await api.call("GET", f"/v1/core/virtual-machines/{vm['id']}")).body["instance"]
    assert got["status"] == "ACTIVE" and got["floating_ip"] == made.public_ip
    assert got["security_rules"][0]["port_range_min"] == 10250
    listed = await api.call("GET", "/v1/core/virtual-machines", params={"search": "C-1"})
    assert [i["id"] for i in listed.body["instances"]] == [vm["id"]]
    sim.state.set_capacity("hyperstack", "CANADA-1", "n3-H100x8", 0)
    full = await api.call("POST", "/v1/core/virtual-machines", json_body={**VM, "name": "b"})
    assert full.status == 400 and "stock" in full.body["message"]
    assert (await api.call("DELETE", f"/v1/core/virtual-machines/{vm['id']}")).status == 200
    deleting = await api.call("GET", f"/v1/core/virtual-machines/{vm['id']}")
    assert deleting.body["instance"]["status"] == "DELETING"
    clock.advance(31)
    assert (await api.call("GET", f"/v1/core/virtual-machines/{vm['id']}")).status == 404
    assert (await api.call("GET", "/v1/core/virtual-machines")).body["instances"] == []
    no_violations(sim)


async def test_failed_provisioning_is_error(sim: Simulator, api: CloudClient) -> None:
    await environment(api)
    sim.state.fail_next_boots("hyperstack")
    vm = (await api.call("POST", "/v1/core/virtual-machines", json_body=VM)).body["instances"][0]
    assert sim.instances("hyperstack")[0].state == "ERROR"
    got = await api.call("GET", f"/v1/core/virtual-machines/{vm['id']}")
    assert got.body["instance"]["status"] == "ERROR"
    no_violations(sim)


@pytest.mark.parametrize("cloud", ["hyperstack", "digitalocean"])
def test_their_vms_run_the_user_data_with_cloud_init(cloud: str) -> None:
    """As Lambda's: the cloud-init stages of gpuctl's user data, the VM's name as hostname."""
    vm = joindata_instance(cloud, kubeadm_user_data())
    plan = boot_plan(joindata.plan(vm, HARDWARE))
    assert plan.command == ("/bin/bash", joindata.CLOUD_INIT_PROGRAM)
    assert plan.files["/etc/hostname"][0] == b"gpu-a-1\n"
    assert "cloud-init runs the user data" in plan.banner
    assert b"join.env" in plan.files[joindata.CLOUD_INIT_PROGRAM][0]
    empty = joindata.plan(joindata_instance(cloud, ""), HARDWARE)
    assert isinstance(empty, NotRun) and empty.status is JoinStatus.NO_JOIN_DATA
