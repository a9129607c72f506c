"""Read-only checks against the REAL cloud APIs; skipped without credentials.

    LAMBDA_API_KEY=... RUNPOD_API_KEY=... PAPERSPACE_API_KEY=... \
        .venv/bin/pytest -m realcloud tests/realcloud

Each cloud runs only when its key is set. Nothing here creates anything unless
GPUCTL_REAL_LAUNCH=1 is set too: then the cheapest available 1-GPU offer of each cloud is
launched under a unique name and terminated at once (a few cents; check your account
afterwards all the same). Extra driver options come from GPUCTL_<CLOUD>_OPTIONS as
k=v,k=v (e.g. GPUCTL_RUNPOD_OPTIONS=imageName=ubuntu:22.04, or sshKeyName for Lambda).
The default rate limits apply: these tests are slow on purpose.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator

import aiohttp
import pytest

from gpuctl.providers import registry
from gpuctl.providers.base import Driver, DriverConfig, JoinData, LaunchRequest

pytestmark = pytest.mark.realcloud

KEYS = {"lambda": "LAMBDA_API_KEY", "runpod": "RUNPOD_API_KEY", "paperspace": "PAPERSPACE_API_KEY"}


def options(cloud: str) -> dict[str, str]:
    raw = os.environ.get(f"GPUCTL_{cloud.upper()}_OPTIONS", "")
    pairs = [item.split("=", 1) for item in raw.split(",") if "=" in item]
    return {k.strip(): v.strip() for k, v in pairs}


@pytest.fixture(params=sorted(KEYS))
async def driver(request: pytest.FixtureRequest) -> AsyncIterator[Driver]:
    cloud = str(request.param)
    key = os.environ.get(KEYS[cloud])
    if not key:
        pytest.skip(f"{KEYS[cloud]} is not set")
    async with aiohttp.ClientSession() as session:
        config = DriverConfig(
            name=f"real-{cloud}", cloud=cloud, api_key=key, options=options(cloud)
        )
        yield registry.build_driver(config, session)


async def test_credentials_are_accepted(driver: Driver) -> None:
    await driver.validate_credentials()


async def test_offers_are_listed(driver: Driver) -> None:
    offers = await driver.list_offers()
    assert offers, f"{driver.cloud}: no offer at all"
    for offer in offers:
        assert offer.price_per_hour >= 0 and offer.gpu_count >= 1


async def test_instances_are_listed(driver: Driver) -> None:
    for instance in await driver.list_instances("gpuctl-"):
        assert instance.name.startswith("gpuctl-")


@pytest.mark.skipif(os.environ.get("GPUCTL_REAL_LAUNCH") != "1", reason="GPUCTL_REAL_LAUNCH!=1")
async def test_launch_and_terminate(driver: Driver) -> None:
    offers = [o for o in await driver.list_offers(gpu_count=1) if o.available]
    if not offers:
        pytest.skip(f"{driver.cloud}: no 1-GPU offer available now")
    name = f"gpuctl-realtest-{secrets.token_hex(4)}"
    launched = await driver.launch(
        LaunchRequest(name=name, offer=offers[0], join=JoinData(script="#!/bin/sh\ntrue\n"))
    )
    try:
        assert (await driver.find(name)) is not None
        assert (await driver.get(launched.id)).name == name
    finally:
        await driver.terminate(launched.id)
