"""Client-side rate limits per cloud account and per operation class.

Every request takes a token from the account's overall bucket and from its class's
bucket (`read` = GET, `mutate` = other writes, `launch` = creating a machine). Buckets
are token buckets (`TokenBucket`): a rate of N/s allows a burst of N; a rate under 1/s
allows one call per 1/rate seconds.

Defaults (from each cloud's documentation):

  lambda      1 request/s overall; launch at most 1 per 12 s ("one request per second",
              "/instance-operations/launch ... one request per 12 seconds")
  runpod      60 requests/min to start, then whatever the server announces: the
              `RateLimit-Policy` header (`"minute";q=60;w=60, "hour";q=3000;w=3600`)
              replaces the buckets by one per window, and a `RateLimit` member with
              `r=0;t=N` pauses the account for N seconds
  paperspace  2 requests/s (no documented limit: a conservative default)
  crusoe      2 requests/s (no documented limit: a conservative default; a 429's
              Retry-After is honoured by the transport)
  hyperstack  4 requests/s (documented: 500 requests/min per source IP across every
              endpoint, then 429 for the rest of the minute; half of it, since every
              client behind the address shares it)
  digitalocean 5,000 requests/h (documented: 5,000/h and 250/min per token; the hourly
              quota binds first at a steady rate: 1.39/s)

Overrides, from the GPUProvider (`DriverConfig`):

  rate_limit_per_second            the overall rate, requests/s
  options["rateLimit"]             "unlimited" switches every limit off (the simulated
                                   clouds, benchmarks); a number sets the overall rate
  options["launchIntervalSeconds"] seconds between launches; 0 switches it off

Waiting for a token never holds a reconcile worker. Tokens are *reserved*, as Go's
`rate.Limiter.Reserve`: taking one moves the buckets on at once and says when the call
may go, so callers queue in order and a burst of callers gets consecutive slots, not a
stampede. Two modes:

- blocking (the default: the CLI, tests, the leak collector's per-provider tasks):
  `acquire()` sleeps until the reserved slot;
- non-blocking, inside `with nonblocking(holder)` (the controllers wrap every reconcile
  in it, `holder` = controller/key): a slot further away than `INLINE_WAIT` is kept for
  the holder and `acquire()` raises `RateLimitedError` carrying the seconds until it; the
  controller requeues the key for then (no error, no back-off, no Event). When the
  holder calls again, its reserved slot is used (nothing is taken twice); a slot not
  claimed within `RESERVATION_TTL` is dropped. A 429 answer in this mode becomes
  `RateLimitedError` too (its Retry-After, else 1 s), see `gpuctl.providers.http`.

A third mode, for calls that may be skipped (`spare_only()`, inside `nonblocking()`): the
call goes only if a token is there now that no reservation is waiting for; otherwise it
raises `RateLimitedError` and takes and reserves nothing. The request controller polls
a Ready machine whose Node is Ready this way: those polls use what launches, teardowns
and other polls leave, instead of queueing ahead of them (under RunPod's 60 calls a
minute, 60 machines polled every 30 s took the whole budget and launches waited a
minute for their slot). A window the server announces (`RateLimit-Policy`) keeps half
its quota from spare-only calls (`TokenBucket.keep`): a restarted operator starts with
the window's bucket full and met every Ready machine at once; its polls spent the
cloud's minute, and the launches reconciled a moment later waited for the next one.
(A bucket of a per-second rate keeps nothing: it refills within a second or two.)

The server's own count wins: a `RateLimit` member's remaining `r` lowers the bucket of
its window to `r` (never raises it: reservations already took their tokens). A
restarted operator's fresh bucket says 60 while the cloud's minute may be nearly spent
by the process before it.

A fourth, for calls a request waits on (`priority()`, inside `nonblocking()`): the launch
step's look-ups by name and its create. Such a call still takes its token from the
buckets (the rate is kept), but the slot it is given is the earliest one reserved by a
caller that is not a priority call, of its own class, or of any class when its class's
bucket has its token by then (a create under a launch interval takes a teardown's or a
poll's slot, never one before its launch token); that caller and every later one move
back by one slot, each to the next one's (the last to the slot the priority call was
given). So a settle look-up or a launch waits for the calls already due and other
priority calls, not behind a queue of teardowns and polls; each of those waits one slot
longer per priority call that went ahead of it. (Before, a create went ahead of other
creates only: after RunPod's minute ran out, the DELETEs and polls reserved during the
pause went out at the next minute before it.)

Accounts are shared: drivers built for the same cloud, endpoint, API key and limits get
the same `AccountLimiter` (see `gpuctl.providers.registry`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping

import attrs

from gpuctl.providers.base import DriverConfig, InvalidRequestError, RateLimitedError
from gpuctl.providers.errors import header

# A reserved slot this close is waited for inline (shorter than a requeue's round trip
# through the work queue and a fresh reconcile); a farther one is a RateLimitedError.
INLINE_WAIT = 0.1
# A reserved slot nobody claimed this long after it came is dropped (its holder went away).
RESERVATION_TTL = 60.0

_HOLDER: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "gpuctl_rate_limit_holder", default=None
)


@contextlib.contextmanager
def nonblocking(holder: str) -> Iterator[None]:
    """Calls made inside (and in tasks started inside) never wait long for a token:
    see the module docstring. `holder` names who will come back for a reserved slot."""
    token = _HOLDER.set(holder)
    try:
        yield
    finally:
        _HOLDER.reset(token)


_SPARE: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "gpuctl_rate_limit_spare_only", default=False
)


@contextlib.contextmanager
def _flag(var: contextvars.ContextVar[bool]) -> Iterator[None]:
    token = var.set(True)
    try:
        yield
    finally:
        var.reset(token)


def spare_only() -> contextlib.AbstractContextManager[None]:
    """Inside `nonblocking()`: calls made here go only with a token nobody waits for."""
    return _flag(_SPARE)


_PRIORITY: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "gpuctl_rate_limit_priority", default=False
)


def priority() -> contextlib.AbstractContextManager[None]:
    """Inside `nonblocking()`: calls made here take the earliest reserved slot."""
    return _flag(_PRIORITY)


def current_holder() -> str | None:
    """The holder of the enclosing `nonblocking()`, or None (blocking mode)."""
    return _HOLDER.get()


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
    "crusoe": RateLimits(overall_per_second=2.0),
    # 500 requests/min per source IP, every endpoint; half of it, as other clients
    # behind the same address share the budget.
    "hyperstack": RateLimits(overall_per_second=4.0),
    # 5,000 requests/h and 250/min per token: the hourly quota is the binding one.
    "digitalocean": RateLimits(overall_per_second=5000 / 3600),
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


@attrs.define
class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up; `reserve` may go into debt."""

    rate: float
    burst: float
    tokens: float
    last: float
    keep: float = 0.0  # tokens a spare-only call leaves (module docstring)

    @classmethod
    def full(cls, rate: float, burst: float, now: float, keep: float = 0.0) -> TokenBucket:
        return cls(rate=rate, burst=burst, tokens=burst, last=now, keep=keep)

    def refill(self, now: float) -> None:
        if now > self.last:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now

    def reserve(self, now: float) -> float:
        """Take one token; seconds until it is really there (0: now)."""
        self.refill(now)
        self.tokens -= 1
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def spare_in(self, now: float) -> float:
        """Seconds until a spare-only call may take a token and leave `keep` (0: now)."""
        tokens = min(self.burst, self.tokens + max(0.0, now - self.last) * self.rate)
        return max(0.0, (1.0 + self.keep - tokens) / self.rate)


