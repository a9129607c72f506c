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
an error — is an orphan. Orphans are terminated once they are older than `grace` (by
launch time, or since first seen when the cloud gives none): the grace covers the
moment between a launch and the status write that records it. When an instance seen
on one pass is gone on the next, what the cloud keeps for it besides the machine (a
Paperspace startup script) is cleaned up (`Driver.cleanup`). Runs only on the leader.
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
from gpuctl.controllers.metrics import DUPLICATES, LEAKS_COLLECTED
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

    async def run(self) -> None:
        """Collect every `interval` until cancelled (a manager runnable)."""
        while True:
            try:
                await self.collect_once()
            except Exception:
                log.exception("leak collection failed; will retry")
            await asyncio.sleep(self.interval)

    async def collect_once(self) -> int:
        """One pass over every provider; returns how many instances were terminated."""
        collected = 0
        seen: set[tuple[str, str]] = set()
        listed: set[str] = set()  # providers that answered this pass
        for provider in self.drivers.names():
            try:
                driver = self.drivers.get(provider)
                instances = await driver.list_instances(naming.prefix(self.cluster_name))
            except (ProviderUnavailableError, ProviderError) as err:
                log.info(
                    "leak collection skips %s: %s", provider, err, extra={"provider": provider}
                )
                continue
            listed.add(provider)
            for instance in instances:
                key = (provider, instance.id)
                seen.add(key)
                self._names[key] = instance.name
                if key in self._collected:
                    continue
                owner = self._owner(provider, instance)
                if owner is OWNED:
                    continue
                if owner is not None:  # a twin of the instance its attempt recorded
                    await self._collect_twin(provider, instance, owner)
                elif self._old_enough(provider, instance):
                    await self._collect(provider, instance)
                else:
                    continue
                self._collected.add(key)
                collected += 1
        await self._clean_vanished(seen, listed)
        for key in set(self._first_seen) - seen:
            del self._first_seen[key]
        self._collected &= seen
        return collected

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

    async def _clean_vanished(self, seen: set[tuple[str, str]], listed: set[str]) -> None:
        """Instances seen last pass and gone now: clean up what their cloud keeps."""
        for key in [k for k in self._names if k not in seen and k[0] in listed]:
            provider, name = key[0], self._names.pop(key)
            try:
                await self.drivers.get(provider).cleanup(name)
            except (ProviderUnavailableError, ProviderError) as err:
                log.info("cleanup of %s on %s failed: %s", name, provider, err)

    def _old_enough(self, provider: str, instance: Instance) -> bool:
        now = self.clock()
        first = self._first_seen.setdefault((provider, instance.id), now)
        born = instance.launched_at or first
        return now - born >= self.grace

    async def _collect(self, provider: str, instance: Instance) -> None:
        await self.drivers.get(provider).terminate(instance.id)
        LEAKS_COLLECTED.labels(provider).inc()
        message = f"terminated orphaned instance {instance.name} ({instance.id}) on {provider}"
        log.warning(message, extra={"provider": provider, "instance": instance.name})
        parsed = naming.parse(self.cluster_name, instance.name)
        owners = self.requests.by_index(UID_INDEX, parsed.uid_part) if parsed else []
        for owner in owners:
            await self.events.record(owner, "Warning", "LeakCollected", message)
