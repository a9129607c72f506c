"""Client-side rate limits per cloud account and per operation class.

Every request first takes a token from the account's overall bucket, then from its
class's bucket (`read` = GET, `mutate` = other writes, `launch` = creating a machine).
Buckets are aiolimiter leaky buckets: a rate of N/s allows a burst of N.

Defaults (from each cloud's documentation):

  lambda      1 request/s overall; launch at most 1 per 12 s ("one request per second",
              "/instance-operations/launch ... one request per 12 seconds")
  runpod      60 requests/min to start, then whatever the server announces: the
              `RateLimit-Policy` header (`"minute";q=60;w=60, "hour";q=3000;w=3600`)
              replaces the buckets by one per window, and a `RateLimit` member with
              `r=0;t=N` pauses the account for N seconds
  paperspace  2 requests/s (no documented limit: a conservative default)

Overrides, from the GPUProvider (`DriverConfig`):

  rate_limit_per_second            the overall rate, requests/s
  options["rateLimit"]             "unlimited" switches every limit off (the simulated
                                   clouds, benchmarks); a number sets the overall rate
  options["launchIntervalSeconds"] seconds between launches; 0 switches it off

Accounts are shared: drivers built for the same cloud, endpoint, API key and limits get
the same `AccountLimiter` (see `gpuctl.providers.registry`).
"""

from __future__ import annotations

import asyncio
import enum
import math
import re
from collections.abc import Mapping

import attrs
from aiolimiter import AsyncLimiter

from gpuctl.providers.base import DriverConfig, InvalidRequestError
from gpuctl.providers.errors import header


class OpClass(enum.StrEnum):
    READ = "read"
    MUTATE = "mutate"
    LAUNCH = "launch"


@attrs.frozen
class RateLimits:
    overall_per_second: float | None  # None: no overall limit
    read_per_second: float | None = None
    mutate_per_second: float | None = None
    launch_interval_seconds: float | None = None  # None: no launch limit
    adaptive: bool = False  # follow RateLimit / RateLimit-Policy response headers

    @classmethod
    def unlimited(cls) -> RateLimits:
        return cls(overall_per_second=None)


DEFAULTS: dict[str, RateLimits] = {
    "lambda": RateLimits(overall_per_second=1.0, launch_interval_seconds=12.0),
    "runpod": RateLimits(overall_per_second=1.0, adaptive=True),  # 60/min
    "paperspace": RateLimits(overall_per_second=2.0),
}

UNLIMITED_WORDS = frozenset({"unlimited", "none", "off", "false"})


def limits_for(config: DriverConfig) -> RateLimits:
    """The defaults of `config.cloud` with the overrides of the docstring applied."""
    limits = DEFAULTS.get(config.cloud, RateLimits(overall_per_second=1.0))
    option = config.options.get("rateLimit", "").strip().lower()
    if option in UNLIMITED_WORDS:
        return RateLimits.unlimited()
    if option:
        limits = attrs.evolve(limits, overall_per_second=_positive(option, "rateLimit"))
    if config.rate_limit_per_second is not None:
        rate = config.rate_limit_per_second
        limits = attrs.evolve(limits, overall_per_second=rate if rate > 0 else None)
    interval = config.options.get("launchIntervalSeconds", "").strip()
    if interval:
        seconds = _non_negative(interval, "launchIntervalSeconds")
        limits = attrs.evolve(limits, launch_interval_seconds=seconds or None)
    return limits


def _non_negative(text: str, option: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value >= 0):
        raise InvalidRequestError(f"option {option}: want a non-negative number, got {text!r}")
    return value


def _positive(text: str, option: str) -> float:
    value = _non_negative(text, option)
    if value == 0:
        raise InvalidRequestError(f"option {option}: want a positive number or 'unlimited'")
    return value


def bucket(per_second: float) -> AsyncLimiter:
    """A leaky bucket of `per_second`; rates under 1/s become 1 per 1/rate seconds."""
    if per_second >= 1:
        return AsyncLimiter(per_second, 1.0)
    return AsyncLimiter(1, 1.0 / per_second)


class AccountLimiter:
    """The buckets of one cloud account."""

    def __init__(self, limits: RateLimits) -> None:
        self.limits = limits
        self._overall: list[AsyncLimiter] = []
        if limits.overall_per_second:
            self._overall.append(bucket(limits.overall_per_second))
        self._classes: dict[OpClass, AsyncLimiter] = {}
        if limits.read_per_second:
            self._classes[OpClass.READ] = bucket(limits.read_per_second)
        if limits.mutate_per_second:
            self._classes[OpClass.MUTATE] = bucket(limits.mutate_per_second)
        if limits.launch_interval_seconds:
            self._classes[OpClass.LAUNCH] = AsyncLimiter(1, limits.launch_interval_seconds)
        self._policy: tuple[tuple[str, int, float], ...] = ()
        self._paused_until = 0.0

    async def acquire(self, op_class: OpClass) -> None:
        """Wait until one request of `op_class` may go out."""
        # The class bucket first: a launch waiting its 12 s must not hold overall tokens.
        own = self._classes.get(op_class)
        if own is not None:
            await own.acquire()
        for limiter in list(self._overall):
            await limiter.acquire()
        loop = asyncio.get_running_loop()
        delay = self._paused_until - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)

    def observe(self, headers: Mapping[str, str]) -> None:
        """Adapt to `RateLimit-Policy` / `RateLimit` headers (IETF draft), if adaptive."""
        if not self.limits.adaptive:
            return
        policy = header(headers, "RateLimit-Policy")
        if policy:
            windows = tuple(
                (name, int(float(p["q"])), float(p["w"]))
                for name, p in parse_structured_list(policy)
                if _is_number(p.get("q")) and _is_number(p.get("w"))
                if float(p["q"]) >= 1 and float(p["w"]) > 0
            )
            if windows and windows != self._policy:
                self._policy = windows
                self._overall = [AsyncLimiter(q, w) for _, q, w in windows]
        state = header(headers, "RateLimit")
        if state:
            for _, p in parse_structured_list(state):
                if _is_number(p.get("r")) and _is_number(p.get("t")) and float(p["r"]) <= 0:
                    until = asyncio.get_running_loop().time() + min(float(p["t"]), 3600.0)
                    self._paused_until = max(self._paused_until, until)

    @property
    def policy(self) -> tuple[tuple[str, int, float], ...]:
        """The windows last announced by the server: (name, quota, seconds)."""
        return self._policy


_MEMBER = re.compile(r'^\s*"?([^";]*)"?\s*((?:;[^;]*)*)$')


def parse_structured_list(value: str) -> list[tuple[str, dict[str, str]]]:
    """`"minute";q=60;w=60, "hour";q=3000` -> [("minute", {"q": "60", "w": "60"}), ...].

    A lenient reading of RFC 8941 lists, enough for the ratelimit headers; members it
    cannot read are skipped.
    """
    members: list[tuple[str, dict[str, str]]] = []
    for raw in value.split(","):
        match = _MEMBER.match(raw)
        if not match:
            continue
        params: dict[str, str] = {}
        for item in match.group(2).split(";"):
            key, _, val = item.partition("=")
            if key.strip():
                params[key.strip()] = val.strip().strip('"')
        members.append((match.group(1).strip(), params))
    return members


def _is_number(text: str | None) -> bool:
    if text is None:
        return False
    try:
        value = float(text)
    except ValueError:
        return False
    return math.isfinite(value)
