"""`gpuctl offers`: gathering (failures listed, never raised), filters, order, output."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import attrs
import pytest

from gpuctl.cli import offers
from gpuctl.cli.main import main
from gpuctl.controllers.drivers import ProviderUnavailableError
from gpuctl.providers.base import AuthError, CapacityType, Driver, Offer


def offer(provider: str, price: str, capacity: str = "on-demand", **kw: Any) -> Offer:
    fields: dict[str, Any] = {
        "provider": provider,
        "cloud": "lambda",
        "region": "us-east",
        "native_region": "us-east-1",
        "gpu_type": "H100-80GB",
        "gpu_count": 8,
        "instance_type": "gpu_8x_h100_sxm5",
        "capacity_type": CapacityType(capacity),
        "price_per_hour": Decimal(price),
    }
    fields.update(kw)
    return Offer(**fields)


@attrs.define
class FakeDriver:
    name: str
    answer: list[Offer] | Exception
    calls: list[tuple[str | None, int | None]] = attrs.field(factory=list)

    async def list_offers(
        self, *, gpu_type: str | None = None, gpu_count: int | None = None
    ) -> list[Offer]:
        self.calls.append((gpu_type, gpu_count))
        if isinstance(self.answer, Exception):
            raise self.answer
        if self.name == "slow":
            await asyncio.sleep(10)
        return self.answer


@attrs.define
class FakeDrivers:
    drivers: dict[str, FakeDriver]

    def names(self) -> list[str]:
        return sorted(self.drivers)

    def get(self, name: str) -> Driver:
        if name == "nosecret":
            raise ProviderUnavailableError(
                "SecretNotFound", "Secret gpuctl-system/x does not exist"
            )
        found: Any = self.drivers[name]
        return found  # type: ignore[no-any-return]


async def test_gather_lists_every_failure_and_keeps_the_answers() -> None:
    good = FakeDriver("good", [offer("good", "2")])
    drivers = FakeDrivers(
        {
            "good": good,
            "bad": FakeDriver("bad", AuthError("invalid key")),
            "slow": FakeDriver("slow", []),
            "broken": FakeDriver("broken", RuntimeError("bug in a driver")),
        }
    )
    found, failures = await offers.gather(
        drivers,
        ["good", "bad", "slow", "broken", "nosecret"],
        gpu_type="H100-80GB",
        gpu_count=8,
        wait=0.05,
    )
    assert found == [offer("good", "2")]
    assert good.calls == [("H100-80GB", 8)]  # filtered at the driver, as the offer step does
    assert [(f.provider, f.reason) for f in failures] == [
        ("bad", "AuthError"),
        ("slow", "Timeout"),
        ("broken", "RuntimeError"),
        ("nosecret", "SecretNotFound"),
    ]
    assert failures[0].to_json() == {
        "provider": "bad",
        "reason": "AuthError",
        "message": "invalid key",
    }


def test_keep_filters_and_sorts_cheapest_first() -> None:
    listed = [
        offer("b", "9.552", "spot", region="eu-north", native_region="EU-SE-1"),
        offer("a", "23.92"),
        offer("a", "9.552", "on-demand", region="us-west"),
        offer("c", "9.552", "spot", available=False),
        offer("a", "1.00", "spot", region="us-west"),
    ]
    every = offers.keep(listed, spot=False, regions=[], available=False)
    assert [(o.provider, str(o.price_per_hour), o.capacity_type.value) for o in every] == [
        ("a", "1.00", "spot"),
        ("a", "9.552", "on-demand"),  # same money: on-demand first
        ("b", "9.552", "spot"),
        ("c", "9.552", "spot"),
        ("a", "23.92", "on-demand"),
    ]
    spot = offers.keep(listed, spot=True, regions=[], available=True)
    assert [o.provider for o in spot] == ["a", "b"]
    west = offers.keep(listed, spot=False, regions=["us-west"], available=False)
    assert {o.region for o in west} == {"us-west"}


def test_json_and_table() -> None:
    spot = offer("runpod", "9.552", "spot", cloud="runpod", available=False)
    assert offers.offer_json(spot) == {
        "provider": "runpod",
        "cloud": "runpod",
        "region": "us-east",
        "nativeRegion": "us-east-1",
        "gpuType": "H100-80GB",
        "gpuCount": 8,
        "instanceType": "gpu_8x_h100_sxm5",
        "capacityType": "spot",
        "pricePerHour": "9.552",
        "available": False,
    }
    failure = offers.ProviderFailure("px", "AuthError", "invalid key")
    lines = offers.render([spot], [failure]).splitlines()
    assert lines[0].split()[:3] == ["PROVIDER", "REGION", "NATIVE-REGION"]
    assert lines[1].split()[-3:] == ["spot", "9.552", "no"]
    assert lines[3].split() == ["PROVIDER", "ERROR", "MESSAGE"]
    assert lines[4].split() == ["px", "AuthError", "invalid", "key"]
    assert offers.render([], []) == "No offers.\n"


def test_bad_flags_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["offers", "--gpu", "H200-1TB", "--config", "/nonexistent"]) == 2
    assert "unknown GPU type 'H200-1TB'" in capsys.readouterr().err
    assert main(["offers", "--config", "/nonexistent/providers.yaml"]) == 2
    assert "cannot read /nonexistent/providers.yaml" in capsys.readouterr().err
