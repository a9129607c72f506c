"""The three drivers against small in-memory fakes of their clouds.

Every request a driver makes here goes through `SpecCheckedTransport`: a request the
cloud's OpenAPI spec does not allow fails the test (openapi-core validation).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import aiohttp
import attrs
import pytest

from gpuctl.providers import registry
from gpuctl.providers.base import (
    CapacityError,
    CapacityType,
    Driver,
    DriverConfig,
    InstanceState,
    InvalidRequestError,
    JoinData,
    LaunchRequest,
    NotFoundError,
    Offer,
    TransientError,
)
from gpuctl.providers.http import HttpTransport
from tests.unit.test_providers_fakes import (
    FakeCloud,
    Reply,
    Seen,
    SpecCheckedTransport,
    lambda_instance,
    lambda_type,
    paperspace_event,
    paperspace_machine,
    paperspace_script,
    running,
    runpod_gpu,
    runpod_pod,
)

FAST = {"rateLimit": "unlimited", "retryAttempts": "2", "retryBaseSeconds": "0.01"}
JOIN = JoinData(script="#!/bin/sh\nexport GPUCTL_NODE_NAME='n1'\n", env={"GPUCTL_NODE_NAME": "n1"})


# -- in-memory clouds ------------------------------------------------------------------


@attrs.define
class FakeApi:
    """Instances by id, a counter of create calls, and failure switches."""

    cloud: str
    instances: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    creates: int = 0
    fail_create: str | None = None  # "before": 500 without creating; "after": create, then 500
    ids: Any = attrs.field(factory=lambda: itertools.count(1))

    def new_id(self) -> str:
        return f"{self.cloud[0]}{next(self.ids):04d}"

    def create(self, make: Callable[[str], dict[str, Any]]) -> dict[str, Any] | None:
        self.creates += 1
        if self.fail_create == "before":
            return None
        obj = make(self.new_id())
        self.instances[obj["id"]] = obj
        return None if self.fail_create == "after" else obj


def lambda_handler(api: FakeApi) -> Callable[[Seen], Reply]:
    not_found = Reply(404, {"error": {"code": "global/object-does-not-exist", "message": "no"}})

    def handle(seen: Seen) -> Reply:
        route = (seen.method, seen.path)
        if route == ("GET", "/api/v1/instance-types"):
            item = {
                "instance_type": lambda_type("gpu_8x_h100_sxm5", "H100 (80 GB SXM5)", 8, 2392),
                "regions_with_capacity_available": [
                    {"name": "us-east-1", "description": "Virginia"},
                    {"name": "mars-1", "description": "unknown to the catalog"},
                ],
            }
            mystery = {
                "instance_type": lambda_type("gpu_1x_x", "Mystery GPU", 1, 100),
                "regions_with_capacity_available": [{"name": "us-east-1", "description": "V"}],
            }
            return Reply(200, {"data": {"gpu_8x_h100_sxm5": item, "gpu_1x_x": mystery}})
        if route == ("GET", "/api/v1/ssh-keys"):
            key = {"id": "k", "name": "gpuctl", "public_key": "ssh-ed25519 AAAA"}
            return Reply(200, {"data": [key]})
        if route == ("POST", "/api/v1/instance-operations/launch"):
            body = seen.body
            made = api.create(
                lambda i: lambda_instance(i, body["name"], "booting", body["region_name"])
            )
            if made is None:
                return Reply(500, {"error": {"code": "provider/internal-unavailable"}})
            return Reply(200, {"data": {"instance_ids": [made["id"]]}})
        if route == ("GET", "/api/v1/instances"):
            return Reply(200, {"data": list(api.instances.values())})
        if seen.method == "GET" and (m := re.fullmatch(r"/api/v1/instances/(\w+)", seen.path)):
            found = api.instances.get(m[1])
            return Reply(200, {"data": found}) if found else not_found
        if route == ("POST", "/api/v1/instance-operations/terminate"):
            [instance_id] = seen.body["instance_ids"]
            if instance_id not in api.instances:
                return not_found
            api.instances[instance_id]["status"] = "terminated"
            return Reply(200, {"data": {"terminated_instances": [api.instances[instance_id]]}})
        return Reply(404, {"error": {"code": "global/not-found", "message": seen.path}})

    return handle


def runpod_handler(api: FakeApi) -> Callable[[Seen], Reply]:
    not_found = Reply(404, {"title": "Not Found", "status": 404, "detail": "pod not found"})

    def handle(seen: Seen) -> Reply:
        route = (seen.method, seen.path)
        if route == ("GET", "/v2/catalog/gpus"):
            gpus = [
                runpod_gpu(
                    "NVIDIA H100 80GB HBM3", 2.69, 1.99, {"US-GA-1": "HIGH", "EU-RO-1": "NONE"}
                ),
                runpod_gpu("NVIDIA Mystery", 1.0, 0.5, {"US-GA-1": "HIGH"}),
            ]
            return Reply(200, {"gpus": gpus})
        if route == ("POST", "/v1/pods"):
            body = seen.body
            made = api.create(
                lambda i: runpod_pod(
                    i,
                    body["name"],
                    dc=body["dataCenterIds"][0],
                    interruptible=body["interruptible"],
                )
            )
            if made is None:
                return Reply(503, {"title": "Unavailable", "status": 503, "detail": "x"})
            return Reply(201, made)
        if route == ("GET", "/v1/pods"):
            name = dict(seen.query).get("name")
            pods = [p for p in api.instances.values() if name is None or p["name"] == name]
            return Reply(200, pods)
        if m := re.fullmatch(r"/v1/pods/(\w+)", seen.path):
            found = api.instances.get(m[1])
            if found is None:
                return not_found
            if seen.method == "DELETE":
                del api.instances[m[1]]
                return Reply(204)
            return Reply(200, found)
        return not_found

    return handle


def paperspace_handler(api: FakeApi) -> Callable[[Seen], Reply]:
    scripts: dict[str, dict[str, Any]] = {}
    not_found = Reply(404, {"message": "Not found", "code": "NOT_FOUND"})

    def handle(seen: Seen) -> Reply:
        route = (seen.method, seen.path)
        query = dict(seen.query)
        if route == ("GET", "/v1/machine-availability"):
            return Reply(200, {"available": query["region"] == "ny2"})
        if route == ("GET", "/v1/os-templates"):
            template = {
                "agentType": "LinuxMachine",
                "availableMachineTypes": [{"isAvailable": True, "machineTypeLabel": "H100x8"}],
                "defaultSizeGb": 100,
                "dtCreated": "2026-01-01T00:00:00.000Z",
                "id": "t0nspur5",
                "name": "Ubuntu 22.04 Server",
                "operatingSystemLabel": "Ubuntu 22.04",
            }
            return Reply(200, {"hasMore": False, "items": [template]})
        if route == ("GET", "/v1/startup-scripts"):
            items = [s for s in scripts.values() if s["name"] == query.get("name", s["name"])]
            return Reply(200, {"hasMore": False, "items": items})
        if route == ("POST", "/v1/startup-scripts"):
            made = paperspace_script(f"s{len(scripts) + 1}", seen.body["name"])
            scripts[made["id"]] = made
            return Reply(200, made)
        if seen.method == "DELETE" and (m := re.fullmatch(r"/v1/startup-scripts/(\w+)", seen.path)):
            gone = scripts.pop(m[1], None)
            return Reply(200, gone) if gone else not_found
        if route == ("POST", "/v1/machines"):
            body = seen.body
            made = api.create(
                lambda i: paperspace_machine(i, body["name"], "provisioning", body["region"])
            )
            if made is None:
                return Reply(502, {"message": "bad gateway", "code": "BAD_GATEWAY"})
            return Reply(200, {"event": paperspace_event(made["id"]), "data": made})
        if route == ("GET", "/v1/machines"):
            items = [m for m in api.instances.values() if m["name"] == query.get("name", m["name"])]
            return Reply(200, {"hasMore": False, "items": items})
        if m := re.fullmatch(r"/v1/machines/(\w+)", seen.path):
            found = api.instances.get(m[1])
            if found is None:
                return not_found
            if seen.method == "DELETE":
                del api.instances[m[1]]
                return Reply(200, {"event": paperspace_event(m[1]), "data": found})
            return Reply(200, found)
        if route == ("GET", "/v1/machine-events"):
            events = [paperspace_event(i) for i in api.instances if i == query.get("machineId")]
            return Reply(200, {"hasMore": False, "items": events})
        if m := re.fullmatch(r"/v1/machine-events/(\w+)", seen.path):
            return Reply(200, paperspace_event(next(iter(api.instances), "m")))
        if route == ("GET", "/v1/auth/session"):
            return Reply(200, None)
        return not_found

    return handle


HANDLERS = {"lambda": lambda_handler, "runpod": runpod_handler, "paperspace": paperspace_handler}
OPTIONS = {
    "lambda": {},
    "runpod": {"imageName": "gpuctl/node:1"},
    "paperspace": {},
}
# One offer per cloud that the fakes accept.
OFFERS = {
    "lambda": ("us-east-1", "us-east", "H100-80GB", 8, "gpu_8x_h100_sxm5", CapacityType.ON_DEMAND),
    "runpod": ("US-GA-1", "us-east", "H100-80GB", 8, "NVIDIA H100 80GB HBM3", CapacityType.SPOT),
    "paperspace": ("ny2", "us-east", "H100-80GB", 8, "H100x8", CapacityType.ON_DEMAND),
}


@attrs.define
class Rig:
    cloud: str
    driver: Driver
    api: FakeApi
    fake: FakeCloud

    def offer(self) -> Offer:
        native, region, gpu, count, kind, capacity = OFFERS[self.cloud]
        return Offer(
            provider="prov",
            cloud=self.cloud,
            region=region,
            native_region=native,
            gpu_type=gpu,
            gpu_count=count,
            instance_type=kind,
            capacity_type=capacity,
            price_per_hour=Decimal("10"),
        )

    def posts(self) -> list[Seen]:
        creates = {"/api/v1/instance-operations/launch", "/v1/pods", "/v1/machines"}
        return [s for s in self.fake.seen if s.method == "POST" and s.path in creates]


def spec_checked(driver: Driver) -> None:
    """Swap every HttpTransport of `driver` for a spec-checking one."""
    for attr, value in list(vars(driver).items()):
        if isinstance(value, HttpTransport):
            setattr(driver, attr, SpecCheckedTransport.wrap(value))


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture(params=["lambda", "runpod", "paperspace"])
async def rig(request: pytest.FixtureRequest, session: aiohttp.ClientSession) -> AsyncIterator[Rig]:
    cloud = request.param
    async with running() as fake:
        api = FakeApi(cloud)
        fake.handler = HANDLERS[cloud](api)
        config = DriverConfig(
            name="prov",
            cloud=cloud,
            api_key="key-for-tests",
            endpoint=fake.url,
            options={**FAST, **OPTIONS[cloud]},
        )
        driver = registry.build_driver(config, session)
        spec_checked(driver)
        yield Rig(cloud, driver, api, fake)


# -- the tests -----------------------------------------------------------------------


async def test_offers_are_translated(rig: Rig) -> None:
    offers = await rig.driver.list_offers(gpu_type="H100-80GB", gpu_count=8)
    assert offers, "no H100 x8 offer"
    assert all(o.gpu_type == "H100-80GB" and o.gpu_count == 8 for o in offers)
    assert all(o.provider == "prov" and o.cloud == rig.cloud for o in offers)
    native = {o.native_region for o in offers if o.available}
    assert OFFERS[rig.cloud][0] in native
    prices = [o.price_per_hour for o in offers]
    assert prices == sorted(prices)
    everything = await rig.driver.list_offers()
    assert {o.gpu_type for o in everything} <= {
        "H100-80GB",
        "A100-80GB",
        "A100-40GB",
        "A6000-48GB",
        "RTX-A4000",
    }


async def test_offers_come_from_the_cache(rig: Rig) -> None:
    await rig.driver.list_offers()
    before = len(rig.fake.seen)
    await rig.driver.list_offers()
    assert len(rig.fake.seen) == before


async def test_lambda_offer_details(session: aiohttp.ClientSession) -> None:
    async with running() as fake:
        fake.handler = lambda_handler(FakeApi("lambda"))
        config = DriverConfig(
            name="p", cloud="lambda", api_key="k", endpoint=fake.url, options=FAST
        )
        [offer] = await registry.build_driver(config, session).list_offers()
        assert offer.price_per_hour == Decimal("23.92")
        assert (offer.native_region, offer.region) == ("us-east-1", "us-east")
        assert offer.capacity_type is CapacityType.ON_DEMAND


async def test_runpod_offer_details(session: aiohttp.ClientSession) -> None:
    async with running() as fake:
        fake.handler = runpod_handler(FakeApi("runpod"))
        config = DriverConfig(
            name="p",
            cloud="runpod",
            api_key="k",
            endpoint=fake.url,
            options={**FAST, "cloudType": "COMMUNITY"},
            prices={"spot:NVIDIA H100 80GB HBM3": Decimal("1.00")},
        )
        offers = await registry.build_driver(config, session).list_offers(gpu_count=2)
        by = {(o.native_region, o.capacity_type): o for o in offers}
        assert by[("US-GA-1", CapacityType.ON_DEMAND)].price_per_hour == Decimal("3.98")
        assert by[("US-GA-1", CapacityType.SPOT)].price_per_hour == Decimal("2.00")
        assert by[("US-GA-1", CapacityType.ON_DEMAND)].available
        assert not by[("EU-RO-1", CapacityType.ON_DEMAND)].available
        [catalog_read] = [s for s in fake.seen if s.path == "/v2/catalog/gpus"]
        assert dict(catalog_read.query) == {
            "include": "AVAILABILITY",
            "product": "POD",
            "cloud": "COMMUNITY",
            "count": "2",
        }


async def test_runpod_spot_price_is_an_estimate_from_community(
    session: aiohttp.ClientSession,
) -> None:
    async with running() as fake:
        fake.handler = runpod_handler(FakeApi("runpod"))
        config = DriverConfig(
            name="p",
            cloud="runpod",
            api_key="k",
            endpoint=fake.url,
            options={**FAST, "spotPriceFactor": "0.5"},
        )
        offers = await registry.build_driver(config, session).list_offers(gpu_count=1)
        spot = [o for o in offers if o.capacity_type is CapacityType.SPOT]
        assert spot and all(o.price_per_hour == Decimal("0.995") for o in spot)


async def test_paperspace_regions_filter_and_availability(
    session: aiohttp.ClientSession,
) -> None:
    async with running() as fake:
        fake.handler = paperspace_handler(FakeApi("paperspace"))
        config = DriverConfig(
            name="p",
            cloud="paperspace",
            api_key="k",
            endpoint=fake.url,
            options=FAST,
            regions=("us-east", "us-west"),
        )
        offers = await registry.build_driver(config, session).list_offers(
            gpu_type="H100-80GB", gpu_count=8
        )
        assert {(o.native_region, o.available) for o in offers} == {("ny2", True), ("ca1", False)}
        assert all(o.price_per_hour == Decimal("47.60") for o in offers)


async def test_launch_get_find_list_terminate(rig: Rig) -> None:
    request = LaunchRequest(
        name="gpuctl-r1-abc", offer=rig.offer(), join=JOIN, tags={"gpuctl.io/request": "r1"}
    )
    launched = await rig.driver.launch(request)
    assert launched.id and launched.name == "gpuctl-r1-abc"
    assert launched.state in (InstanceState.PENDING, InstanceState.RUNNING)
    got = await rig.driver.get(launched.id)
    assert (got.id, got.name, got.region) == (
        launched.id,
        launched.name,
        "US-GA-1" if rig.cloud == "runpod" else got.region,
    )
    found = await rig.driver.find("gpuctl-r1-abc")
    assert found is not None and found.id == launched.id
    assert await rig.driver.find("gpuctl-r1") is None
    listed = await rig.driver.list_instances("gpuctl-r1-")
    assert [i.id for i in listed] == [launched.id]
    assert await rig.driver.list_instances("other-") == []
    await rig.driver.terminate(launched.id)
    assert await rig.driver.find("gpuctl-r1-abc") is None
    await rig.driver.terminate(launched.id)  # gone: not an error
    await rig.driver.terminate("nosuchid")


async def test_relaunch_by_name_does_not_duplicate(rig: Rig) -> None:
    request = LaunchRequest(name="gpuctl-r2-abc", offer=rig.offer(), join=JOIN)
    first = await rig.driver.launch(request)
    second = await rig.driver.launch(request)
    assert first.id == second.id
    assert rig.api.creates == 1 and len(rig.posts()) == 1


async def test_transient_launch_that_created_is_recovered_by_name(rig: Rig) -> None:
    rig.api.fail_create = "after"
    launched = await rig.driver.launch(
        LaunchRequest(name="gpuctl-r3", offer=rig.offer(), join=JOIN)
    )
    assert launched.name == "gpuctl-r3"
    assert rig.api.creates == 1 and len(rig.posts()) == 1  # never retried blindly


async def test_transient_launch_that_did_not_create_raises(rig: Rig) -> None:
    rig.api.fail_create = "before"
    with pytest.raises(TransientError):
        await rig.driver.launch(LaunchRequest(name="gpuctl-r4", offer=rig.offer(), join=JOIN))
    assert rig.api.creates == 1 and len(rig.posts()) == 1
    assert rig.api.instances == {}


async def test_get_unknown_is_not_found(rig: Rig) -> None:
    with pytest.raises(NotFoundError):
        await rig.driver.get("nosuchid")


async def test_requests_carry_the_join_data(rig: Rig) -> None:
    await rig.driver.launch(LaunchRequest(name="gpuctl-r5", offer=rig.offer(), join=JOIN))
    sent = [s.body for s in rig.fake.seen if s.method == "POST"]
    if rig.cloud == "lambda":
        [launch] = sent
        assert launch["user_data"] == JOIN.script and launch["ssh_key_names"] == ["gpuctl"]
    elif rig.cloud == "runpod":
        [create] = sent
        assert create["env"] == dict(JOIN.env)
        assert create["interruptible"] is True and create["gpuCount"] == 8
        assert create["imageName"] == "gpuctl/node:1"
    else:
        script, machine = sent
        assert script == {"name": "gpuctl-r5", "script": JOIN.script, "isRunOnce": True}
        assert machine["startupScriptId"] == "s1" and machine["templateId"] == "t0nspur5"
        assert machine["startOnCreate"] is True and machine["machineType"] == "H100x8"


async def test_every_request_was_checked_against_the_spec(rig: Rig) -> None:
    await rig.driver.list_offers()
    launched = await rig.driver.launch(
        LaunchRequest(name="gpuctl-r6", offer=rig.offer(), join=JOIN)
    )
    await rig.driver.get(launched.id)
    await rig.driver.list_instances("gpuctl-")
    await rig.driver.terminate(launched.id)
    transports = [v for v in vars(rig.driver).values() if isinstance(v, SpecCheckedTransport)]
    checked = [c for t in transports for c in t.checked]
    assert len(checked) == len(rig.fake.seen)


async def test_lambda_refuses_spot_and_long_names(session: aiohttp.ClientSession) -> None:
    config = DriverConfig(name="p", cloud="lambda", api_key="k", endpoint="http://127.0.0.1:9")
    driver = registry.build_driver(config, session)
    offer = attrs.evolve(
        Rig("lambda", driver, FakeApi("lambda"), FakeCloud()).offer(),
        capacity_type=CapacityType.SPOT,
    )
    with pytest.raises(InvalidRequestError):
        await driver.launch(LaunchRequest(name="x", offer=offer))
    with pytest.raises(InvalidRequestError):
        await driver.launch(
            LaunchRequest(
                name="x" * 65, offer=attrs.evolve(offer, capacity_type=CapacityType.ON_DEMAND)
            )
        )


async def test_runpod_needs_an_image(session: aiohttp.ClientSession) -> None:
    config = DriverConfig(name="p", cloud="runpod", api_key="k", endpoint="http://127.0.0.1:9")
    driver = registry.build_driver(config, session)
    rig = Rig("runpod", driver, FakeApi("runpod"), FakeCloud())
    with pytest.raises(InvalidRequestError, match="imageName"):
        await driver.launch(LaunchRequest(name="x", offer=rig.offer()))


async def test_paperspace_null_session_is_auth_error(session: aiohttp.ClientSession) -> None:
    async with running() as fake:
        fake.handler = paperspace_handler(FakeApi("paperspace"))
        config = DriverConfig(
            name="p", cloud="paperspace", api_key="k", endpoint=fake.url, options=FAST
        )
        with pytest.raises(Exception, match="no session") as info:
            await registry.build_driver(config, session).validate_credentials()
        assert type(info.value).__name__ == "AuthError"


async def test_capacity_error_reaches_the_caller(session: aiohttp.ClientSession) -> None:
    async with running() as fake:
        fake.handler = lambda seen: (
            Reply(200, {"data": []})
            if seen.method == "GET"
            else Reply(
                400,
                {
                    "error": {
                        "code": "instance-operations/launch/insufficient-capacity",
                        "message": "Not enough capacity",
                    }
                },
            )
        )
        config = DriverConfig(
            name="p",
            cloud="lambda",
            api_key="k",
            endpoint=fake.url,
            options={**FAST, "sshKeyName": "gpuctl"},
        )
        driver = registry.build_driver(config, session)
        rig = Rig("lambda", driver, FakeApi("lambda"), fake)
        with pytest.raises(CapacityError):
            await driver.launch(LaunchRequest(name="x", offer=rig.offer()))


def test_registry_rejects_unknown_clouds_and_shares_limiters() -> None:
    with pytest.raises(InvalidRequestError):
        registry.build_driver(DriverConfig(name="p", cloud="aws", api_key="k"), None)  # type: ignore[arg-type]
    a = DriverConfig(name="a", cloud="lambda", api_key="same")
    b = DriverConfig(name="b", cloud="lambda", api_key="same")
    c = DriverConfig(name="c", cloud="lambda", api_key="other")
    assert registry.account_limiter(a) is registry.account_limiter(b)
    assert registry.account_limiter(a) is not registry.account_limiter(c)
