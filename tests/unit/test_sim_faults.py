"""Injected faults: each kind, in each cloud's own format, matched and counted; fault
rates per cloud and operation class, seeded."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from gpuctl.sim import SimConfig, Simulator
from gpuctl.sim.faults import Faults, operation_class
from tests.unit.test_sim_support import CloudClient, no_violations

# One cheap read per cloud: (cloud, path, operationId).
READS = [
    ("lambda", "/api/v1/regions", "listRegions"),
    ("runpod", "/v1/pods", "ListPods"),
    ("runpod", "/v2/catalog/gpus", "listGpuTypes"),
    ("paperspace", "/v1/os-templates", "osTemplates-list"),
]
LAUNCH = {
    "region_name": "us-east-1",
    "instance_type_name": "gpu_1x_a10",
    "ssh_key_names": ["gpuctl"],
    "name": "lost-answer",
}


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(seed=3, boot_seconds=0.0)) as simulator:
        yield simulator


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    # No keep-alive: aiohttp retries an idempotent request once when a reused
    # connection drops, which would hide a dropped answer.
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as client:
        yield client


@pytest.mark.parametrize(("cloud", "path", "operation"), READS)
async def test_500_and_429_in_the_clouds_format(
    sim: Simulator, session: aiohttp.ClientSession, cloud: str, path: str, operation: str
) -> None:
    api = CloudClient(sim, cloud, session)  # validates the error bodies
    sim.faults.add(cloud, operation=operation, kind="500")
    sim.faults.add(cloud, operation=operation, kind="429", retry_after=2.5)
    assert (await api.call("GET", path)).status == 500
    limited = await api.call("GET", path)
    assert (limited.status, limited.headers["Retry-After"]) == (429, "3")
    assert (await api.call("GET", path)).status == 200
    assert [e.fault for e in sim.ledger] == ["500", "429", None]
    no_violations(sim)


async def test_matching_by_path_and_count(sim: Simulator, session: aiohttp.ClientSession) -> None:
    api = CloudClient(sim, "runpod", session)
    sim.faults.add("runpod", path="/v1/pods*", kind="500", count=2)
    statuses = [(await api.call("GET", "/v1/pods")).status for _ in range(3)]
    assert statuses == [500, 500, 200]
    assert (await api.call("GET", "/v2/catalog/gpus")).status == 200
    sim.faults.add("lambda", kind="500", count=None)
    lam = CloudClient(sim, "lambda", session)
    assert {(await lam.call("GET", "/api/v1/regions")).status for _ in range(4)} == {500}
    sim.faults.clear()
    assert (await lam.call("GET", "/api/v1/regions")).status == 200


async def test_slow(sim: Simulator, session: aiohttp.ClientSession) -> None:
    api = CloudClient(sim, "paperspace", session)
    sim.faults.add("paperspace", operation="osTemplates-list", kind="slow", seconds=0.3)
    started = time.monotonic()
    assert (await api.call("GET", "/v1/os-templates")).status == 200
    assert time.monotonic() - started >= 0.3


async def test_timeout_runs_the_operation_then_drops_the_connection(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    sim.faults.add("lambda", operation="launchInstance", kind="timeout", seconds=0.2)
    url = sim.endpoint("lambda") + "/api/v1/instance-operations/launch"
    headers = {"Authorization": f"Bearer {sim.api_key('lambda')}"}
    with pytest.raises(aiohttp.ServerDisconnectedError):
        async with session.post(url, json=LAUNCH, headers=headers) as response:
            await response.read()
    assert [i.name for i in sim.instances("lambda")] == ["lost-answer"]  # it did launch
    assert (sim.ledger[-1].status, sim.ledger[-1].fault) == (0, "timeout")


async def test_timeout_outlasts_the_client_and_stop_cuts_it_short(
    session: aiohttp.ClientSession,
) -> None:
    sim = Simulator(SimConfig(hang_seconds=30.0))
    await sim.start()
    sim.faults.add("runpod", operation="ListPods", kind="timeout")
    url = sim.endpoint("runpod") + "/v1/pods"
    headers = {"Authorization": f"Bearer {sim.api_key('runpod')}"}
    with pytest.raises(TimeoutError):
        timeout = aiohttp.ClientTimeout(total=0.3)
        async with session.get(url, headers=headers, timeout=timeout) as response:
            await response.read()
    hung = asyncio.ensure_future(session.get(url, headers=headers))
    sim.faults.add("runpod", operation="ListPods", kind="timeout")
    await asyncio.sleep(0.1)
    started = time.monotonic()
    await sim.stop()
    assert time.monotonic() - started < 5
    with pytest.raises(aiohttp.ClientError):
        await hung


@pytest.mark.parametrize("variant", ["truncated", "wrong-types"])
async def test_malformed(sim: Simulator, session: aiohttp.ClientSession, variant: str) -> None:
    sim.faults.add("lambda", operation="listRegions", kind="malformed", variant=variant)
    url = sim.endpoint("lambda") + "/api/v1/regions"
    headers = {"Authorization": f"Bearer {sim.api_key('lambda')}"}
    async with session.get(url, headers=headers) as response:
        assert response.status == 200
        text = await response.text()
    if variant == "truncated":
        with pytest.raises(json.JSONDecodeError):
            json.loads(text)
    else:
        regions = json.loads(text)["data"]
        assert all(isinstance(r["name"], int) for r in regions)
    assert sim.ledger[-1].fault == "malformed"
    no_violations(sim)


def test_bad_fault_kinds_are_rejected() -> None:
    sim = Simulator()
    with pytest.raises(ValueError, match="kind"):
        sim.faults.add("lambda", kind="418")
    with pytest.raises(ValueError, match="variant"):
        sim.faults.add("lambda", kind="malformed", variant="xml")


# -- 5xx, resets and fault rates ---------------------------------------------------------


async def _raw_post(
    sim: Simulator, session: aiohttp.ClientSession, body: dict[str, object]
) -> tuple[int, str, str]:
    url = sim.endpoint("lambda") + "/api/v1/instance-operations/launch"
    headers = {"Authorization": f"Bearer {sim.api_key('lambda')}"}
    async with session.post(url, json=body, headers=headers) as response:
        return response.status, response.content_type, await response.text()


@pytest.mark.parametrize(("cloud", "path", "operation"), READS)
async def test_503_in_the_clouds_format_and_gateway_pages(
    sim: Simulator, session: aiohttp.ClientSession, cloud: str, path: str, operation: str
) -> None:
    api = CloudClient(sim, cloud, session)  # validates the 503 body against the error model
    sim.faults.add(cloud, operation=operation, kind="503")
    assert (await api.call("GET", path)).status == 503
    sim.faults.add(cloud, operation=operation, kind="502")
    sim.faults.add(cloud, operation=operation, kind="504")
    headers = {"Authorization": f"Bearer {sim.api_key(cloud)}"}
    for status in (502, 504):  # a load balancer's HTML page, not the API's JSON
        async with session.get(sim.endpoint(cloud) + path, headers=headers) as response:
            assert (response.status, response.content_type) == (status, "text/html")
            assert str(status) in await response.text()
    assert [e.fault for e in sim.ledger] == ["503", "502", "504"]
    no_violations(sim)


@pytest.mark.parametrize(("kind", "ran"), [("reset", False), ("timeout-before", False),
                                           ("drop", True), ("timeout", True)])  # fmt: skip
async def test_connection_dropped_before_or_after_the_operation_ran(
    sim: Simulator, session: aiohttp.ClientSession, kind: str, ran: bool
) -> None:
    sim.faults.add("lambda", operation="launchInstance", kind=kind, seconds=0.1)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await _raw_post(sim, session, LAUNCH)
    assert len(sim.instances("lambda")) == (1 if ran else 0)
    assert (sim.ledger[-1].status, sim.ledger[-1].fault) == (0, kind)


@pytest.mark.parametrize("kind", ["500-after", "502-after", "504-after"])
async def test_5xx_after_the_operation_ran(
    sim: Simulator, session: aiohttp.ClientSession, kind: str
) -> None:
    sim.faults.add("lambda", operation="launchInstance", kind=kind)
    status, _, _ = await _raw_post(sim, session, LAUNCH)
    assert status == int(kind[:3])
    assert [i.name for i in sim.instances("lambda")] == ["lost-answer"]  # it did launch
    no_violations(sim)


def test_operation_classes_from_each_clouds_operation_ids() -> None:
    assert [operation_class("POST", op) for op in
            ("launchInstance", "CreatePod", "machines-create", "startupScripts-create")] == [
        "create"] * 4  # fmt: skip
    assert operation_class("POST", "terminateInstance") == "delete"
    assert operation_class("DELETE", "DeletePod") == "delete"
    assert operation_class("DELETE", "machines-delete") == "delete"
    assert operation_class("GET", "ListPods") == "read"
    assert operation_class("POST", "StopPod") == "other"


def test_fault_rates_are_seeded_per_cloud_and_class() -> None:
    def draws(seed: int) -> list[str | None]:
        faults = Faults(seed)
        faults.set_rates("runpod", {"503": 0.1, "429": 0.05, "timeout": 0.02})
        faults.set_rates("runpod", {"drop": 0.5}, "create")
        out = []
        for _ in range(2000):
            fault = faults.take("runpod", "ListPods", "/v1/pods", "GET")
            out.append(fault.kind if fault else None)
        created = [faults.take("runpod", "CreatePod", "/v1/pods", "POST") for _ in range(200)]
        assert {f.kind for f in created if f} == {"drop"}  # the class's own rates
        assert 60 < sum(f is not None for f in created) < 140
        assert faults.take("lambda", "listRegions", "/api/v1/regions") is None  # other cloud
        return out

    first = draws(1)
    assert first == draws(1) and first != draws(2)
    shares = {kind: first.count(kind) / len(first) for kind in ("503", "429", "timeout")}
    assert 0.07 < shares["503"] < 0.13 and 0.03 < shares["429"] < 0.07, shares
    assert 0.005 < shares["timeout"] < 0.035, shares


def test_fault_rates_are_checked() -> None:
    faults = Faults()
    with pytest.raises(ValueError, match="more than 1"):
        faults.set_rates("lambda", {"500": 0.7, "503": 0.5})
    with pytest.raises(ValueError, match="kind"):
        faults.set_rates("lambda", {"418": 0.1})
    with pytest.raises(ValueError, match="operations"):
        faults.set_rates("lambda", {"500": 0.1}, "writes")
    faults.set_rates("lambda", {"500": 1.0})
    faults.set_rates("lambda", {})  # removes them
    assert faults.rates() == [] and faults.take("lambda", None, "/") is None


async def test_rated_429_carries_retry_after_only_where_the_cloud_documents_it(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    for cloud in ("lambda", "runpod"):
        sim.faults.set_rates(cloud, {"429": 1.0}, "read", retry_after=2.0)
    runpod = await CloudClient(sim, "runpod", session).call("GET", "/v1/pods")
    lam = await CloudClient(sim, "lambda", session).call("GET", "/api/v1/regions")
    assert (runpod.status, runpod.headers["Retry-After"]) == (429, "2")
    assert lam.status == 429 and "Retry-After" not in lam.headers
    assert {(s["cloud"], s["kind"], s["fired"]) for s in sim.faults.stats()} == {
        ("lambda", "429", 1), ("runpod", "429", 1)}  # fmt: skip
    no_violations(sim)


async def test_control_api_sets_rates_and_reports_billing(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    control = sim.control_url
    body = {"cloud": "lambda", "rates": {"503": 1.0}, "operations": "read", "seed": 4}
    async with session.post(control + "/fault-rates", json=body) as response:
        assert response.status == 200
    async with session.get(control + "/fault-rates") as response:
        [rates] = await response.json()
    assert (rates["cloud"], rates["operations"], rates["rates"]) == ("lambda", "read", {"503": 1.0})
    assert (await CloudClient(sim, "lambda", session).call("GET", "/api/v1/regions")).status == 503
    status, _, _ = await _raw_post(sim, session, LAUNCH)  # "create": not in the class
    assert status == 200
    async with session.get(control + "/billing?cloud=lambda") as response:
        [bill] = await response.json()
    assert bill["name"] == "lost-answer" and bill["billed_usd"] >= 0
    async with session.delete(control + "/faults") as response:
        assert response.status == 200
    assert sim.faults.rates() == []


async def test_an_outage_refuses_connections_then_the_cloud_is_back(sim: Simulator) -> None:
    url = sim.endpoint("lambda") + "/api/v1/regions"
    headers = {"Authorization": f"Bearer {sim.api_key('lambda')}"}
    async with aiohttp.ClientSession() as keep_alive:  # a connection opened before
        async with keep_alive.get(url, headers=headers) as response:
            assert response.status == 200
        await sim.outage("lambda", 0.5)
        with pytest.raises(aiohttp.ClientConnectionError):  # reset, unanswered
            async with keep_alive.get(url, headers=headers) as response:
                await response.read()
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as fresh:
        with pytest.raises(aiohttp.ClientConnectorError):  # ECONNREFUSED
            await fresh.get(url, headers=headers)
        await asyncio.sleep(0.6)
        async with fresh.get(url, headers=headers) as response:
            assert response.status == 200
    assert [e.fault for e in sim.ledger] == [None, "outage", None]
