"""The one protocol every cloud driver implements, its value types and typed errors.

Controllers only ever see `Driver`, `Offer`, `Instance` and `ProviderError`
subclasses; which cloud is behind a driver is a detail of `gpuctl.providers.<cloud>`.
Modelled on Karpenter's CloudProvider: a small surface with typed errors that tell
the caller what to do (fail over, back off, stop, or retry).
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

import attrs

if TYPE_CHECKING:  # ratelimit imports this module
    from gpuctl.providers.ratelimit import AccountLimiter


class CapacityType(enum.StrEnum):
    ON_DEMAND = "on-demand"
    SPOT = "spot"


class JoinMethod(enum.StrEnum):
    """How a cloud hands join data to a new machine."""

    USER_DATA = "user-data"  # cloud-init user data (Lambda)
    CONTAINER_ENV = "container-env"  # environment of the pod's container (RunPod)
    STARTUP_SCRIPT = "startup-script"  # a startup script object run at boot (Paperspace)


class InstanceState(enum.StrEnum):
    """Cloud states normalised; each driver documents its mapping."""

    PENDING = "pending"  # accepted, booting or provisioning
    RUNNING = "running"  # up; the machine may or may not have joined yet
    STOPPED = "stopped"  # exists but not running (exited, off)
    TERMINATING = "terminating"
    TERMINATED = "terminated"
    PREEMPTED = "preempted"  # spot capacity reclaimed by the cloud
    FAILED = "failed"  # the cloud reports an error state
    UNKNOWN = "unknown"

    @property
    def gone(self) -> bool:
        """No longer billed and never coming back."""
        return self in (InstanceState.TERMINATED, InstanceState.PREEMPTED)

    @property
    def serviceable(self) -> bool:
        """Booting, up, or not known otherwise: may still become (or be) a usable machine."""
        return self in (InstanceState.PENDING, InstanceState.RUNNING, InstanceState.UNKNOWN)


@attrs.frozen
class Capabilities:
    spot: bool
    join_method: JoinMethod
    billing_granularity_seconds: int
    max_join_data_bytes: int


@attrs.frozen
class Offer:
    """One thing a cloud will rent: a machine type in a region at a price."""

    provider: str  # the GPUProvider object's name
    cloud: str  # the GPUProvider type: lambda, runpod, paperspace, crusoe, ...
    region: str  # normalised, e.g. us-east
    native_region: str  # the cloud's own, e.g. us-east-1, US-GA-1, ny2
    gpu_type: str  # normalised, e.g. H100-80GB
    gpu_count: int
    instance_type: str  # the cloud's own machine type / GPU type id
    capacity_type: CapacityType
    price_per_hour: Decimal  # USD per instance-hour
    available: bool = True

    @property
    def key(self) -> tuple[str, str, str, str]:
        """The capacity-error cache key: (provider, native region, GPU type, capacity type)."""
        return (self.provider, self.native_region, self.gpu_type, self.capacity_type.value)


@attrs.frozen
class JoinData:
    """What a machine needs to join the cluster, rendered by the controller.

    `script` is cloud-init user data or a shell script; `env` is for clouds that
    start a container (RunPod). A driver passes whichever its cloud supports.
    """

    script: str = ""
    env: Mapping[str, str] = attrs.field(factory=dict)


@attrs.frozen
class LaunchRequest:
    name: str  # deterministic: the idempotency key, looked up before any launch
    offer: Offer
    join: JoinData = attrs.field(factory=JoinData)
    tags: Mapping[str, str] = attrs.field(factory=dict)


@attrs.frozen
class Instance:
    id: str
    name: str
    state: InstanceState
    native_state: str
    region: str = ""  # native region
    instance_type: str = ""
    capacity_type: CapacityType | None = None
    public_ip: str | None = None
    private_ip: str | None = None
    price_per_hour: Decimal | None = None  # the rate actually charged, where reported
    launched_at: datetime.datetime | None = None


@attrs.frozen
class DriverConfig:
    """Everything a driver needs, taken from a GPUProvider and its Secret."""

    name: str  # GPUProvider name
    cloud: str
    api_key: str = attrs.field(repr=False)  # never logged, never in errors
    endpoint: str | None = None  # None: the cloud's public API
    regions: tuple[str, ...] = ()  # normalised allow-list; empty: all
    options: Mapping[str, str] = attrs.field(factory=dict)  # the per-cloud block
    prices: Mapping[str, Decimal] = attrs.field(factory=dict)  # instance type -> $/h override
    rate_limit_per_second: float | None = None  # override of the documented default


# -- errors ----------------------------------------------------------------------


class ProviderError(Exception):
    """Base of every driver error. `code` is the cloud's code or HTTP status, for metrics."""

    retryable = False

    def __init__(self, message: str, *, code: str = "", provider: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.provider = provider


class CapacityError(ProviderError):
    """No capacity for this offer now: mark the capacity cache, fail over."""


class QuotaError(ProviderError):
    """Account quota or balance exhausted: stop launching on this provider."""


class AuthError(ProviderError):
    """Credentials rejected: surface on the GPUProvider, stop using it."""


class InvalidRequestError(ProviderError):
    """The cloud refused the request's content: never retried as is."""


class NotFoundError(ProviderError):
    """The instance (or other object) does not exist."""


class TransientError(ProviderError):
    """Outage, 5xx, 429, timeout, malformed answer: retry later.

    `outcome_unknown` says whether the operation may have taken effect at the cloud
    although no answer says so: True for a timeout, a connection dropped after the
    request went out, a 5xx or an unreadable 2xx; False when the request certainly did
    nothing (connection refused, 408, 425, 429). Only a create cares: see
    `LaunchOutcomeUnknownError`.
    """

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        code: str = "",
        provider: str = "",
        retry_after: float | None = None,
        outcome_unknown: bool = True,
    ) -> None:
        super().__init__(message, code=code, provider=provider)
        self.retry_after = retry_after
        self.outcome_unknown = outcome_unknown


