"""Simulated DigitalOcean: sizes, GPU Droplets (listed only with type=gpus), firewalls."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from gpuctl.sim import ManualClock, SimConfig, Simulator
from tests.unit.test_sim_support import CloudClient, no_violations

DROPLET = {
    "name": "gpu-c-1",
    "region": "nyc2",
    "size": "gpu-h100x8-640gb",
    "image": "gpu-h100x1-base",
    "user_data": "#cloud-config\nruncmd: [[true]]\n",
    "tags": ["gpuctl-p", "gpuctl-io-cluster:c"],
}


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    config = SimConfig(seed=7, boot_seconds=60, terminate_seconds=30)
    async with Simulator(config, clock=ManualClock()) as simulator:
        yield simulator


@pytest.fixture
async def api(sim: Simulator) -> AsyncIterator[CloudClient]:
    async with aiohttp.ClientSession() as session:
        yield CloudClient(sim, "digitalocean", session)


async def test_sizes_account_keys(sim: Simulator, api: CloudClient) -> None:
    assert (await api.call("GET", "/v2/sizes", key="wrong")).status == 401
    page = await api.call("GET", "/v2/sizes", params={"per_page": "2"})
    assert len(page.body["sizes"]) == 2 and "next" in page.body["links"]["pages"]
    assert int(page.headers["ratelimit-limit"]) == 5000
    sizes = {
        s["slug"]: s
        for s in (await api.call("GET", "/v2/sizes", params={"per_page": "200"})).body["sizes"]
    }
    assert sizes["gpu-h100x8-640gb"]["gpu_info"]["count"] == 8
    assert sizes["gpu-h100x8-640gb"]["price_hourly"] == 23.92
    assert "gpu_info" not in sizes["s-2vcpu-4gb"]
    assert "ams3" not in sizes["gpu-h200x8-1128gb"]["regions"]  # no capacity there
    keys = (await api.call("GET", "/v2/account/keys")).body["ssh_keys"]
    assert [k["name"] for k in keys] == ["gpuctl"]
    assert (await api.call("GET", "/v2/account")).body["account"]["status"] == "active"
    no_violations(sim)


async def test_gpu_droplets_only_with_type_gpus(sim: Simulator, api: CloudClient) -> None:
    clock = sim.clock
    assert isinstance(clock, ManualClock)
    created = await api.call("POST", "/v2/droplets", json_body=DROPLET)
    assert created.status == 202 and created.body["droplet"]["status"] == "new"
    droplet_id = created.body["droplet"]["id"]
    assert (await api.call("GET", "/v2/droplets")).body["droplets"] == []
    gpus = await api.call("GET", "/v2/droplets", params={"type": "gpus", "name": "GPU-C-1"})
    assert [d["id"] for d in gpus.body["droplets"]] == [droplet_id]
    both = await api.call("GET", "/v2/droplets", params={"type": "gpus", "tag_name": "gpuctl-p"})
    assert both.status == 422
    clock.advance(61)
    got = (await api.call("GET", f"/v2/droplets/{droplet_id}")).body["droplet"]
    public = [n for n in got["networks"]["v4"] if n["type"] == "public"]
    assert (
        got["status"] == "active"
        and public[0]["ip_address"] == sim.instances("digitalocean")[0].public_ip
    )
    assert sim.instances("digitalocean")[0].join_script == DROPLET["user_data"]
    assert (await api.call("DELETE", f"/v2/droplets/{droplet_id}")).status == 204
    assert (await api.call("GET", f"/v2/droplets/{droplet_id}")).status == 404
    assert (await api.call("DELETE", f"/v2/droplets/{droplet_id}")).status == 404
    no_violations(sim)


async def test_refusals_and_capacity(sim: Simulator, api: CloudClient) -> None:
    bad_key = await api.call("POST", "/v2/droplets", json_body={**DROPLET, "ssh_keys": ["nope"]})
    assert bad_key.status == 422 and bad_key.body["id"] == "unprocessable_entity"
    sim.state.set_capacity("digitalocean", "nyc2", "gpu-h100x8-640gb", 0)
    full = await api.call("POST", "/v2/droplets", json_body=DROPLET)
    assert full.status == 422 and "capacity" in full.body["message"]
    assert sim.instances("digitalocean") == []
    no_violations(sim)


async def test_firewalls(sim: Simulator, api: CloudClient) -> None:
    body = {
        "name": "gpuctl-p",
        "tags": ["gpuctl-p"],
        "inbound_rules": [
            {"protocol": "tcp", "ports": "10250", "sources": {"addresses": ["0.0.0.0/0"]}}
        ],
        "outbound_rules": [
            {"protocol": "tcp", "ports": "all", "destinations": {"addresses": ["0.0.0.0/0"]}}
        ],
    }
    created = await api.call("POST", "/v2/firewalls", json_body=body)
    assert created.status == 202 and created.body["firewall"]["status"] == "succeeded"
    listed = (await api.call("GET", "/v2/firewalls")).body["firewalls"]
    assert [f["name"] for f in listed] == ["gpuctl-p"]
    no_violations(sim)
