"""The Crusoe driver's own decisions, against the simulated Crusoe (spec-checked).

The contract suite (tests/integration/test_provider_contract.py) covers what every
driver does; here: the create's operation followed to its end (capacity, failed
provisioning, still in progress), the credential format, the SSH key, and the offers
built from the dated table and `GET /capacities`.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path

import aiohttp
import attrs
import pytest
import yaml

from gpuctl.cli.main import main
from gpuctl.providers import registry
from gpuctl.providers.base import (
    AuthError,
    CapacityError,
    CapacityType,
    Driver,
    DriverConfig,
    InstanceState,
    InvalidRequestError,
    JoinData,
    LaunchOutcomeUnknownError,
    LaunchRequest,
    Offer,
)
from gpuctl.providers.crusoe.driver import CrusoeDriver, shipped_prices
from gpuctl.sim import SimConfig, Simulator

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGdwdWN0bCB0ZXN0IGtleQ gpuctl"
FAST = {"rateLimit": "unlimited", "retryAttempts": "2", "retryBaseSeconds": "0.01"}
OFFER = Offer(
    provider="crusoe",
    cloud="crusoe",
    region="us-east",
    native_region="us-east1-a",
    gpu_type="A100-80GB",
    gpu_count=1,
    instance_type="a100-80gb.1x",
    capacity_type=CapacityType.ON_DEMAND,
    price_per_hour=Decimal("2.00"),
)
SCRIPT = JoinData(script="#!/bin/bash\necho join\n")


@pytest.fixture(scope="module")
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(seed=3, boot_seconds=0.3, terminate_seconds=0.0)) as s:
        yield s


@pytest.fixture(scope="module")
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture(autouse=True)
def clean(sim: Simulator) -> Iterator[None]:
    sim.reset()
    yield
    assert sim.violations == []


def driver(sim: Simulator, session: aiohttp.ClientSession, **options: str) -> Driver:
    api_key = options.pop("api_key", sim.api_key("crusoe"))
    config = DriverConfig(
        name="crusoe",
        cloud="crusoe",
        api_key=api_key,
        endpoint=sim.endpoint("crusoe"),
        options={**FAST, "sshPublicKey": KEY, **options},
    )
    return registry.build_driver(config, session)


async def test_create_follows_its_operation_to_the_running_vm(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    found = await driver(sim, session).launch(LaunchRequest(name="c-ok", offer=OFFER, join=SCRIPT))
    assert (found.state, found.native_state) == (InstanceState.RUNNING, "STATE_RUNNING")
    (vm,) = sim.instances("crusoe")
    assert vm.join_script == SCRIPT.script
    assert vm.request["reservation_specification"] == {"selection_strategy": "on_demand"}
    assert vm.request["ssh_public_key"] == KEY
    polls = [e for e in sim.ledger if e.operation == "getComputeVMsInstancesOperation"]
    assert polls and all(e.status == 200 for e in polls)


async def test_no_capacity_is_a_capacity_error_and_leaves_nothing(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    sim.state.set_capacity("crusoe", "us-east1-a", "a100-80gb.1x", 0)
    with pytest.raises(CapacityError, match="out_of_stock"):
        await driver(sim, session).create(LaunchRequest(name="c-full", offer=OFFER, join=SCRIPT))
    assert sim.instances("crusoe") == []


async def test_failed_provisioning_returns_the_failed_vm(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    """The operation FAILED but a VM is left (billed): it is returned, FAILED, so the
    controller replaces and terminates it rather than forgetting it."""
    sim.state.fail_next_boots("crusoe", 1, "hypervisor error")
    found = await driver(sim, session).create(LaunchRequest(name="c-bad", offer=OFFER))
    assert (found.state, found.native_state) == (InstanceState.FAILED, "STATE_BLOCKED")


async def test_an_operation_still_running_is_settled_by_name(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    crusoe = driver(sim, session, operationWaitSeconds="0")
    request = LaunchRequest(name="c-slow", offer=OFFER)
    booting = await crusoe.create(request)
    assert booting.state is InstanceState.PENDING  # listed while the operation runs
    sim.state.set_list_lag("crusoe", 60)
    lagging = LaunchRequest(name="c-lagging", offer=OFFER)
    with pytest.raises(LaunchOutcomeUnknownError, match="IN_PROGRESS"):
        await crusoe.create(lagging)
    # Asked again, the driver reads the first create's operation instead of a second POST:
    # still running, the outcome stays unknown; ended, its VM is the answer.
    try:
        again = await crusoe.create(lagging)
    except LaunchOutcomeUnknownError:
        await asyncio.sleep(0.4)  # the VM boots in 0.3 s: its operation then SUCCEEDED
        again = await crusoe.create(lagging)
    assert again.name == "c-lagging" and again.state is InstanceState.RUNNING
    assert len(sim.instances("crusoe")) == 2
    assert len([e for e in sim.ledger if e.operation == "createInstance"]) == 2


async def test_credentials_and_ssh_key(sim: Simulator, session: aiohttp.ClientSession) -> None:
    with pytest.raises(AuthError, match="access key ID"):  # not a Crusoe credential
        await driver(sim, session, api_key="just-a-token").validate_credentials()
    assert sim.ledger == []  # refused before anything was sent
    key_id = sim.api_key("crusoe").split(":")[0]
    wrong = driver(sim, session, api_key=f"{key_id}:d3Jvbmctc2VjcmV0")
    with pytest.raises(AuthError):
        await wrong.validate_credentials()
    await driver(sim, session).validate_credentials()
    other = driver(sim, session, projectId="00000000-0000-4000-8000-000000000000")
    with pytest.raises(InvalidRequestError, match="not a project of this account"):
        await other.validate_credentials()
    no_key = driver(sim, session, sshPublicKey="")
    with pytest.raises(InvalidRequestError, match="sshPublicKey"):
        await no_key.launch(LaunchRequest(name="c-key", offer=OFFER))
    spot = LaunchRequest(name="c-spot", offer=attrs.evolve(OFFER, capacity_type=CapacityType.SPOT))
    with pytest.raises(InvalidRequestError, match="spot"):
        await driver(sim, session).launch(spot)
    assert [e.method for e in sim.ledger if e.operation == "createInstance"] == []


async def test_offers_from_the_dated_table_and_capacities(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    table = shipped_prices()
    assert table.source and table.date.year >= 2026
    sim.state.set_capacity("crusoe", "eu-iceland1-a", "a100-80gb.1x", 0)
    crusoe = driver(sim, session)
    assert isinstance(crusoe, CrusoeDriver)
    offers = await crusoe.list_offers(gpu_type="A100-80GB", gpu_count=1)
    by_region = {(o.native_region, o.instance_type): o for o in offers}
    assert by_region[("us-east1-a", "a100-80gb.1x")].available
    assert not by_region[("eu-iceland1-a", "a100-80gb.1x")].available
    assert by_region[("us-east1-a", "a100-80gb.1x")].price_per_hour == table.prices["a100-80gb.1x"]
    assert {o.capacity_type for o in offers} == {CapacityType.ON_DEMAND}
    # A type in the table the simulated Crusoe does not sell: no capacity entry, offered
    # as unavailable.
    eight = await crusoe.list_offers(gpu_type="A100-80GB", gpu_count=8)
    assert not {(o.instance_type, o.available) for o in eight} & {("a100-80gb-sxm-ib.8x", True)}
    # AMD MI300X: eight a VM at the table's price, sold by the simulated Crusoe too.
    amd = await crusoe.list_offers(gpu_type="MI300X-192GB")
    assert {(o.instance_type, o.gpu_count, o.price_per_hour) for o in amd} == {
        ("mi300x-192gb-ib.8x", 8, table.prices["mi300x-192gb-ib.8x"])
    }
    assert any(o.available for o in amd)


async def test_gpuctl_offers_shows_crusoe(sim: Simulator, tmp_path: Path) -> None:
    """`gpuctl offers --config FILE` (in-process, in a thread: it runs its own loop)."""
    config = {
        "providers": [
            {
                "name": "crusoe",
                "type": "crusoe",
                "endpoint": sim.endpoint("crusoe"),
                "apiKey": sim.api_key("crusoe"),
                "options": {"rateLimit": "unlimited"},
            }
        ]
    }
    path = tmp_path / "providers.yaml"
    path.write_text(yaml.safe_dump(config))
    argv = ["offers", "--config", str(path), "--gpu", "A100-80GB", "--available", "-o", "json"]

    def call() -> tuple[int, str]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(argv)
        return code, out.getvalue()

    code, out = await asyncio.to_thread(call)
    assert code == 0, out
    offers = json.loads(out)["offers"]
    assert {(o["provider"], o["instanceType"]) for o in offers} >= {
        ("crusoe", "a100-80gb.1x"),
        ("crusoe", "a100-80gb.8x"),
    }


async def test_a_create_abandoned_while_following_its_operation_sends_no_second_post(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    """The launch step cancels a create at its deadline (`launch.create_within`): the
    operation it was following is kept, and the next create reads it, no second POST."""
    crusoe = driver(sim, session, operationWaitSeconds="600")
    sim.state.set_list_lag("crusoe", 60)
    request = LaunchRequest(name="c-abandoned", offer=OFFER)
    task = asyncio.ensure_future(crusoe.create(request))
    for _ in range(2000):  # until the POST was answered (no wall-clock bound asserted)
        if any(e.operation == "createInstance" for e in sim.ledger):
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.4)  # the VM boots in 0.3 s: its operation then SUCCEEDED
    again = await crusoe.create(request)
    assert again.name == "c-abandoned"
    assert len([e for e in sim.ledger if e.operation == "createInstance"]) == 1
