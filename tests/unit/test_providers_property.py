"""Property: whatever a cloud answers, a driver returns a value or raises a ProviderError.

Hypothesis picks the status and body of every answer a local server gives: arbitrary
bytes, arbitrary JSON, and valid answers of the cloud with parts dropped or replaced.
Any exception other than a `ProviderError` (a KeyError from a missing field, a cattrs
error, a decimal error from a NaN price...) fails the property.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpuctl.providers import registry
from gpuctl.providers.base import (
    CapacityType,
    DriverConfig,
    Instance,
    JoinData,
    LaunchRequest,
    Offer,
    ProviderError,
)
from tests.unit.test_providers_fakes import (
    FakeCloud,
    Reply,
    lambda_instance,
    lambda_type,
    paperspace_event,
    paperspace_machine,
    paperspace_script,
    runpod_gpu,
    runpod_pod,
)

VALID: dict[str, list[Any]] = {
    "lambda": [
        {
            "data": {
                "gpu_8x_h100_sxm5": {
                    "instance_type": lambda_type("gpu_8x_h100_sxm5", "H100 (80 GB SXM5)", 8, 2392),
                    "regions_with_capacity_available": [{"name": "us-east-1", "description": "V"}],
                }
            }
        },
        {"data": [lambda_instance("i1", "gpuctl-a")]},
        {"data": lambda_instance("i1", "gpuctl-a")},
        {"data": {"instance_ids": ["i1"]}},
        {"data": [{"id": "k", "name": "gpuctl", "public_key": "ssh-ed25519 AAAA"}]},
        {"error": {"code": "instance-operations/launch/insufficient-capacity", "message": "m"}},
    ],
    "runpod": [
        {"gpus": [runpod_gpu("NVIDIA H100 80GB HBM3", 2.69, 1.99, {"US-GA-1": "HIGH"})]},
        [runpod_pod("p1", "gpuctl-a")],
        runpod_pod("p1", "gpuctl-a"),
        {"title": "Bad Request", "status": 400, "detail": "no instances available"},
    ],
    "paperspace": [
        {"hasMore": False, "items": [paperspace_machine("m1", "gpuctl-a")]},
        paperspace_machine("m1", "gpuctl-a"),
        {"event": paperspace_event("m1"), "data": paperspace_machine("m1", "gpuctl-a")},
        {"hasMore": False, "items": [paperspace_script("s1", "gpuctl-a")]},
        paperspace_script("s1", "gpuctl-a"),
        {"available": True},
        {"message": "out of capacity", "code": "X"},
    ],
}
CRUSOE_VM = {
    "id": "i1",
    "project_id": "p1",
    "name": "gpuctl-a",
    "type": "h100-80gb-sxm-ib.8x",
    "location": "us-east1-a",
    "state": "STATE_RUNNING",
    "created_at": "2026-11-29T19:00:00Z",
    "updated_at": "2026-11-29T19:00:00Z",
    "disks": [],
    "network_interfaces": [],
    "host_channel_adapters": [],
    "maintenance_policy": "unspecified",
}
CRUSOE_OPERATION = {
    "operation_id": "o1",
    "state": "SUCCEEDED",
    "metadata": {},
    "started_at": "2026-11-29T19:00:00Z",
    "completed_at": "2026-11-29T19:00:01Z",
    "result": CRUSOE_VM,
}
VALID["crusoe"] = [
    {"items": [{"id": "p1", "name": "d", "organization_id": "o", "relation": "owner",
                "resources": {}}]},
    {"items": [{"type": "h100-80gb-sxm-ib.8x", "location": "us-east1-a", "quantity": 1}]},
    {"operation": CRUSOE_OPERATION},
    CRUSOE_OPERATION,
    {"items": [CRUSOE_VM], "next_page_token": ""},
    CRUSOE_VM,
    {"code": "400", "message": "out of stock"},
]  # fmt: skip
HYPERSTACK_VM = {
    "id": 1,
    "name": "gpuctl-a",
    "status": "ACTIVE",
    "environment": {"name": "gpuctl-us-1", "region": "US-1"},
    "flavor": {"name": "n3-H100x8", "gpu": "H100-80G-PCIe", "gpu_count": 8},
    "floating_ip": "198.18.1.1",
    "created_at": "2026-11-29T19:00:00",
}
VALID["hyperstack"] = [
    {"status": True, "data": [{"gpu": "H100-80G-PCIe", "region_name": "US-1", "flavors": [
        {"name": "n3-H100x8", "gpu": "H100-80G-PCIe", "gpu_count": 8, "region_name": "US-1",
         "stock_available": True}]}]},
    [{"name": "H100-80G-PCIe", "value": 1.9}],
    {"stocks": [{"region": "US-1", "models": [{"model": "H100-80G-PCIe",
                                                "configurations": {"8x": 1}}]}]},
    {"environments": [{"id": 1, "name": "gpuctl-us-1", "region": "US-1"}]},
    {"keypairs": [{"name": "k", "environment": {"name": "gpuctl-us-1"}}]},
    {"instances": [HYPERSTACK_VM]},
    {"instance": HYPERSTACK_VM},
    {"status": False, "message": "Not enough stock available"},
]  # fmt: skip
DO_SIZE = {
    "slug": "gpu-h100x8-640gb", "description": "8x", "memory": 1966080, "vcpus": 160,
    "disk": 2046, "transfer": 15.0, "price_hourly": 23.92, "price_monthly": 16074.24,
    "regions": ["nyc2"], "available": True, "gpu_info": {"count": 8, "model": "nvidia_h100"},
}  # fmt: skip
DO_DROPLET = {
    "id": 1, "name": "gpuctl-a", "memory": 1966080, "vcpus": 160, "disk": 2046,
    "locked": False, "status": "active", "created_at": "2026-11-29T19:00:00Z", "features": [],
    "backup_ids": [], "next_backup_window": None, "snapshot_ids": [], "image": {},
    "volume_ids": [], "size": DO_SIZE, "size_slug": "gpu-h100x8-640gb",
    "networks": {"v4": [{"ip_address": "198.18.2.1", "type": "public"}]},
    "region": {"name": "New York 2", "slug": "nyc2", "features": [], "available": True,
               "sizes": []},
    "tags": [],
}  # fmt: skip
VALID["digitalocean"] = [
    {"sizes": [DO_SIZE], "links": {}, "meta": {"total": 1}},
    {"droplets": [DO_DROPLET], "links": {"pages": {}}, "meta": {"total": 1}},
    {"droplet": DO_DROPLET},
    {"droplet": DO_DROPLET, "links": {"actions": []}},
    {"ssh_keys": [{"id": 1, "name": "k", "public_key": "ssh-ed25519 A"}], "meta": {"total": 1}},
    {"firewalls": [], "links": {}, "meta": {"total": 0}},
    {"id": "unprocessable_entity", "message": "Size is not available in this region."},
]
OPTIONS = {
    "lambda": {"sshKeyName": "gpuctl"},
    "runpod": {"imageName": "img"},
    "paperspace": {"templateId": "t1"},
    "crusoe": {"sshPublicKey": "ssh-ed25519 AAAA", "operationWaitSeconds": "0"},
    "hyperstack": {"sshPublicKey": "ssh-ed25519 AAAA", "rateLimitBlockSeconds": "0"},
    "digitalocean": {},
}
OFFER = {
    "lambda": ("us-east-1", "gpu_8x_h100_sxm5", CapacityType.ON_DEMAND),
    "runpod": ("US-GA-1", "NVIDIA H100 80GB HBM3", CapacityType.SPOT),
    "paperspace": ("ny2", "H100x8", CapacityType.ON_DEMAND),
    "crusoe": ("us-east1-a", "h100-80gb-sxm-ib.8x", CapacityType.ON_DEMAND),
    "hyperstack": ("US-1", "n3-H100x8", CapacityType.ON_DEMAND),
    "digitalocean": ("nyc2", "gpu-h100x8-640gb", CapacityType.ON_DEMAND),
}
# A well-formed credential of each cloud (Crusoe: "<key ID>:<base64url secret>").
API_KEYS = {"crusoe": "k:c2VjcmV0"}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["NaN", "-1", "active", "RUNNING", "ready", "H100 (80 GB SXM5)"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


def mutated(value: Any) -> st.SearchStrategy[Any]:
    """`value`, with any part of it dropped or replaced by arbitrary JSON."""
    if isinstance(value, dict):
        inner = st.fixed_dictionaries({}, optional={k: mutated(v) for k, v in value.items()})
    elif isinstance(value, list):
        inner = (
            st.lists(st.one_of(*[mutated(v) for v in value]), max_size=3) if value else st.just([])
        )
    else:
        inner = st.just(value)
    return st.one_of(st.just(value), inner, json_values)


def encode(value: Any) -> bytes:
    # allow_nan: a cloud sending NaN is exactly the kind of answer under test.
    return json.dumps(value, allow_nan=True).encode()


def bodies(cloud: str) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=40),
        json_values.map(encode),
        st.sampled_from(VALID[cloud]).flatmap(mutated).map(encode),
    )


STATUSES = st.one_of(
    st.just(200),  # most answers are successes: structuring is what breaks on them
    st.sampled_from([201, 204, 400, 401, 402, 403, 404, 409, 422, 429, 500, 503]),
    st.integers(200, 599),  # 1xx are not final answers: the client would wait for one
)
OPERATIONS = ["list_offers", "get", "find", "list_instances", "terminate", "validate", "launch"]


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[FakeCloud]:
    fake = await FakeCloud().start()
    yield fake
    await fake.stop()


@pytest.fixture(scope="module")
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def run(driver: Any, cloud: str, operation: str) -> object:
    native, kind, capacity = OFFER[cloud]
    offer = Offer(
        provider="p",
        cloud=cloud,
        region="us-east",
        native_region=native,
        gpu_type="H100-80GB",
        gpu_count=8,
        instance_type=kind,
        capacity_type=capacity,
        price_per_hour=Decimal(1),
    )
    calls = {
        "list_offers": lambda: driver.list_offers(gpu_type="H100-80GB", gpu_count=8),
        "get": lambda: driver.get("i1"),
        "find": lambda: driver.find("gpuctl-a"),
        "list_instances": lambda: driver.list_instances("gpuctl-"),
        "terminate": lambda: driver.terminate("i1"),
        "validate": driver.validate_credentials,
        "launch": lambda: driver.launch(
            LaunchRequest(name="gpuctl-a", offer=offer, join=JoinData(script="x", env={"A": "b"}))
        ),
    }
    return await calls[operation]()


@pytest.mark.parametrize(
    "cloud", ["lambda", "runpod", "paperspace", "crusoe", "hyperstack", "digitalocean"]
)
@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), status=STATUSES, operation=st.sampled_from(OPERATIONS))
async def test_any_answer_is_a_value_or_a_provider_error(
    server: FakeCloud,
    session: aiohttp.ClientSession,
    cloud: str,
    data: st.DataObject,
    status: int,
    operation: str,
) -> None:
    body = data.draw(bodies(cloud), label="body")
    server.handler = lambda seen: Reply(status, body)
    config = DriverConfig(
        name="p",
        cloud=cloud,
        api_key=API_KEYS.get(cloud, "k"),
        endpoint=server.url,
        options={
            "rateLimit": "unlimited",
            "retryAttempts": "1",
            "requestTimeoutSeconds": "5",
            **OPTIONS[cloud],
        },
    )
    driver = registry.build_driver(config, session)
    try:
        result = await run(driver, cloud, operation)
    except ProviderError:
        return
    if operation in ("get", "launch"):
        assert isinstance(result, Instance)
    elif operation == "find":
        assert result is None or isinstance(result, Instance)
    elif operation in ("list_offers", "list_instances"):
        assert isinstance(result, list)
        assert all(isinstance(x, Offer | Instance) for x in result)
        for offer in result:
            if isinstance(offer, Offer):
                assert offer.price_per_hour.is_finite() and offer.price_per_hour >= 0
    else:
        assert result is None
