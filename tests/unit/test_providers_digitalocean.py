"""DigitalOcean's driver pieces that need no cloud: error table, rate, tags, paging.

The driver's contract against the simulated cloud (every request and answer checked
against DigitalOcean's spec) is tests/integration/test_provider_contract.py; here, the
firewall it keeps per provider.
"""

from __future__ import annotations

import json

import aiohttp
import attrs
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
from gpuctl.providers.digitalocean import driver
from gpuctl.providers.digitalocean._generated import models
from gpuctl.providers.ratelimit import limits_for
from gpuctl.sim import SimConfig, Simulator

FAST = {"rateLimit": "unlimited", "retryAttempts": "1"}


def failure(status: int, ident: str, message: str) -> errors.HttpFailure:
    body = json.dumps({"id": ident, "message": message}).encode()
    return errors.HttpFailure("digitalocean", "p", "droplets_create", "POST", status, body)


@pytest.mark.parametrize(
    ("status", "ident", "message", "kind"),
    [
        (422, "unprocessable_entity", "Size is not available in this region.", CapacityError),
        (
            422,
            "unprocessable_entity",
            "There is not enough capacity for gpu-h100x8-640gb in nyc2.",
            CapacityError,
        ),
        (
            422,
            "unprocessable_entity",
            "creating this droplet will exceed your droplet limit",
            QuotaError,
        ),
        (
            422,
            "unprocessable_entity",
            "You specified an invalid image for Droplet creation.",
            InvalidRequestError,
        ),
        (401, "unauthorized", "Unable to authenticate you", AuthError),
        (403, "forbidden", "You do not have access for the attempted action.", AuthError),
        (404, "not_found", "The resource you requested could not be found.", NotFoundError),
        (429, "too_many_requests", "API Rate limit exceeded.", TransientError),
        (500, "server_error", "Server was unable to give you a response.", TransientError),
    ],
)
def test_error_table(status: int, ident: str, message: str, kind: type) -> None:
    error = errors.digitalocean_error(failure(status, ident, message))
    assert type(error) is kind and error.code == ident


def test_rate_limit_is_the_hourly_quota() -> None:
    limits = limits_for(DriverConfig(name="d", cloud="digitalocean", api_key="k"))
    assert limits.overall_per_second == pytest.approx(5000 / 3600)


def test_tags_are_what_digitalocean_accepts() -> None:
    assert driver._tags({"gpuctl.io/cluster": "e2e 1"}) == ["gpuctl-io-cluster:e2e-1"]
    assert driver._tag("gpuctl-my.provider") == "gpuctl-my-provider"


def test_paging_follows_the_next_link() -> None:
    links = models.converter.structure(
        {"pages": {"next": "https://x/v2/sizes?page=2"}}, models.PageLinks
    )
    assert driver._has_next(links)
    assert not driver._has_next(models.PageLinks(pages={"last": "x"}))
    assert not driver._has_next(None)


def sim_config(sim: Simulator, name: str, options: dict[str, str]) -> DriverConfig:
    return DriverConfig(
        name=name,
        cloud="digitalocean",
        api_key=sim.api_key("digitalocean"),
        endpoint=sim.endpoint("digitalocean"),
        options=options,
    )


async def test_one_firewall_per_provider_on_its_tag() -> None:
    async with (
        Simulator(SimConfig(seed=3, boot_seconds=0.0)) as sim,
        aiohttp.ClientSession() as session,
    ):
        options = {**FAST, "kubeletSourceCIDR": "10.0.0.0/8", "sshSourceCIDR": "10.1.0.0/16"}
        config = sim_config(sim, "p.1", options)
        do = registry.build_driver(config, session)
        sim.state.set_capacity("digitalocean", "tor1", "gpu-l40sx1-48gb", 3)
        [offer] = [
            o for o in await do.list_offers(gpu_type="L40S-48GB") if o.native_region == "tor1"
        ]
        for name in ("gpuctl-a", "gpuctl-b"):
            await do.launch(
                LaunchRequest(name=name, offer=offer, join=JoinData(script="#!/bin/sh\n"))
            )
        [firewall] = sim.state.cloud("digitalocean").objects["firewalls"].values()
        assert firewall["name"] == "gpuctl-p.1" and firewall["tags"] == ["gpuctl-p-1"]
        inbound = {
            (r["ports"], tuple(r["sources"]["addresses"])) for r in firewall["inbound_rules"]
        }
        assert inbound == {("10250", ("10.0.0.0/8",)), ("22", ("10.1.0.0/16",))}
        assert {r["protocol"] for r in firewall["outbound_rules"]} == {"tcp", "udp", "icmp"}
        assert all("gpuctl-p-1" in i.request["tags"] for i in sim.instances("digitalocean"))
        off = registry.build_driver(
            attrs.evolve(config, name="q", options={**FAST, "firewall": "false"}), session
        )
        await off.launch(LaunchRequest(name="gpuctl-c", offer=offer, join=JoinData()))
        assert len(sim.state.cloud("digitalocean").objects["firewalls"]) == 1
        assert not sim.violations


async def test_amd_mi300x_sizes_are_offered() -> None:
    """`gpu_info.model` amd_mi300x is MI300X-192GB (no longer skipped as unknown)."""
    async with (
        Simulator(SimConfig(seed=3, boot_seconds=0.0)) as sim,
        aiohttp.ClientSession() as session,
    ):
        do = registry.build_driver(sim_config(sim, "p", FAST), session)
        offers = await do.list_offers(gpu_type="MI300X-192GB")
        assert {(o.instance_type, o.gpu_count) for o in offers} == {("gpu-mi300x1-192gb", 1)}
        assert {str(o.price_per_hour) for o in offers} == {"1.99"}  # price_hourly
        assert not sim.violations
