"""Hyperstack's driver pieces that need no cloud: error table, rates, stock, labels.

The driver's contract against the simulated cloud (every request and answer checked
against Hyperstack's spec) is tests/integration/test_provider_contract.py; here, the
environments and key pairs it keeps per region.
"""

from __future__ import annotations

import json
from decimal import Decimal

import aiohttp
import pytest

from gpuctl.providers import errors, registry
from gpuctl.providers.base import (
    AuthError,
    CapacityError,
    DriverConfig,
    InvalidRequestError,
    JoinData,
    LaunchRequest,
    NotFoundError,
    QuotaError,
    TransientError,
)
from gpuctl.providers.hyperstack import driver
from gpuctl.providers.hyperstack._generated import models
from gpuctl.providers.ratelimit import limits_for
from gpuctl.sim import SimConfig, Simulator


def failure(status: int, message: str, operation: str = "Create_VMs") -> errors.HttpFailure:
    body = json.dumps({"status": False, "message": message, "error_reason": "x"}).encode()
    method = "POST" if operation.startswith("Create") else "GET"
    return errors.HttpFailure("hyperstack", "p", operation, method, status, body)


@pytest.mark.parametrize(
    ("status", "message", "operation", "kind"),
    [
        (400, "Not enough stock available for flavor n3-H100x8", "Create_VMs", CapacityError),
        (409, "Insufficient capacity in CANADA-1", "Create_VMs", CapacityError),
        (400, "Quota exceeded for GPUs", "Create_VMs", QuotaError),
        (400, "Image not found", "Create_VMs", InvalidRequestError),
        (
            409,
            "Environment with this name already exists",
            "Create_environment",
            InvalidRequestError,
        ),
        (401, "Invalid API key", "List_VMs", AuthError),
        (404, "VM not found", "Get_VM", NotFoundError),
        (409, "VM is locked", "Delete_VM", TransientError),
        (500, "", "List_VMs", TransientError),
    ],
)
def test_error_table(status: int, message: str, operation: str, kind: type) -> None:
    error = errors.hyperstack_error(failure(status, message, operation))
    assert type(error) is kind and error.provider == "p"


def test_rate_limit_is_half_the_documented_per_ip_limit() -> None:
    limits = limits_for(DriverConfig(name="h", cloud="hyperstack", api_key="k"))
    assert limits.overall_per_second == 4.0  # 500/min per IP documented


def test_price_is_the_flavor_entry_else_gpu_rate_times_count() -> None:
    rates = {"n3-H100x8": 20.0, "H100-80G-PCIe": 1.9}
    assert driver._price("n3-H100x8", "H100-80G-PCIe", 8, rates) == Decimal("20.0")
    assert driver._price("n3-H100x4", "H100-80G-PCIe", 4, rates) == Decimal("7.6")
    assert driver._price("n3-L40x1", "L40", 1, rates) is None


def test_stock_counts_by_region_model_and_configuration() -> None:
    answer = models.converter.structure(
        {
            "stocks": [
                {
                    "region": "CANADA-1",
                    "stock-type": "GPU",
                    "models": [
                        {
                            "model": "H100-80G-PCIe",
                            "available": "3",
                            "configurations": {"1x": 2, "8x": 0},
                        }
                    ],
                }
            ]
        },
        models.NewStockRetriveResponse,
    )
    counts = driver._stock_counts(answer)
    assert counts == {("CANADA-1", "H100-80G-PCIe", 1): 2, ("CANADA-1", "H100-80G-PCIe", 8): 0}


def test_labels_and_ids() -> None:
    assert driver._labels({"gpuctl.io/cluster": "c 1"}) == ["gpuctl.io/cluster=c-1"]
    assert driver._vm_id("123") == 123 and driver._vm_id("abc") is None
    with pytest.raises(InvalidRequestError):
        driver._flag("yes", "assignFloatingIp")


async def test_one_environment_and_key_pair_per_region() -> None:
    async with (
        Simulator(SimConfig(seed=3, boot_seconds=0.0)) as sim,
        aiohttp.ClientSession() as session,
    ):
        config = DriverConfig(
            name="h",
            cloud="hyperstack",
            api_key=sim.api_key("hyperstack"),
            endpoint=sim.endpoint("hyperstack"),
            options={"rateLimit": "unlimited", "sshPublicKey": "ssh-ed25519 AAAA k"},
        )
        hs = registry.build_driver(config, session)
        offers = await hs.list_offers(gpu_type="A100-80GB", gpu_count=1)
        by_region = {o.native_region: o for o in offers}
        for name, region in (
            ("gpuctl-a", "CANADA-1"),
            ("gpuctl-b", "CANADA-1"),
            ("gpuctl-c", "US-1"),
        ):
            join = JoinData(script="#cloud-config\n")
            await hs.launch(LaunchRequest(name=name, offer=by_region[region], join=join))
        objects = sim.state.cloud("hyperstack").objects
        assert sorted(objects["environments"]) == ["gpuctl-canada-1", "gpuctl-us-1"]
        assert sorted(objects["keypairs"]) == ["gpuctl-canada-1/gpuctl", "gpuctl-us-1/gpuctl"]
        assert [i.request["environment_name"] for i in sim.instances("hyperstack")] == [
            "gpuctl-canada-1",
            "gpuctl-canada-1",
            "gpuctl-us-1",
        ]
        got = await hs.get(sim.instances("hyperstack")[0].id)
        assert got.price_per_hour == Decimal("1.35")  # the flavor's list price, from the offers
        assert not sim.violations
