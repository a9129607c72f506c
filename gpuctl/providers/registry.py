"""`build_driver(config, session)`: the one way to get a `Driver` for a GPUProvider.

Picks the driver class by `config.cloud` (`DRIVERS`) and hands it the
process's shared aiohttp session and the rate limiter of its cloud account. Drivers of
the same account (same cloud, endpoint, API key and limits) share one `AccountLimiter`,
so two GPUProviders pointing at one account cannot together exceed its limits. The key
is a digest of the API key, never the key itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import weakref
from collections.abc import Callable

import aiohttp

from gpuctl.providers.base import Driver, DriverConfig, InvalidRequestError
from gpuctl.providers.crusoe.driver import CrusoeDriver
from gpuctl.providers.digitalocean.driver import DigitalOceanDriver
from gpuctl.providers.hyperstack.driver import HyperstackDriver
from gpuctl.providers.lambdacloud.driver import LambdaDriver
from gpuctl.providers.paperspace.driver import PaperspaceDriver
from gpuctl.providers.ratelimit import AccountLimiter, RateLimits, limits_for
from gpuctl.providers.runpod.driver import RunPodDriver

DriverFactory = Callable[[DriverConfig, aiohttp.ClientSession, AccountLimiter], Driver]

DRIVERS: dict[str, DriverFactory] = {
    "lambda": LambdaDriver,
    "runpod": RunPodDriver,
    "paperspace": PaperspaceDriver,
    "crusoe": CrusoeDriver,
    "hyperstack": HyperstackDriver,
    "digitalocean": DigitalOceanDriver,
}

_AccountKey = tuple[str, str, str, RateLimits, int]
# Weak values: an account's limiter lives as long as some driver uses it.
_limiters: weakref.WeakValueDictionary[_AccountKey, AccountLimiter] = weakref.WeakValueDictionary()


def account_limiter(config: DriverConfig) -> AccountLimiter:
    """The limiter shared by every driver of `config`'s cloud account."""
    limits = limits_for(config)
    digest = hashlib.sha256(config.api_key.encode()).hexdigest()
    # One limiter per event loop and account: separate loops in one process (tests,
    # the CLI) never share reservations.
    key = (config.cloud, config.endpoint or "", digest, limits, _loop_id())
    limiter = _limiters.get(key)
    if limiter is None:
        limiter = AccountLimiter(limits)
        _limiters[key] = limiter
    return limiter


def _loop_id() -> int:
    try:
        return id(asyncio.get_running_loop())
    except RuntimeError:
        return 0


def build_driver(config: DriverConfig, session: aiohttp.ClientSession) -> Driver:
    """A driver for `config`; raises InvalidRequestError for an unknown cloud or option."""
    factory = DRIVERS.get(config.cloud)
    if factory is None:
        known = ", ".join(sorted(DRIVERS))
        raise InvalidRequestError(
            f"unknown cloud {config.cloud!r} (known: {known})", provider=config.name
        )
    return factory(config, session, account_limiter(config))
