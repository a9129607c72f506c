"""The simulated clouds' state: capacity, prices, instances and their lifecycle.

Semantics:
- Capacity is a count per (cloud, native region, instance type): instances for
  Lambda and Paperspace, free GPUs for RunPod. Launching takes it; an instance
  gives it back when it is TERMINATED or PREEMPTED (the sim does not model the
  tenant that took a preempted machine).
- Lifecycle: BOOTING -(boot_seconds)-> RUNNING -(terminate)-> TERMINATING
  -(terminate_seconds)-> TERMINATED. Spot instances may go RUNNING -> PREEMPTED
  at a time drawn at launch from an exponential distribution with
  `interrupt_rate` per instance-hour; `interrupt()` preempts at once. RunPod's
  stop/start move RUNNING <-> STOPPED (a start boots again).
- Time only moves when `advance()` runs (the simulator calls it on every request
  and from a ticker), so transitions happen at their due time on the `Clock`.
- Deterministic: ids, addresses and interruption times come from RNGs seeded by
  (seed, cloud, purpose), so the same call sequence gives the same results.
- Listeners hear every phase change, in due-time order: the machines hang off this.
- Eventual consistency: `set_list_lag(cloud, s)` keeps a new instance out of the
  cloud's list answers for its first `s` seconds (reads by id see it at once), as a
  cloud whose listing lags its writes does.
- Failed provisioning: `fail_next_boots(cloud, n, error)` makes the next `n` launches
  never finish booting (the machine stays booting, billed); the error is kept in
  `CloudState.boot_errors` (Paperspace reports it as its create event's error).
- Billing: `billed_usd(cloud, id)` is what the cloud charges for an instance: its
  price for every second from its creation until it is terminated (no minimum, no
  rounding to the cloud's billing unit), the reference gpuctl's cost ledger is
  checked against.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs

from gpuctl.sim.clock import Clock
from gpuctl.sim.config import CLOUDS, CloudCatalog, SimConfig
from gpuctl.sim.model import Phase, SimInstance

CAPACITY_TYPES = ("on-demand", "community", "spot")
Listener = Callable[[SimInstance, Phase, Phase], None]

# Documentation address ranges (RFC 5737), one per cloud, for public IPs.
_PUBLIC_NETS = {
    "lambda": "203.0.113",
    "runpod": "198.51.100",
    "paperspace": "192.0.2",
    "crusoe": "198.18.0",  # RFC 2544 benchmarking range: 5737 has only three
    "hyperstack": "198.18.1",
    "digitalocean": "198.18.2",
}


class NoCapacityError(Exception):
    """Not enough free capacity for the launch."""


class InvalidTransitionError(Exception):
    """The instance's phase does not allow the requested change."""


class UnknownObjectError(KeyError):
    """No such cloud, region, instance type or instance."""


@attrs.define
class CloudState:
    """Capacity, prices and instances of one cloud."""

    cloud: str
    catalog: CloudCatalog
    seed: int
    capacity: dict[tuple[str, str], int] = attrs.field(factory=dict)
    prices: dict[tuple[str, str], float] = attrs.field(factory=dict)
    instances: dict[str, SimInstance] = attrs.field(factory=dict)
    # Other objects a cloud keeps (Paperspace startup scripts), by kind then id.
    objects: dict[str, dict[str, dict[str, Any]]] = attrs.field(factory=dict)
    list_lag: float = 0.0  # seconds a new instance stays out of list answers
    boot_failures: list[str] = attrs.field(factory=list)  # errors for the next launches
    boot_errors: dict[str, str] = attrs.field(factory=dict)  # instance id -> its error
    _ids: random.Random = attrs.field(init=False)
    _interrupts: random.Random = attrs.field(init=False)
    _launched: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        self._ids = random.Random(f"{self.seed}/{self.cloud}/ids")
        self._interrupts = random.Random(f"{self.seed}/{self.cloud}/interrupts")
        for region in self.catalog.regions:
            for name in self.catalog.types:
                self.capacity[(region, name)] = self.catalog.initial_capacity(region, name)
        for name, machine in self.catalog.types.items():
            self.prices[(name, "on-demand")] = machine.price
            community = machine.community_price
            if community is not None:
                self.prices[(name, "community")] = community
                self.prices[(name, "spot")] = round(community * self.catalog.spot_factor, 4)

    def new_id(self, length: int, alphabet: str = string.ascii_lowercase + string.digits) -> str:
        return "".join(self._ids.choice(alphabet) for _ in range(length))

    def interruption_delay(self, rate_per_hour: float) -> float | None:
        if rate_per_hour <= 0:
            return None
        return self._interrupts.expovariate(rate_per_hour / 3600.0)

    def next_addresses(self) -> tuple[str, str]:
        """(public, private) IPv4 addresses for the next instance."""
        self._launched += 1
        n = self._launched
        public = f"{_PUBLIC_NETS[self.cloud]}.{(n - 1) % 254 + 1}"
        return public, f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"

    def free(self, region: str, instance_type: str) -> int:
        return self.capacity.get((region, instance_type), 0)

    def price(self, instance_type: str, capacity_type: str = "on-demand") -> float | None:
        return self.prices.get((instance_type, capacity_type))

    def live(self) -> Iterator[SimInstance]:
        return (i for i in self.instances.values() if i.phase is not Phase.TERMINATED)

    def listed(self, now: float) -> Iterator[SimInstance]:
        """What a list answer shows now: live instances older than `list_lag`."""
        return (i for i in self.live() if now - i.created_at >= self.list_lag)


