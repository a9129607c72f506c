"""Checks against the REAL Hyperstack Infrahub API; skipped without credentials.

    HYPERSTACK_API_KEY=... .venv/bin/pytest -m realcloud tests/realcloud/test_real_hyperstack.py

Read-only unless GPUCTL_REAL_LAUNCH=1: then the cheapest available 1-GPU flavor is
launched under a unique name and deleted at once (a few cents; check the account
afterwards all the same). A launch creates the environment gpuctl-<region> when it is
missing (environments are free and kept) and needs a key pair there:
GPUCTL_HYPERSTACK_OPTIONS=sshPublicKey=<an OpenSSH public key> (or sshKeyName=<name>).
Options come as k=v,k=v, as for the other clouds (tests/realcloud/test_real_providers.py).

Beyond the shared checks, this proves on the real API what the simulator assumes: the
`api_key` header is accepted and a wrong key is refused, every flavor gets a price from
/pricebook (per flavor, or per GPU times the count), and the answers fit the spec's
models (the driver structures them strictly).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator

import aiohttp
import pytest

from gpuctl.providers import registry
from gpuctl.providers.base import AuthError, Driver, DriverConfig, JoinData, LaunchRequest
from tests.realcloud.test_real_providers import options

pytestmark = pytest.mark.realcloud

KEY = "HYPERSTACK_API_KEY"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def hyperstack(session: aiohttp.ClientSession, api_key: str | None = None) -> Driver:
    key = api_key or os.environ.get(KEY)
    if not key:
        pytest.skip(f"{KEY} is not set")
    config = DriverConfig(
        name="real-hyperstack", cloud="hyperstack", api_key=key, options=options("hyperstack")
    )
    return registry.build_driver(config, session)


async def test_the_key_is_accepted_and_a_wrong_one_is_not(session: aiohttp.ClientSession) -> None:
    await hyperstack(session).validate_credentials()
    with pytest.raises(AuthError):
        await hyperstack(session, "not-a-hyperstack-key").validate_credentials()


async def test_flavors_are_priced_from_the_pricebook(session: aiohttp.ClientSession) -> None:
    offers = await hyperstack(session).list_offers()
    assert offers, "no GPU flavor gpuctl knows, or none with a pricebook rate"
    for offer in offers:
        assert offer.price_per_hour > 0 and offer.gpu_count >= 1


async def test_vms_are_listed(session: aiohttp.ClientSession) -> None:
    for instance in await hyperstack(session).list_instances("gpuctl-"):
        assert instance.name.startswith("gpuctl-")


@pytest.mark.skipif(os.environ.get("GPUCTL_REAL_LAUNCH") != "1", reason="GPUCTL_REAL_LAUNCH!=1")
async def test_launch_and_terminate(session: aiohttp.ClientSession) -> None:
    driver = hyperstack(session)
    offers = [o for o in await driver.list_offers(gpu_count=1) if o.available]
    if not offers:
        pytest.skip("hyperstack: no 1-GPU flavor in stock now")
    name = f"gpuctl-realtest-{secrets.token_hex(4)}"
    script = "#cloud-config\nruncmd: [[true]]\n"
    launched = await driver.launch(
        LaunchRequest(name=name, offer=offers[0], join=JoinData(script=script))
    )
    try:
        assert (await driver.find(name)) is not None
        assert (await driver.get(launched.id)).name == name
    finally:
        await driver.terminate(launched.id)
