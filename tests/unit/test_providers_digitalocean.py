"""DigitalOcean's driver pieces that need no cloud: error table, rate, tags, paging.

The driver against a cloud that checks every request and answer against DigitalOcean's
spec is in tests/integration/test_provider_contract.py (the simulated cloud).
"""

from __future__ import annotations

import json

import pytest

from gpuctl.providers import errors
from gpuctl.providers.base import (
    AuthError,
    CapacityError,
    DriverConfig,
    InvalidRequestError,
    NotFoundError,
    QuotaError,
    TransientError,
)
from gpuctl.providers.digitalocean import driver
from gpuctl.providers.digitalocean._generated import models
from gpuctl.providers.ratelimit import limits_for


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
