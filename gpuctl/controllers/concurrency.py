"""How many GPUNodeRequest reconciles to run at once: sized from the providers' limits.

A reconcile mostly waits on the API server and the clouds, so workers are cheap asyncio
tasks; what matters is that there are enough of them to keep every provider's rate
limit busy while the rest wait on I/O, and not so many that they only crowd the API
server. Rate-limit waits no longer hold a worker (`ratelimit.nonblocking`), so the count
follows the calls the clouds accept:

    workers = clamp(ceil(SECONDS_PER_CALL * sum of each provider's call rate), MIN, MAX)

A provider's call rate is its overall request limit, bounded by CALLS_PER_LAUNCH calls
per launch its launch limit allows (a request needs about that many calls on its way up:
look-up, create, polls), and UNLIMITED_CALLS when it has neither. SECONDS_PER_CALL is the
worker time a request spends per cloud call on its way up (reconciles of about 0.25 s,
1.4 of them per cloud call, docs/benchmarks.md). With the documented defaults of the
three clouds (a few calls per second) that is MIN_WORKERS; the benchmark's providers
(10 launches/s each) get about 40. `gpuctl run --workers N` fixes the count instead.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from gpuctl.api import GPUProvider, ObjectError
from gpuctl.controllers.drivers import driver_config
from gpuctl.providers.base import ProviderError
from gpuctl.providers.ratelimit import RateLimits, limits_for

MIN_WORKERS = 16
MAX_WORKERS = 128
SECONDS_PER_CALL = 0.35
CALLS_PER_LAUNCH = 5
UNLIMITED_CALLS = 100.0  # calls/s assumed of a provider without any limit


def call_rate(limits: RateLimits) -> float:
    """Calls per second a provider with `limits` can take on the way up."""
    rates = []
    if limits.overall_per_second:
        rates.append(limits.overall_per_second)
    if limits.launch_interval_seconds:
        rates.append(CALLS_PER_LAUNCH / limits.launch_interval_seconds)
    return min(rates) if rates else UNLIMITED_CALLS


def workers_for(limits: Iterable[RateLimits]) -> int:
    calls = sum(call_rate(each) for each in limits)
    return max(MIN_WORKERS, min(MAX_WORKERS, math.ceil(SECONDS_PER_CALL * calls)))


def provider_limits(objects: Iterable[dict[str, Any]]) -> list[RateLimits]:
    """The limits of every GPUProvider object that parses (credentials play no part)."""
    found = []
    for obj in objects:
        try:
            found.append(limits_for(driver_config(GPUProvider.from_dict(obj), "")))
        except (ObjectError, ProviderError):
            continue  # an invalid GPUProvider is reported by its own controller
    return found


class SizeFromProviders:
    """An informer handler: resizes `controller` whenever a GPUProvider changes."""

    def __init__(self, store: Any, controller: Any) -> None:
        self._store = store
        self._controller = controller

    def resize(self) -> None:
        self._controller.set_workers(workers_for(provider_limits(self._store.list())))

    def on_add(self, obj: dict[str, Any]) -> None:
        self.resize()

    def on_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        if old.get("spec") != new.get("spec"):
            self.resize()

    def on_delete(self, obj: dict[str, Any]) -> None:
        self.resize()
