"""The leak collector: terminate this cluster's instances that no request owns.

Every `interval`, for every GPUProvider it can reach, list the instances (in any
state but terminated) whose name carries this cluster's prefix (`gpuctl-<cluster>-`).
An instance is owned when a GPUNodeRequest with that UID exists, its current attempt
has that name (on that provider), and its status records that instance's id — or no
instance yet (a launch in flight; the launch step adopts it). Ownership is by name AND
cloud id: a second machine under the name of an attempt that recorded another one is a
twin, terminated at once (no grace: its attempt has its machine) with a
`DuplicateInstance` Event on the request and `gpuctl_duplicate_instances_total`.
Anything else — a request deleted while its finalizer was forced off, an attempt
abandoned after a failover whose terminate was lost, a launch the cloud completed after
an error — is an orphan. Orphans are terminated once they have been unowned for `grace`:
since their launch when the cloud reports one, else since they may first have been
unowned (the provider's previous pass, or the collector's start). So an orphan goes at
most `interval` + `grace` after it became unowned (or, for a machine the cloud gives a
launch time, after its launch). The grace covers the moment between a launch and the
status write that records it. When an instance seen on one pass is gone on the next,
what the cloud keeps for it besides the machine (a Paperspace startup script) is
cleaned up (`Driver.cleanup`). Runs only on the leader.

Providers are collected in parallel and independently: each tick starts one pass per
provider whose previous pass has finished, so a slow or rate-limited cloud (its pass
waits for its own tokens, in its own task) never delays another's; it is skipped at the
ticks that find it still busy.

`gpuctl_unowned_instance_seconds_total{provider}` adds, at every pass, the time each
listed orphan or twin has been unowned: from the later of its launch and the provider's
previous pass (or the collector's start) on its first sighting, from the last pass
after that, up to the last pass that still listed it (one `interval` resolution).
`gpuctl_unowned_instances{provider}` is how many the last pass listed.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable
from typing import Any

import attrs

from gpuctl.controllers import naming
from gpuctl.controllers.drivers import DriverPool, ProviderUnavailableError
from gpuctl.controllers.metrics import DUPLICATES, LEAKS_COLLECTED, UNOWNED, UNOWNED_SECONDS
from gpuctl.providers.base import Instance, ProviderError
from gpuctl.runtime.events import EventRecorder
from gpuctl.runtime.store import Store

log = logging.getLogger(__name__)

UID_INDEX = "uid12"  # index of the request store: the first 12 hex digits of the UID
OWNED: dict[str, Any] = {}  # `Collector._owner`'s answer for an owned instance


def uid_index(obj: dict[str, object]) -> list[str]:
    metadata = obj.get("metadata")
    uid = metadata.get("uid") if isinstance(metadata, dict) else None
    return [naming.uid_part(str(uid))] if uid else []


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@attrs.define
class Collector:
    cluster_name: str
    requests: Store
    drivers: DriverPool
    events: EventRecorder
    interval: float = 120.0
    grace: datetime.timedelta = datetime.timedelta(minutes=10)
    clock: Callable[[], datetime.datetime] = _utcnow
    _first_seen: dict[tuple[str, str], datetime.datetime] = attrs.field(factory=dict)
    _collected: set[tuple[str, str]] = attrs.field(factory=set)  # terminating already
    _names: dict[tuple[str, str], str] = attrs.field(factory=dict)  # seen last pass
    _counted: dict[tuple[str, str], datetime.datetime] = attrs.field(factory=dict)  # unowned
    _passes: dict[str, datetime.datetime] = attrs.field(factory=dict)  # provider -> last pass
    _tasks: dict[str, asyncio.Task[int]] = attrs.field(factory=dict)  # passes in flight
    _started: datetime.datetime | None = None

    async def run(self) -> None:
        """Every `interval`, a pass of every provider not still busy (a manager runnable)."""
        try:
            while True:
                self.start_passes()
                await asyncio.sleep(self.interval)
        finally:
            tasks = [t for t in self._tasks.values() if not t.done()]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks)

    def start_passes(self) -> list[asyncio.Task[int]]:
        """Start a pass of each provider whose last pass is done; the tasks started."""
        started = []
        for provider in self.drivers.names():
            running = self._tasks.get(provider)
            if running is not None and not running.done():
                log.info("leak collection of %s still running; skipped this tick", provider)
                continue
            task = asyncio.create_task(self._guarded(provider), name=f"collect-{provider}")
            self._tasks[provider] = task
            started.append(task)
        return started

    async def _guarded(self, provider: str) -> int:
        try:
            return await self.collect_provider(provider)
        except Exception:
            log.exception("leak collection of %s failed; will retry", provider)
            return 0

    async def collect_once(self) -> int:
        """One pass over every provider, in parallel; how many instances were terminated."""
        counts = await asyncio.gather(*(self.collect_provider(p) for p in self.drivers.names()))
        return sum(counts)

    async def collect_provider(self, provider: str) -> int:
        """One pass over `provider`; how many of its instances were terminated."""
        if self._started is None:
            self._started = self.clock()
        try:
            driver = self.drivers.get(provider)
            instances = await driver.list_instances(naming.prefix(self.cluster_name))
        except (ProviderUnavailableError, ProviderError) as err:
            log.info("leak collection skips %s: %s", provider, err, extra={"provider": provider})
            return 0
        now = self.clock()
        previous = self._passes.get(provider, self._started)
        collected, unowned = 0, 0
        seen: set[tuple[str, str]] = set()
        for instance in instances:
            key = (provider, instance.id)
            seen.add(key)
            self._names[key] = instance.name
            owner = self._owner(provider, instance)
            if owner is OWNED:
                self._counted.pop(key, None)
                continue
            unowned += 1
            self._count_unowned(key, instance, now, previous)
            if key in self._collected:
                continue
            if owner is not None:  # a twin of the instance its attempt recorded
                await self._collect_twin(provider, instance, owner)
            elif self._old_enough(key, instance):
                await self._collect(provider, instance)
            else:
                continue
            self._collected.add(key)
            collected += 1
        self._passes[provider] = now
        UNOWNED.labels(provider).set(unowned)
        await self._clean_vanished(provider, seen)
        self._forget_unseen(provider, seen)
        return collected

    def _count_unowned(
        self,
        key: tuple[str, str],
        instance: Instance,
        now: datetime.datetime,
        previous: datetime.datetime,
    ) -> None:
        """Add the time `instance` has been unowned since it was last counted."""
        since = self._counted.get(key)
        if since is None:
            # Owned (or not there) at the provider's previous pass, as far as we know.
            launched = instance.launched_at
            since = max(previous, launched) if launched is not None else previous
            self._first_seen.setdefault(key, min(since, now))
        seconds = (now - since).total_seconds()
        if seconds > 0:
            UNOWNED_SECONDS.labels(key[0]).inc(seconds)
        self._counted[key] = max(since, now)

    def _forget_unseen(self, provider: str, seen: set[tuple[str, str]]) -> None:
        for table in (self._first_seen, self._counted):
            for key in [k for k in table if k[0] == provider and k not in seen]:
                del table[key]
        self._collected = {k for k in self._collected if k[0] != provider or k in seen}

    def _owner(self, provider: str, instance: Instance) -> dict[str, Any] | None:
        """OWNED; the request whose attempt recorded ANOTHER instance under this name
        (this one is a twin); or None: nobody's (an orphan)."""
        parsed = naming.parse(self.cluster_name, instance.name)
        if parsed is None:
            return OWNED  # not a name we make: never touch it
        for obj in self.requests.by_index(UID_INDEX, parsed.uid_part):
            status = obj.get("status") or {}
            offer = status.get("offer") or {}
            current = naming.instance_name(
                self.cluster_name, obj["metadata"]["uid"], int(status.get("attempt") or 0)
            )
            if offer.get("provider") == provider and current == instance.name:
                recorded = (status.get("instance") or {}).get("id")
                return OWNED if recorded in (None, "", instance.id) else obj
        return None

    async def _collect_twin(self, provider: str, instance: Instance, owner: dict[str, Any]) -> None:
        await self.drivers.get(provider).terminate(instance.id)
        DUPLICATES.labels(provider).inc()
        recorded = ((owner.get("status") or {}).get("instance") or {}).get("id")
        message = (
            f"terminated {instance.name} ({instance.id}) on {provider}: a second machine under "
            f"the name of the attempt that has {recorded}"
        )
        log.warning(message, extra={"provider": provider, "instance": instance.name})
        await self.events.record(owner, "Warning", "DuplicateInstance", message)

    async def _clean_vanished(self, provider: str, seen: set[tuple[str, str]]) -> None:
        """Instances of `provider` seen last pass and gone now: clean up what it keeps."""
        for key in [k for k in self._names if k[0] == provider and k not in seen]:
            name = self._names.pop(key)
            try:
                await self.drivers.get(provider).cleanup(name)
            except (ProviderUnavailableError, ProviderError) as err:
                log.info("cleanup of %s on %s failed: %s", name, provider, err)

    def _old_enough(self, key: tuple[str, str], instance: Instance) -> bool:
        """Unowned for `grace`: since its launch where the cloud says, else since it may
        first have been unowned (see `_count_unowned`)."""
        born = instance.launched_at or self._first_seen.get(key) or self.clock()
        return self.clock() - born >= self.grace

    async def _collect(self, provider: str, instance: Instance) -> None:
        await self.drivers.get(provider).terminate(instance.id)
        LEAKS_COLLECTED.labels(provider).inc()
        message = f"terminated orphaned instance {instance.name} ({instance.id}) on {provider}"
        log.warning(message, extra={"provider": provider, "instance": instance.name})
        parsed = naming.parse(self.cluster_name, instance.name)
        owners = self.requests.by_index(UID_INDEX, parsed.uid_part) if parsed else []
        for owner in owners:
            await self.events.record(owner, "Warning", "LeakCollected", message)