class RateLimitedError(TransientError):
    """The account's rate limit has no token for this call before `retry_after` seconds.

    Raised only inside `ratelimit.nonblocking()` (the controllers' reconciles), before
    anything is sent: the call certainly did nothing (`outcome_unknown` is False). The
    slot is reserved for the caller, who should come back in `retry_after` seconds:
    a requeue, not an error (no back-off, no Event).
    """

    def __init__(self, message: str, *, retry_after: float, provider: str = "") -> None:
        super().__init__(
            message,
            code="rate-limited",
            provider=provider,
            retry_after=retry_after,
            outcome_unknown=False,
        )
        self.delay = retry_after


class LaunchOutcomeUnknownError(TransientError):
    """A create went out and no answer says what became of it: the machine may exist.

    Raised by `Driver.create` (and by `Driver.launch` when its look-up by name right
    after did not find the machine either). The caller must not create again until a
    look-up by the deterministic name has had time to see the machine (clouds list
    eventually consistently): gpuctl records the uncertain attempt in the request's
    status and lists again for a bounded time before any relaunch.
    """


# -- what every driver says of itself ----------------------------------------------


class DriverIdentity:
    """The part of `Driver` that is the same for every cloud: its GPUProvider's name,
    the cloud's name and capabilities (class constants), and a repr naming the endpoint.
    Drivers subclass it and set `CLOUD`, `CAPABILITIES`, `_config`, `_endpoint` and
    `_limiter` (the account's rate limiter their transports share)."""

    CLOUD: ClassVar[str]
    CAPABILITIES: ClassVar[Capabilities]
    _config: DriverConfig
    _endpoint: str
    _limiter: AccountLimiter

    @property
    def name(self) -> str:
        return self._config.name

    @property
    def cloud(self) -> str:
        return self.CLOUD

    @property
    def capabilities(self) -> Capabilities:
        return self.CAPABILITIES

    def launch_slot(self) -> float:
        return self._limiter.reserve_launch()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, endpoint={self._endpoint!r})"


