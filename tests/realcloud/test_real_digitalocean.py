"""Checks against the REAL DigitalOcean API; skipped without credentials.

    DIGITALOCEAN_ACCESS_TOKEN=... .venv/bin/pytest -m realcloud \
        tests/realcloud/test_real_digitalocean.py

(the variable doctl reads). Read-only unless GPUCTL_REAL_LAUNCH=1: then the cheapest
available 1-GPU Droplet size is launched under a unique name and destroyed at once (GPU
Droplets bill per second, with a minimum; check the account afterwards all the same).
The launch uses the account's first SSH key (or GPUCTL_DIGITALOCEAN_OPTIONS=sshKeys=<id>)
and creates the Cloud Firewall gpuctl-real-digitalocean when missing (kept: delete it by
hand). Options come as k=v,k=v (tests/realcloud/test_real_providers.py).

Beyond the shared checks, this proves on the real API what the simulator assumes: GPU
sizes carry gpu_info and price_hourly, a GPU Droplet is found by name only with
type=gpus, a wrong token is refused, and the answers fit the spec's models.
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

KEY = "DIGITALOCEAN_ACCESS_TOKEN"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def digitalocean(session: aiohttp.ClientSession, api_key: str | None = None) -> Driver:
    key = api_key or os.environ.get(KEY)
    if not key:
        pytest.skip(f"{KEY} is not set")
    config = DriverConfig(
        name="real-digitalocean",
        cloud="digitalocean",
        api_key=key,
        options=options("digitalocean"),
    )
    return registry.build_driver(config, session)


async def test_the_token_is_accepted_and_a_wrong_one_is_not(
    session: aiohttp.ClientSession,
) -> None:
    await digitalocean(session).validate_credentials()
    with pytest.raises(AuthError):
        await digitalocean(session, "not-a-digitalocean-token").validate_credentials()


async def test_gpu_sizes_are_offered_with_their_hourly_price(
    session: aiohttp.ClientSession,
) -> None:
    offers = await digitalocean(session).list_offers()
    assert offers, "no GPU Droplet size gpuctl knows"
    for offer in offers:
        assert offer.price_per_hour > 0 and offer.instance_type.startswith("gpu-")


async def test_gpu_droplets_are_listed(session: aiohttp.ClientSession) -> None:
    for instance in await digitalocean(session).list_instances("gpuctl-"):
        assert instance.name.startswith("gpuctl-")


@pytest.mark.skipif(os.environ.get("GPUCTL_REAL_LAUNCH") != "1", reason="GPUCTL_REAL_LAUNCH!=1")
async def test_launch_and_terminate(session: aiohttp.ClientSession) -> None:
    driver = digitalocean(session)
    offers = [o for o in await driver.list_offers(gpu_count=1) if o.available]
    if not offers:
        pytest.skip("digitalocean: no 1-GPU size available now")
    name = f"gpuctl-realtest-{secrets.token_hex(4)}"
    script = "#cloud-config\nruncmd: [[true]]\n"
    launched = await driver.launch(
        LaunchRequest(name=name, offer=offers[0], join=JoinData(script=script))
    )
    try:
        assert (await driver.find(name)) is not None  # type=gpus&name=...
        assert (await driver.get(launched.id)).name == name
    finally:
        await driver.terminate(launched.id)
