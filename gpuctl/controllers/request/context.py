"""What every lifecycle step works with: the shared services and one reconcile's state.

A step reads `ctx.request` (typed, as cached), mutates `ctx.status` (a copy that the
controller writes back once, after the steps, only if it changed), queues Events
with `ctx.event()` (recorded only after the status write succeeded, so an Event
never announces a state the API server does not hold) and returns either `None`
(continue with the next step) or a `Result` (stop here; write status; requeue).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, Literal

import attrs

from gpuctl.api import (
    MAX_FAILED_OFFERS,
    FailedOffer,
    GPUNodeRequest,
    GPUNodeRequestStatus,
    OfferStatus,
    Phase,
    set_condition,
)
from gpuctl.api import CapacityType as ApiCapacityType
from gpuctl.controllers import naming
from gpuctl.controllers.bootstrap import Token
from gpuctl.controllers.drivers import DriverPool
from gpuctl.controllers.metrics import REQUEST_FAILURES
from gpuctl.providers.base import CapacityType, Instance, Offer
from gpuctl.providers.capacity import CapacityCache
from gpuctl.runtime.client import Client
from gpuctl.runtime.events import EventRecorder
from gpuctl.runtime.reconcile import Result
from gpuctl.runtime.store import Store

EventType = Literal["Normal", "Warning"]
NOW = Result(requeue_after=0.05)  # go on at once (the status write also triggers a watch event)


@attrs.frozen
class Settings:
    cluster_name: str
    namespace: str  # the operator's namespace: credentials and templates live there
    join_endpoint: str  # the API server URL machines join, reachable from the clouds
    ca_cert_hash: str  # sha256:<hex> of the cluster CA's public key
    ready_poll: float = 30.0  # seconds between instance checks once Ready
    joining_poll: float = 5.0  # seconds between checks while waiting for the Node
    termination_poll: float = 5.0  # seconds between checks while waiting for the cloud
    token_margin: datetime.timedelta = datetime.timedelta(minutes=15)
    # A Ready machine whose Node stays not Ready (or gone) this long is replaced.
    node_unhealthy_after: datetime.timedelta = datetime.timedelta(minutes=5)
    # After a create whose outcome is unknown, how long a look-up by name must keep
    # finding nothing before the machine is taken not to exist (clouds list eventually
    # consistently); a relaunch or a teardown waits that long.
    launch_settle: datetime.timedelta = datetime.timedelta(seconds=15)
    # News about a booting machine (seen running, its Node registered, waiting for its
    # GPUs) is held back at most this long to go out with the next status write, Ready
    # as a rule (`coalesce`); 0: written at once.
    status_coalesce: datetime.timedelta = datetime.timedelta(seconds=60)


@attrs.define
class LaunchMemory:
    """What this process knows about the creates it sent (lost on restart, by design).

    `settled` attempts (request uid, attempt) have no create of unknown outcome behind
    them: this process created their bootstrap token itself (a create always comes
    after the token) and every create it sent got an answer. `uncertain` attempts may
    have a machine nobody recorded, since the given time: this process sent a create
    that got no answer then, or met the attempt then with a token and no recorded
    machine (an earlier process may have crashed between the cloud's answer and the
    status write). An attempt in neither is met for the first time. `machines` are the
    attempts this process recorded a machine for (a create's answer, or found by name):
    even if that record never reached the API server, a machine exists; `unwritten`
    keeps each such machine with the start of its bill until a status read back holds it.
    """

    settled: set[tuple[str, int]] = attrs.field(factory=set)
    uncertain: dict[tuple[str, int], datetime.datetime] = attrs.field(factory=dict)
    machines: set[tuple[str, int]] = attrs.field(factory=set)
    # The write recording a machine may be lost (a 409 on a stale copy), and the next
    # look-up by name may not list it yet (a shared list sent before the create): the
    # attempt is settled, so a second create went out under the same name (a duplicate
    # seen in a clean-clone run). The launch step records the machine again from here.
    unwritten: dict[tuple[str, int], tuple[Instance, datetime.datetime]] = attrs.field(factory=dict)
    # The token this process created for an attempt, with its Secret as the API server
    # answered the create: a launch retried (rate limited, transient error) uses them
    # without a GET. Dropped once the attempt has a machine (no launch needs it any more).
    tokens: dict[tuple[str, int], tuple[Token, Mapping[str, Any]]] = attrs.field(factory=dict)
    # The monotonic time of the rate-limit slot an attempt's create is waiting for: until
    # then a wake-up (the watch event of the request's own write) sends nothing.
    slots: dict[tuple[str, int], float] = attrs.field(factory=dict)

    def nothing_there(self, key: tuple[str, int]) -> bool:
        """Certainly no machine under the attempt's name: settled, and none recorded."""
        return key in self.settled and key not in self.machines

    def settle(self, key: tuple[str, int]) -> None:
        self.uncertain.pop(key, None)
        self.settled.add(key)

    def doubt(self, key: tuple[str, int], since: datetime.datetime) -> None:
        self.settled.discard(key)
        self.uncertain[key] = since

    def record_machine(
        self, key: tuple[str, int], instance: Instance, start: datetime.datetime
    ) -> None:
        """A machine recorded for the attempt, billed from `start` (see `unwritten`)."""
        self.machines.add(key)
        self.unwritten[key] = (instance, start)
        self.tokens.pop(key, None)
        self.slots.pop(key, None)

    def forget(self, uid: str) -> None:
        self.settled = {k for k in self.settled if k[0] != uid}
        self.tokens = {k: v for k, v in self.tokens.items() if k[0] != uid}
        self.machines = {k for k in self.machines if k[0] != uid}
        self.unwritten = {k: v for k, v in self.unwritten.items() if k[0] != uid}
        self.slots = {k: v for k, v in self.slots.items() if k[0] != uid}
        for key in [k for k in self.uncertain if k[0] == uid]:
            del self.uncertain[key]


@attrs.define
class Services:
    client: Client
    events: EventRecorder
    drivers: DriverPool
    capacity: CapacityCache
    nodes: Store
    settings: Settings
    # (request, instance id) -> last cloud poll; in memory: a restart polls at once.
    last_poll: dict[tuple[str, str], datetime.datetime] = attrs.field(factory=dict)
    launches: LaunchMemory = attrs.field(factory=LaunchMemory)
    # (request, instance id) a look showed live in teardown whose terminate then waited
    # for a rate-limit slot: the next pass sends it before looking again.
    terminate_owed: set[tuple[str, str]] = attrs.field(factory=set)
    # request -> when this process began its teardown: its looks want answers sent after
    # it (termination._since), shared by every request torn down at the same time.
    teardown_since: dict[str, datetime.datetime] = attrs.field(factory=dict)
    clock: Callable[[], datetime.datetime] = attrs.field(
        factory=lambda: lambda: datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    )


@attrs.define
class Ctx:
    obj: dict[str, Any]
    request: GPUNodeRequest
    status: GPUNodeRequestStatus
    now: datetime.datetime
    services: Services
    pending_events: list[tuple[EventType, str, str]] = attrs.field(factory=list)
    stopped: bool = False
    # `obj` is what our own last status write returned (nothing changed it since):
    # the launch step needs no quorum read to know the cache is not stale.
    fresh: bool = False
    # What this reconcile's status write returned (None: nothing written).
    written: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.request.name

    @property
    def settings(self) -> Settings:
        return self.services.settings

    @property
    def instance_name(self) -> str:
        uid = self.request.metadata.uid or ""
        return naming.instance_name(self.settings.cluster_name, uid, self.status.attempt)

    def stop(self) -> Result:
        """End this reconcile's steps here: write status now, then go on at once.

        Used after a decision that must be persisted before the next step may act
        on it (an offer is chosen before any launch; a launch is recorded before
        anything waits on it).
        """
        self.stopped = True
        return NOW

    def event(self, type_: EventType, reason: str, message: str) -> None:
        self.pending_events.append((type_, reason, message))
        if type_ == "Warning":
            REQUEST_FAILURES.labels(reason).inc()

    def condition(self, type_: str, status: bool, reason: str, message: str = "") -> None:
        set_condition(
            self.status.conditions,
            type_,
            status,
            reason,
            message,
            observed_generation=self.request.metadata.generation,
            now=self.now,
        )

    def fail_offer(self, reason: str, message: str) -> None:
        """Forget the current offer (it failed) and go back to Pending for a new attempt."""
        offer = self.status.offer
        if offer is not None:
            failed = FailedOffer(
                provider=offer.provider,
                region=offer.native_region,
                instance_type=offer.instance_type,
                capacity_type=offer.capacity_type,
                reason=reason,
                message=message[:1024],
                at=self.now,
            )
            self.status.failed_offers = [*self.status.failed_offers, failed][-MAX_FAILED_OFFERS:]
        self.status.offer = None
        self.status.instance = None
        self.status.node_name = None
        self.status.phase = Phase.PENDING


def to_offer(offer: OfferStatus) -> Offer:
    """The driver-level offer recorded in status (the capacity cache's key needs it)."""
    return Offer(
        provider=offer.provider,
        cloud=offer.cloud,
        region=offer.region,
        native_region=offer.native_region,
        gpu_type=offer.gpu_type,
        gpu_count=offer.gpu_count,
        instance_type=offer.instance_type,
        capacity_type=CapacityType(offer.capacity_type.value),
        price_per_hour=Decimal(offer.price_per_hour),
    )


def from_offer(offer: Offer) -> OfferStatus:
    return OfferStatus(
        provider=offer.provider,
        cloud=offer.cloud,
        region=offer.region,
        native_region=offer.native_region,
        instance_type=offer.instance_type,
        gpu_type=offer.gpu_type,
        gpu_count=offer.gpu_count,
        capacity_type=ApiCapacityType(offer.capacity_type.value),
        price_per_hour=offer.price_per_hour,
    )
