"""PriceCache single flight, TTL and key separation; PriceTable; the capacity cache."""

from __future__ import annotations

import asyncio
import datetime
from decimal import Decimal

import pytest
from prometheus_client import CollectorRegistry

from gpuctl.providers import metrics
from gpuctl.providers.base import CapacityType, Offer
from gpuctl.providers.capacity import CapacityCache
from gpuctl.providers.pricing import PriceCache, PriceTable


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sample(name: str, registry: CollectorRegistry | None = None) -> float:
    reg = registry or metrics.registry()
    return reg.get_sample_value(name, {"provider": "pc-test"}) or 0.0


async def test_single_flight_hundred_callers_one_fetch() -> None:
    cache: PriceCache[list[int]] = PriceCache("pc-test")
    fetches = 0
    release = asyncio.Event()

    async def fetch() -> list[int]:
        nonlocal fetches
        fetches += 1
        await release.wait()
        return [1, 2]

    hits = sample("gpuctl_price_cache_hits_total")
    misses = sample("gpuctl_price_cache_misses_total")
    waiters = [asyncio.create_task(cache.get("k", fetch)) for _ in range(100)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*waiters)
    assert fetches == 1
    assert all(r == [1, 2] for r in results)
    assert await cache.get("k", fetch) == [1, 2] and fetches == 1
    assert sample("gpuctl_price_cache_misses_total") - misses == 1
    assert sample("gpuctl_price_cache_hits_total") - hits == 100


async def test_ttl_expiry_refetches() -> None:
    clock = Clock()
    cache: PriceCache[int] = PriceCache("pc-test", ttl=300, timer=clock)
    calls = 0

    async def fetch() -> int:
        nonlocal calls
        calls += 1
        return calls

    assert await cache.get("k", fetch) == 1
    clock.now += 299
    assert await cache.get("k", fetch) == 1
    clock.now += 2
    assert await cache.get("k", fetch) == 2


async def test_spot_and_on_demand_are_kept_apart() -> None:
    cache: PriceCache[str] = PriceCache("pc-test")

    async def spot() -> str:
        return "spot"

    async def on_demand() -> str:
        return "on-demand"

    assert await cache.get(CapacityType.SPOT, spot) == "spot"
    assert await cache.get(CapacityType.ON_DEMAND, on_demand) == "on-demand"
    cache.invalidate(CapacityType.SPOT)
    assert CapacityType.SPOT not in cache
    assert CapacityType.ON_DEMAND in cache
    assert await cache.get(CapacityType.ON_DEMAND, spot) == "on-demand"


async def test_failed_fetch_is_shared_and_not_cached() -> None:
    cache: PriceCache[int] = PriceCache("pc-test")
    release = asyncio.Event()

    async def boom() -> int:
        await release.wait()
        raise RuntimeError("catalog down")

    waiters = [asyncio.create_task(cache.get("k", boom)) for _ in range(5)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)

    async def ok() -> int:
        return 7

    assert await cache.get("k", ok) == 7


async def test_cancelled_caller_does_not_cancel_the_shared_fetch() -> None:
    cache: PriceCache[int] = PriceCache("pc-test")
    release = asyncio.Event()

    async def fetch() -> int:
        await release.wait()
        return 3

    first = asyncio.create_task(cache.get("k", fetch))
    second = asyncio.create_task(cache.get("k", fetch))
    await asyncio.sleep(0)
    first.cancel()
    release.set()
    assert await second == 3
    assert "k" in cache


def test_price_table_parse_and_overrides() -> None:
    table = PriceTable.parse(
        {"source": "https://x", "date": "2026-01-02", "prices": {"H100": 5.95, "A4000": "0.76"}}
    )
    assert table.date == datetime.date(2026, 1, 2)
    assert table.prices["H100"] == Decimal("5.95")
    assert table.with_overrides({"H100": Decimal("4")}).prices["H100"] == Decimal("4")
    with pytest.raises(ValueError):
        PriceTable.parse({"date": "2026-01-02"})
    with pytest.raises(ValueError):
        PriceTable.parse({"date": "nope", "prices": {}})


def test_paperspace_table_ships_dated_with_source() -> None:
    table = PriceTable.load("gpuctl.providers.paperspace", "prices.yaml")
    assert table.source.startswith("https://")
    assert table.prices["H100x8"] == 8 * table.prices["H100"]


def offer(region: str = "us-east-1", count: int = 8, cap: str = "on-demand") -> Offer:
    return Offer(
        provider="lam",
        cloud="lambda",
        region="us-east",
        native_region=region,
        gpu_type="H100-80GB",
        gpu_count=count,
        instance_type="gpu_8x_h100",
        capacity_type=CapacityType(cap),
        price_per_hour=Decimal("10"),
    )


def test_capacity_cache_blocks_by_key_until_ttl() -> None:
    clock = Clock()
    cache = CapacityCache(ttl=180, timer=clock)
    cache.mark(offer(), "insufficient capacity")
    assert cache.blocked(offer())
    assert cache.blocked(offer(count=1))  # same key: GPU count is not part of it
    assert not cache.blocked(offer(region="us-west-1"))
    assert not cache.blocked(offer(cap="spot"))
    [entry] = cache.entries()
    assert entry.reason == "insufficient capacity" and entry.native_region == "us-east-1"
    assert entry.expires_in == 180
    clock.now += 100
    assert cache.entries()[0].expires_in == 80
    clock.now += 81
    assert not cache.blocked(offer())
    assert cache.entries() == [] and len(cache) == 0


def test_capacity_cache_remark_restarts_and_clear() -> None:
    clock = Clock()
    cache = CapacityCache(ttl=10, timer=clock)
    cache.mark(offer(), "a")
    clock.now += 8
    cache.mark(offer(), "b")
    clock.now += 8
    assert cache.blocked(offer()) and cache.entries()[0].reason == "b"
    cache.clear(offer())
    assert not cache.blocked(offer())