def bucket(per_second: float, now: float) -> TokenBucket:
    """A bucket of `per_second`; rates under 1/s become 1 per 1/rate seconds."""
    return TokenBucket.full(per_second, max(1.0, math.floor(per_second)), now)


class AccountLimiter:
    """The buckets of one cloud account, and the slots reserved for non-blocking holders."""

    def __init__(self, limits: RateLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        now = clock()
        self._overall: list[TokenBucket] = []
        if limits.overall_per_second:
            self._overall.append(bucket(limits.overall_per_second, now))
        self._classes: dict[OpClass, TokenBucket] = {}
        if limits.read_per_second:
            self._classes[OpClass.READ] = bucket(limits.read_per_second, now)
        if limits.mutate_per_second:
            self._classes[OpClass.MUTATE] = bucket(limits.mutate_per_second, now)
        if limits.launch_interval_seconds:
            interval = limits.launch_interval_seconds
            self._classes[OpClass.LAUNCH] = TokenBucket.full(1.0 / interval, 1.0, now)
        self._policy: tuple[tuple[str, int, float], ...] = ()
        self._paused_until = 0.0
        self._reserved: dict[tuple[str, OpClass], float] = {}  # (holder, class) -> slot
        self._priority: set[tuple[str, OpClass]] = set()  # reserved by priority calls
        self._pruned = now

    async def acquire(self, op_class: OpClass) -> None:
        """Wait until one request of `op_class` may go out; inside `nonblocking()`, raise
        RateLimitedError instead of waiting longer than INLINE_WAIT."""
        holder = _HOLDER.get()
        if holder is None:
            wait = self._take(op_class, self._clock())
        elif _SPARE.get():
            now = self._clock()
            spare = self._spare(op_class, now)
            if spare > 0:
                raise RateLimitedError(
                    f"rate limit: no spare {op_class.value} token for {spare:.2f}s",
                    retry_after=spare,
                )
            wait = self._take(op_class, now)
        else:
            wait = self.reserve(op_class, holder)
            if wait > INLINE_WAIT:
                raise RateLimitedError(
                    f"rate limit: the next {op_class.value} call may go in {wait:.2f}s",
                    retry_after=wait,
                )
            self._reserved.pop((holder, op_class), None)  # claimed
            self._priority.discard((holder, op_class))
        if wait > 0:
            await asyncio.sleep(wait)

    def reserve_launch(self) -> float:
        """Inside `nonblocking()`: reserve for its holder the slot its next launch call
        will claim (`Driver.launch_slot`); seconds until the slot (0: now). Outside, 0
        and nothing reserved: a blocking call waits for its token anyway."""
        holder = _HOLDER.get()
        return 0.0 if holder is None else self.reserve(OpClass.LAUNCH, holder)

    def reserve(self, op_class: OpClass, holder: str) -> float:
        """Seconds until `holder` may send one `op_class` call: the slot it reserved
        earlier, else a new one taken from the buckets now (0: at once)."""
        now = self._clock()
        self._prune(now)
        key = (holder, op_class)
        slot = self._reserved.get(key)
        if slot is None:
            wait, ready = self._take_parts(op_class, now)
            slot = self._reserved[key] = now + wait
            if _PRIORITY.get():
                slot = self._go_ahead(key, now, now + ready)
        return max(0.0, slot - now, self._paused_until - now)

    def _go_ahead(self, key: tuple[str, OpClass], now: float, ready: float) -> float:
        """Give the priority reservation `key` the earliest later slot reserved by others
        (not priority; of its class, or of any once its class token is `ready`); they
        move back one slot each. Its slot."""
        self._priority.add(key)
        mine = self._reserved[key]
        bucket_of = self._classes.get(key[1])
        ahead = sorted(
            (slot, other)
            for other, slot in self._reserved.items()
            if other not in self._priority
            and now < slot < mine
            and (self._classes.get(other[1]) is bucket_of or slot >= ready)
        )
        if not ahead:
            return mine
        slots = [slot for slot, _ in ahead] + [mine]
        self._reserved[key] = slots[0]
        for (_, other), later in zip(ahead, slots[1:], strict=True):
            self._reserved[other] = later
        return slots[0]

    def pause(self, seconds: float) -> None:
        """Send nothing for `seconds` (the server said the account's quota is spent)."""
        until = self._clock() + min(seconds, 3600.0)
        self._paused_until = max(self._paused_until, until)

    @property
    def reserved(self) -> int:
        """Slots reserved and not yet claimed."""
        return len(self._reserved)

    def _take(self, op_class: OpClass, now: float) -> float:
        return self._take_parts(op_class, now)[0]

    def _take_parts(self, op_class: OpClass, now: float) -> tuple[float, float]:
        """Every bucket the call needs gives its token now: seconds until the last of
        them is there (and a pause ends), and until its class's bucket's is."""
        own = self._classes[op_class].reserve(now) if op_class in self._classes else 0.0
        waits = [b.reserve(now) for b in self._overall]
        return max([0.0, self._paused_until - now, own, *waits]), own

    def _spare(self, op_class: OpClass, now: float) -> float:
        """Seconds until every bucket `op_class` needs holds a whole token beyond what the
        reservations took (0: one is spare now); nothing is taken."""
        buckets = [*([self._classes[op_class]] if op_class in self._classes else []),
                   *self._overall]  # fmt: skip
        waits = [self._paused_until - now, *(b.spare_in(now) for b in buckets)]
        return max(0.0, *waits)

    def _prune(self, now: float) -> None:
        if now - self._pruned < 1.0:
            return
        self._pruned = now
        stale = [k for k, slot in self._reserved.items() if slot < now - RESERVATION_TTL]
        for key in stale:
            del self._reserved[key]
            self._priority.discard(key)

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
                now = self._clock()
                self._overall = [TokenBucket.full(q / w, q, now, q // 2) for _, q, w in windows]
        state = header(headers, "RateLimit")
        if state:
            for name, p in parse_structured_list(state):
                if _is_number(p.get("r")):
                    self._sync(name, float(p["r"]))
                if _is_number(p.get("t")) and _is_number(p.get("r")) and float(p["r"]) <= 0:
                    self.pause(float(p["t"]))

    def _sync(self, window: str, remaining: float) -> None:
        """The server counts `remaining` calls left in `window`: the bucket holds no more."""
        now = self._clock()
        for (name, _, _), b in zip(self._policy, self._overall, strict=False):
            if name == window:
                b.refill(now)
                b.tokens = min(b.tokens, max(0.0, remaining))

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