# -- the protocol ----------------------------------------------------------------


@runtime_checkable
class Driver(Protocol):
    """One cloud account, as configured by one GPUProvider."""

    @property
    def name(self) -> str: ...

    @property
    def cloud(self) -> str: ...

    @property
    def capabilities(self) -> Capabilities: ...

    async def list_offers(
        self, *, gpu_type: str | None = None, gpu_count: int | None = None
    ) -> list[Offer]:
        """Offers of this account, filtered by normalised GPU type and count when given.

        Served from the driver's price cache (one catalog fetch per TTL, however many
        callers); covers every allowed region and both capacity types where supported.
        """
        ...

    def launch_slot(self) -> float:
        """Reserve, for the enclosing reconcile (`ratelimit.nonblocking`), the rate-limit
        slot this account's next launch call will claim; seconds until it is there (0:
        now). No cloud call. Lets a launch wait for its slot before it makes anything
        that dates the attempt (its bootstrap token)."""
        ...

    async def launch(self, request: LaunchRequest) -> Instance:
        """Launch, idempotently: an instance named `request.name` is returned, not duplicated.

        `errors.launch_or_recover` over `find_all` and `create`: whatever exists under the
        name (in any state but terminated) is returned; else one `create`; when its outcome
        is unknown, one more look-up, then LaunchOutcomeUnknownError.
        """
        ...

    async def create(self, request: LaunchRequest) -> Instance:
        """Send ONE create for `request` (no look-up first; never retried blindly).

        Raises LaunchOutcomeUnknownError when the create went out and its outcome is
        unknown; other errors say the cloud created nothing.
        """
        ...

    async def get(
        self,
        instance_id: str,
        *,
        since: datetime.datetime | None = None,
        listed_by: datetime.datetime | None = None,
    ) -> Instance:
        """Raises NotFoundError when the cloud no longer knows the instance.

        `since`: an answer the cloud gave to a call sent at or after this moment is enough
        (a driver may serve it from one list of all its machines shared by every caller,
        `gpuctl.providers.snapshot`; never one older than its own accepted terminate of
        the instance). None: a call of its own. `listed_by`: the caller knows the cloud's
        lists show the instance from this moment on (it existed long enough before it):
        a list sent after it that does not show the instance says it is gone."""
        ...

    async def find_all(
        self, name: str, *, since: datetime.datetime | None = None
    ) -> list[Instance]:
        """Every instance with exactly this name that still exists at the cloud, in any
        state but terminated (preempted, stopped, failed and terminating ones bill, or may):
        the preferred one first (`errors.preferred`). Two or more are twins: a duplicate.
        `since` as for `get`."""
        ...

    async def find(self, name: str) -> Instance | None:
        """The preferred of `find_all(name)`, if any."""
        ...

    async def list_instances(self, name_prefix: str) -> list[Instance]:
        """Instances, in any state but terminated, whose name starts with `name_prefix`."""
        ...

    async def terminate(self, instance_id: str) -> None:
        """Ask the cloud to terminate; an unknown or already gone instance is not an error.

        Idempotent and remembered (`errors.TerminateLog`): once the cloud accepted it, a
        repeat within `TERMINATE_RESEND_SECONDS` sends nothing; an instance the cloud
        said is gone is never asked about again.
        """
        ...

    async def cleanup(self, name: str) -> None:
        """Delete what the cloud keeps for machines named `name` besides the machine
        (Paperspace: the startup script of that name). Call once no machine of that name
        exists any more; a script still assigned to a live machine is left alone.
        Idempotent; clouds that keep nothing make no call."""
        ...

    async def validate_credentials(self) -> None:
        """Raises AuthError when the key is rejected."""
        ...

    async def close(self) -> None: ...
