"""Offer and price caching, and the dated price tables of clouds without a price API.

`PriceCache` holds a driver's offers on a `cachetools.TTLCache` (5 min by default):
- one refresh in flight per key, however many callers wait: the first caller's miss
  starts one fetch task and every concurrent caller awaits that same task (a caller
  being cancelled does not cancel the fetch the others wait for);
- a failed fetch is not cached; every waiter gets the error, the next call fetches again;
- keys are the driver's choice and kept apart: drivers key by capacity type, so spot and
  on-demand offers expire, refresh and invalidate independently.
Hits (including callers that joined an in-flight fetch) and misses are counted in
gpuctl_price_cache_hits_total / gpuctl_price_cache_misses_total{provider}.

`usd`, `filter_offers` and `Translator` are what every driver uses to build offers:
a safe price reader, the GPU type/count filter of `Driver.list_offers`, and the
catalog translation of GPU and region names.

`PriceTable` is a YAML price list: `source`, `date` and `prices` (machine type -> USD per
hour), used where the cloud publishes no prices through its API (Paperspace).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from decimal import Decimal, InvalidOperation
from importlib import resources
from typing import Any, Generic, TypeVar

import attrs
import cachetools
import yaml

from gpuctl.providers import catalog, metrics
from gpuctl.providers.base import Offer

log = logging.getLogger(__name__)

DEFAULT_TTL_SECONDS = 300.0

V = TypeVar("V")


class PriceCache(Generic[V]):
    """A TTL cache whose misses are fetched once per key, whatever the concurrency."""

    def __init__(
        self,
        provider: str,
        *,
        ttl: float = DEFAULT_TTL_SECONDS,
        maxsize: int = 64,
        timer: Callable[[], float] = time.monotonic,
        count_metrics: bool = True,  # False for a driver's internal caches (raw catalogs)
    ) -> None:
        self.provider = provider
        self._count = count_metrics
        self._cache: cachetools.TTLCache[Hashable, V] = cachetools.TTLCache(
            maxsize=maxsize, ttl=ttl, timer=timer
        )
        self._inflight: dict[Hashable, asyncio.Task[V]] = {}

    async def get(self, key: Hashable, fetch: Callable[[], Awaitable[V]]) -> V:
        """The cached value of `key`, or the result of the one fetch in flight for it."""
        try:
            value = self._cache[key]
        except KeyError:
            pass
        else:
            self._hit()
            return value
        task = self._inflight.get(key)
        if task is None:
            if self._count:
                metrics.price_cache_miss(self.provider)
            task = asyncio.ensure_future(fetch())
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._settle(key, done))
        else:
            self._hit()
        return await asyncio.shield(task)

    def _hit(self) -> None:
        if self._count:
            metrics.price_cache_hit(self.provider)

    def _settle(self, key: Hashable, task: asyncio.Task[V]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if task.cancelled() or task.exception() is not None:  # marks the error retrieved
            return
        self._cache[key] = task.result()

    def invalidate(self, key: Hashable | None = None) -> None:
        """Forget `key` (or everything); a fetch already in flight still completes."""
        if key is None:
            self._cache.clear()
        else:
            self._cache.pop(key, None)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._cache


@attrs.frozen
class PriceTable:
    """A dated, sourced price list: machine type -> USD per instance-hour."""

    source: str
    date: datetime.date
    prices: Mapping[str, Decimal]

    @classmethod
    def load(cls, package: str, name: str) -> PriceTable:
        """Read a YAML table shipped in `package` (see paperspace/prices.yaml)."""
        text = resources.files(package).joinpath(name).read_text()
        return cls.parse(yaml.safe_load(text))

    @classmethod
    def parse(cls, data: Any) -> PriceTable:
        if not isinstance(data, dict) or not isinstance(data.get("prices"), dict):
            raise ValueError("price table: want a mapping with 'source', 'date', 'prices'")
        date = data.get("date")
        if isinstance(date, str):
            date = datetime.date.fromisoformat(date)
        if not isinstance(date, datetime.date):
            raise ValueError("price table: 'date' must be an ISO date")
        prices: dict[str, Decimal] = {}
        for machine_type, price in data["prices"].items():
            try:
                prices[str(machine_type)] = Decimal(str(price))
            except InvalidOperation as exc:
                raise ValueError(f"price table: bad price for {machine_type}") from exc
        return cls(source=str(data.get("source", "")), date=date, prices=prices)

    def with_overrides(self, overrides: Mapping[str, Decimal]) -> PriceTable:
        return attrs.evolve(self, prices={**self.prices, **overrides})


def usd(value: object) -> Decimal | None:
    """A price from a cloud's answer as Decimal; None unless a finite number >= 0.

    Catalog prices are JSON numbers (floats): going through `str` keeps 2.69 as
    Decimal("2.69"). A NaN or negative price would poison every comparison made
    with it later, so such an entry is dropped rather than offered.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        return None
    try:
        price = Decimal(str(value))
    except InvalidOperation:
        return None
    return price if price.is_finite() and price >= 0 else None


def filter_offers(
    offers: Iterable[Offer], gpu_type: str | None = None, gpu_count: int | None = None
) -> list[Offer]:
    """The offers of `gpu_type` and `gpu_count` (either None: any), cheapest first."""
    chosen = [
        o
        for o in offers
        if (gpu_type is None or o.gpu_type == gpu_type)
        and (gpu_count is None or o.gpu_count == gpu_count)
    ]
    return sorted(chosen, key=lambda o: (o.price_per_hour, o.native_region, o.instance_type))


@attrs.define
class Translator:
    """One cloud's GPU and region names -> gpuctl's, with a GPUProvider's region allow-list.

    Names the catalog does not know are skipped (the cloud sells something gpuctl has no
    name for yet) and logged once per driver at debug level.
    """

    cloud: str
    allowed_regions: tuple[str, ...] = ()
    _unknown: set[tuple[str, str]] = attrs.field(factory=set, init=False)

    def gpu(self, native: str) -> str | None:
        found = catalog.gpu_type_of(self.cloud, native)
        if found is None:
            self._note("GPU", native)
        return found

    def region(self, native: str) -> str | None:
        """The normalised region of `native`, None if unknown or not allowed."""
        found = catalog.region_of(self.cloud, native)
        if found is None:
            self._note("region", native)
            return None
        if self.allowed_regions and found not in self.allowed_regions:
            return None
        return found

    def native_regions(self) -> list[str]:
        """Every native region of the cloud the catalog knows, within the allow-list."""
        regions = self.allowed_regions or tuple(catalog.regions())
        return [n for r in regions for n in catalog.native_regions(self.cloud, r)]

    def _note(self, kind: str, native: str) -> None:
        if (kind, native) not in self._unknown:
            self._unknown.add((kind, native))
            log.debug("%s: skipping unknown %s %r (docs/providers.md)", self.cloud, kind, native)
