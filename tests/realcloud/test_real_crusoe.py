"""Checks against the REAL Crusoe Cloud API; skipped without credentials.

    CRUSOE_ACCESS_KEY_ID=... CRUSOE_SECRET_KEY=... \
        .venv/bin/pytest -m realcloud tests/realcloud/test_real_crusoe.py

(the variable names of Crusoe's own CLI). Read-only unless GPUCTL_REAL_LAUNCH=1: then the
cheapest available 1-GPU offer is launched under a unique name and terminated at once
(a few cents; check the account afterwards all the same); that needs
GPUCTL_CRUSOE_OPTIONS=sshPublicKey=<an OpenSSH public key> and, for an account with
several projects, projectId=<id>. Options come as k=v,k=v, as for the other clouds
(tests/realcloud/test_real_providers.py). Default rate limits apply.

Beyond what the other clouds' checks do, this one proves on the real API what the
simulator can only assume: that the HMAC signature is accepted (a signed GET), that a
wrongly signed request is refused with 401, and that Crusoe's answers fit the converted
spec's models (the driver structures them strictly).
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

KEY_ID, SECRET = "CRUSOE_ACCESS_KEY_ID", "CRUSOE_SECRET_KEY"


def credential() -> str:
    key_id, secret = os.environ.get(KEY_ID), os.environ.get(SECRET)
    if not key_id or not secret:
        pytest.skip(f"{KEY_ID} and {SECRET} are not set")
    return f"{key_id}:{secret}"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def crusoe(session: aiohttp.ClientSession, api_key: str) -> Driver:
    config = DriverConfig(
        name="real-crusoe", cloud="crusoe", api_key=api_key, options=options("crusoe")
    )
    return registry.build_driver(config, session)


async def test_signed_requests_are_accepted_and_a_bad_signature_is_not(
    session: aiohttp.ClientSession,
) -> None:
    key = credential()
    await crusoe(session, key).validate_credentials()
    key_id, _, secret = key.partition(":")
    forged = secret[:-2] + ("AA" if not secret.endswith("AA") else "BB")
    with pytest.raises(AuthError):
        await crusoe(session, f"{key_id}:{forged}").validate_credentials()


async def test_offers_and_instances_are_read(session: aiohttp.ClientSession) -> None:
    driver = crusoe(session, credential())
    offers = await driver.list_offers()
    assert offers, "no offer at all: is the price table's VM type list still Crusoe's?"
    assert all(o.price_per_hour > 0 and o.gpu_count >= 1 for o in offers)
    for instance in await driver.list_instances("gpuctl-"):
        assert instance.name.startswith("gpuctl-")


@pytest.mark.skipif(os.environ.get("GPUCTL_REAL_LAUNCH") != "1", reason="GPUCTL_REAL_LAUNCH!=1")
async def test_launch_through_the_operation_and_terminate(session: aiohttp.ClientSession) -> None:
    driver = crusoe(session, credential())
    offers = [o for o in await driver.list_offers(gpu_count=1) if o.available]
    if not offers:
        pytest.skip("crusoe: no 1-GPU offer available now")
    name = f"gpuctl-realtest-{secrets.token_hex(4)}"
    launched = await driver.launch(
        LaunchRequest(name=name, offer=offers[0], join=JoinData(script="#!/bin/sh\ntrue\n"))
    )
    try:
        assert (await driver.find(name)) is not None
        assert (await driver.get(launched.id)).name == name
    finally:
        await driver.terminate(launched.id)