class SimState:
    """All clouds' state plus the lifecycle engine."""

    def __init__(self, config: SimConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self._listeners: list[Listener] = []
        self.wake: Callable[[], None] = lambda: None  # set by the simulator's ticker
        self.clouds: dict[str, CloudState] = {}
        self.reset()

    def reset(self) -> None:
        """Back to the configured catalogue, capacity and prices; no instances."""
        self.clouds = {
            cloud: CloudState(cloud, self.config.catalog(cloud), self.config.seed)
            for cloud in CLOUDS
        }

    def cloud(self, cloud: str) -> CloudState:
        try:
            return self.clouds[cloud]
        except KeyError:
            raise UnknownObjectError(f"unknown cloud {cloud!r}") from None

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    # -- the public knobs (sim.state.*) -------------------------------------------

    def set_capacity(self, cloud: str, native_region: str, instance_type: str, count: int) -> None:
        """Free capacity now: instances (Lambda, Paperspace) or GPUs (RunPod)."""
        state = self.cloud(cloud)
        if native_region not in state.catalog.regions:
            raise UnknownObjectError(f"{cloud}: unknown region {native_region!r}")
        if instance_type not in state.catalog.types:
            raise UnknownObjectError(f"{cloud}: unknown instance type {instance_type!r}")
        state.capacity[(native_region, instance_type)] = max(0, int(count))

    def set_price(
        self,
        cloud: str,
        instance_type: str,
        usd_per_hour: float,
        capacity_type: str = "on-demand",
    ) -> None:
        """List price of new instances; RunPod: per GPU, on-demand = secure cloud."""
        state = self.cloud(cloud)
        if instance_type not in state.catalog.types:
            raise UnknownObjectError(f"{cloud}: unknown instance type {instance_type!r}")
        if capacity_type not in CAPACITY_TYPES:
            raise ValueError(f"capacity_type must be one of {CAPACITY_TYPES}")
        state.prices[(instance_type, capacity_type)] = float(usd_per_hour)

    def set_list_lag(self, cloud: str, seconds: float) -> None:
        """New instances appear in the cloud's lists only `seconds` after their creation."""
        self.cloud(cloud).list_lag = max(0.0, float(seconds))

    def fail_next_boots(self, cloud: str, count: int = 1, error: str = "") -> None:
        """The next `count` launches on `cloud` are created but never finish booting."""
        message = error or "Failed to provision the machine: hypervisor error"
        self.cloud(cloud).boot_failures.extend([message] * count)

    def billed_usd(self, cloud: str, instance_id: str) -> float:
        """What the cloud bills for the instance so far: price x seconds it existed."""
        instance = self.instance(cloud, instance_id)
        end = self.clock.now()
        if instance.phase is Phase.TERMINATED and instance.terminated_at is not None:
            end = instance.terminated_at
        return instance.price_per_hour * max(0.0, end - instance.created_at) / 3600.0

    def interrupt(self, cloud: str, instance_id: str) -> SimInstance:
        """Spot preemption now (allowed on any booting or running instance)."""
        instance = self.instance(cloud, instance_id)
        if instance.phase not in (Phase.BOOTING, Phase.RUNNING):
            raise InvalidTransitionError(f"{instance_id} is {instance.phase}, not running")
        self._move(instance, Phase.PREEMPTED, self.clock.now())
        return instance

    # -- lifecycle used by the cloud APIs ------------------------------------------

    def instance(self, cloud: str, instance_id: str) -> SimInstance:
        try:
            return self.cloud(cloud).instances[instance_id]
        except KeyError:
            raise UnknownObjectError(f"{cloud}: no instance {instance_id!r}") from None

    def launch(
        self,
        cloud: str,
        *,
        instance_id: str,
        name: str,
        instance_type: str,
        region: str,
        gpu_count: int,
        vcpus: int,
        memory_gib: int,
        units: int,
        spot: bool,
        price_per_hour: float,
        join_script: str = "",
        join_env: Mapping[str, str] | None = None,
        request: Mapping[str, Any] | None = None,
    ) -> SimInstance:
        """Take `units` of capacity and start booting; raises NoCapacityError."""
        state = self.cloud(cloud)
        if state.free(region, instance_type) < units:
            raise NoCapacityError(f"no capacity for {units} x {instance_type} in {region}")
        state.capacity[(region, instance_type)] -= units
        now = self.clock.now()
        public, private = state.next_addresses()
        instance = SimInstance(
            cloud=cloud,
            id=instance_id,
            name=name,
            instance_type=instance_type,
            region=region,
            gpu_count=gpu_count,
            vcpus=vcpus,
            memory_gib=memory_gib,
            spot=spot,
            price_per_hour=price_per_hour,
            created_at=now,
            phase_since=now,
            join_script=join_script,
            join_env=dict(join_env or {}),
            public_ip=public,
            private_ip=private,
            capacity_units=units,
            request=dict(request or {}),
        )
        state.instances[instance_id] = instance
        self._boot(instance, now)
        if state.boot_failures:
            state.boot_errors[instance_id] = state.boot_failures.pop(0)
            instance.running_at = None  # never boots: stays booting until terminated
        return instance

    def terminate(self, instance: SimInstance) -> None:
        """Start terminating; a no-op when already terminating or terminated."""
        if not instance.phase.live:
            return
        now = self.clock.now()
        instance.terminated_at = now + self.config.terminate_seconds
        self._move(instance, Phase.TERMINATING, now)

    def stop(self, instance: SimInstance) -> None:
        if instance.phase not in (Phase.BOOTING, Phase.RUNNING):
            raise InvalidTransitionError(f"{instance.id} is {instance.phase}")
        self._move(instance, Phase.STOPPED, self.clock.now())

    def start(self, instance: SimInstance) -> None:
        """Boot a stopped or preempted instance again; a preempted one needs capacity."""
        if instance.phase in (Phase.BOOTING, Phase.RUNNING):
            return
        if instance.phase not in (Phase.STOPPED, Phase.PREEMPTED):
            raise InvalidTransitionError(f"{instance.id} is {instance.phase}")
        if not instance.holds_capacity:
            state = self.cloud(instance.cloud)
            key = (instance.region, instance.instance_type)
            if state.capacity.get(key, 0) < instance.capacity_units:
                raise NoCapacityError(f"no capacity to restart {instance.id}")
            state.capacity[key] -= instance.capacity_units
            instance.holds_capacity = True
        now = self.clock.now()
        self._move(instance, Phase.BOOTING, now)
        self._boot(instance, now)

    # -- time -----------------------------------------------------------------------

    def next_due(self) -> float | None:
        """The earliest pending transition time, if any."""
        due = [t for s in self.clouds.values() for i in s.instances.values() if (t := _due(i))]
        return min(due, default=None)

    def advance(self) -> None:
        """Apply every transition due by now, each at its own due time."""
        now = self.clock.now()
        for state in self.clouds.values():
            for instance in list(state.instances.values()):
                while (due := _due(instance)) is not None and due <= now:
                    self._move(instance, _next_phase(instance), due)

    # -- internals ------------------------------------------------------------------

    def _boot(self, instance: SimInstance, now: float) -> None:
        instance.running_at = now + self.config.boot_seconds
        instance.interrupt_at = None
        if instance.spot:
            delay = self.cloud(instance.cloud).interruption_delay(self.config.interrupt_rate)
            if delay is not None:
                instance.interrupt_at = instance.running_at + delay
        self.wake()

    def _move(self, instance: SimInstance, phase: Phase, at: float) -> None:
        old = instance.phase
        instance.phase = phase
        instance.phase_since = at
        if phase in (Phase.TERMINATED, Phase.PREEMPTED):
            self._release(instance)
        if phase is Phase.TERMINATED:
            instance.terminated_at = at
        self.wake()
        for listener in self._listeners:
            listener(instance, old, phase)

    def _release(self, instance: SimInstance) -> None:
        if instance.holds_capacity:
            state = self.cloud(instance.cloud)
            key = (instance.region, instance.instance_type)
            state.capacity[key] = state.capacity.get(key, 0) + instance.capacity_units
            instance.holds_capacity = False


def _due(instance: SimInstance) -> float | None:
    if instance.phase is Phase.BOOTING:
        return instance.running_at
    if instance.phase is Phase.RUNNING:
        return instance.interrupt_at
    if instance.phase is Phase.TERMINATING:
        return instance.terminated_at
    return None


def _next_phase(instance: SimInstance) -> Phase:
    return {
        Phase.BOOTING: Phase.RUNNING,
        Phase.RUNNING: Phase.PREEMPTED,
        Phase.TERMINATING: Phase.TERMINATED,
    }[instance.phase]
