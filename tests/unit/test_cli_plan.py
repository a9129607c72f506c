"""`gpuctl plan`: reading requests, the rebuilt capacity cache, and the controller's choice."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest

from gpuctl.api import GPUNodeRequest
from gpuctl.cli import plan
from gpuctl.cli.config import ConfigError
from gpuctl.controllers.request.offer import want_of
from gpuctl.controllers.selection import select
from gpuctl.providers.base import TransientError
from tests.unit.test_cli_offers import FakeDriver, FakeDrivers, offer

NOW = datetime.datetime(2025, 6, 1, 12, 0, tzinfo=datetime.UTC)
SAMPLES = Path(__file__).parents[2] / "manifests" / "samples"


def request_obj(
    name: str = "r", failed: list[dict[str, Any]] | None = None, **spec: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "gpuctl.io/v1alpha1",
        "kind": "GPUNodeRequest",
        "metadata": {"name": name, "uid": f"uid-{name}"},
        "spec": {"gpu": {"type": "H100-80GB", "count": 8}, **spec},
    }
    if failed is not None:
        body["status"] = {"failedOffers": failed}
    return body


def failed(provider: str, region: str, capacity: str, reason: str, age: float) -> dict[str, Any]:
    at = NOW - datetime.timedelta(seconds=age)
    return {
        "provider": provider,
        "region": region,
        "instanceType": "t",
        "capacityType": capacity,
        "reason": reason,
        "at": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def test_read_requests_takes_only_gpunoderequests() -> None:
    text = "\n---\n".join(
        (SAMPLES / f).read_text()
        for f in ("provider-lambda.yaml", "h100x8-spot.yaml", "rtx4090x2-spot.yaml")
    )
    assert [r.name for r in plan.read_requests(text)] == ["h100x8-spot", "rtx4090x2-spot"]
    with pytest.raises(ConfigError, match="no GPUNodeRequest"):
        plan.read_requests((SAMPLES / "provider-lambda.yaml").read_text())
    with pytest.raises(ConfigError, match="document 1"):
        plan.read_requests("kind: GPUNodeRequest\nmetadata: {name: x}\nspec: {gpu: 3}\n")
    with pytest.raises(ConfigError, match="not YAML"):
        plan.read_requests("kind: [")


def test_capacity_is_rebuilt_from_recent_failures() -> None:
    requests = [
        request_obj(
            "a",
            [
                failed("lambda", "us-east-1", "on-demand", "CapacityError", age=10),
                failed("lambda", "us-west-1", "on-demand", "CapacityError", age=200),  # expired
                failed("runpod", "US-GA-1", "spot", "Interrupted", age=30),
                failed("runpod", "US-TX-3", "on-demand", "Interrupted", age=30),  # not marked
                failed("paperspace", "ny2", "on-demand", "RegistrationTimeout", age=179),
            ],
        ),
        {"kind": "GPUNodeRequest", "metadata": {"name": "broken"}, "spec": {}},  # skipped
    ]
    cache = plan.capacity_from(requests, 180, NOW)
    keys = {(e.provider, e.native_region, e.gpu_type, e.capacity_type) for e in cache.entries()}
    assert keys == {
        ("lambda", "us-east-1", "H100-80GB", "on-demand"),
        ("runpod", "US-GA-1", "H100-80GB", "spot"),
        ("paperspace", "ny2", "H100-80GB", "on-demand"),
    }
    left = {e.provider: round(e.expires_in) for e in cache.entries()}
    assert left == {"lambda": 170, "runpod": 150, "paperspace": 1}
    blocked = offer("lambda", "1", native_region="us-east-1", gpu_count=1)  # any count
    assert cache.blocked(blocked)
    assert not cache.blocked(offer("lambda", "1", native_region="us-west-1"))


async def test_plan_is_the_controllers_selection() -> None:
    request = GPUNodeRequest.from_dict(
        request_obj(
            capacityType="spot-or-on-demand", maxPricePerHour="25", providers=["a", "b", "c"]
        )
    )
    listed = {
        "a": [offer("a", "23.92"), offer("a", "30")],
        "b": [offer("b", "9.552", "spot", native_region="US-GA-1")],
    }
    drivers = FakeDrivers(
        {
            "a": FakeDriver("a", listed["a"]),
            "b": FakeDriver("b", listed["b"]),
            "c": FakeDriver("c", TransientError("HTTP 503")),
        }
    )
    cache = plan.capacity_from(
        [request_obj("x", [failed("b", "US-GA-1", "spot", "CapacityError", age=5)])], 180, NOW
    )
    result = await plan.plan_one(request, drivers, cache)
    expected = select(want_of(request), listed["a"] + listed["b"], cache.blocked)
    assert result.selection.ranked == expected.ranked
    assert result.selection.chosen == offer("a", "23.92")
    reasons = {
        r.offer.provider + r.offer.price_per_hour.to_eng_string(): r.reason
        for r in result.selection.rejected
    }
    assert reasons == {
        "a30": "$30.00/h is over the $25.00/h cap",
        "b9.552": "recent capacity error (cached)",
    }
    assert result.unavailable == (("c", "TransientError: HTTP 503"),)
    data = plan.plan_json(result)
    assert data["chosen"]["pricePerHour"] == "23.92"
    assert data["want"] == {
        "gpuType": "H100-80GB",
        "gpuCount": 8,
        "capacityType": "spot-or-on-demand",
        "maxPricePerHour": "25",
        "providers": ["a", "b", "c"],
        "regions": [],
        "placement": "cheapest",
    }
    assert [r["reason"] for r in data["rejected"]] == [r.reason for r in result.selection.rejected]
    assert data["unavailable"] == [{"provider": "c", "message": "TransientError: HTTP 503"}]
    assert data["blocked"][0]["provider"] == "b"
    text = plan.render(result)
    assert text.startswith("r: H100-80GB x8 under $25.00/h\nCHOSEN: a gpu_8x_h100_sxm5")
    assert "unavailable: c: TransientError: HTTP 503" in text
    assert "blocked: b US-GA-1 H100-80GB spot (CapacityError" in text


async def test_nothing_fits_and_unknown_gpu() -> None:
    request = GPUNodeRequest.from_dict(request_obj(maxPricePerHour="5", providers=["a"]))
    drivers = FakeDrivers({"a": FakeDriver("a", [offer("a", "23.92")])})
    result = await plan.plan_one(request, drivers, plan.capacity_from([], 180, NOW))
    assert result.selection.chosen is None
    assert result.selection.message.startswith("no H100-80GB x8 on-demand under $5.00/h")
    assert plan.render(result).splitlines()[1].startswith("NO OFFER: no H100-80GB")
    odd = GPUNodeRequest.from_dict(request_obj(gpu={"type": "Z9-1GB", "count": 1}))
    result = await plan.plan_one(odd, drivers, plan.capacity_from([], 180, NOW))
    assert result.selection.chosen is None
    assert result.selection.message.startswith("unknown GPU type 'Z9-1GB'; known: ")
    assert plan.plan_json(result)["ranked"] == []
