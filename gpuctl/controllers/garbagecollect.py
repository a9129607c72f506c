"""The leak collector: terminate this cluster's instances that no request owns.

Every `interval`, for every GPUProvider it can reach, list the live instances whose
name carries this cluster's prefix (`gpuctl-<cluster>-`). An instance is owned when
a GPUNodeRequest with that UID exists and its current attempt has that name (on
that provider). Anything else — a request deleted while its finalizer was forced
off, an attempt abandoned after a failover whose terminate was lost, a launch the
cloud completed after an error — is an orphan. Orphans are terminated once they are
older than `grace` (by launch time, or since first seen when the cloud gives none):
the grace covers the moment between a launch and the status write that records it.
Runs only on the leader.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable

import attrs

from gpuctl.controllers import naming
from gpuctl.controllers.drivers import DriverPool, ProviderUnavailableError
from gpuctl.controllers.metrics import LEAKS_COLLECTED
from gpuctl.providers.base import Instance, ProviderError
from gpuctl.runtime.events import EventRecorder
from gpuctl.runtime.store import Store

log = logging.getLogger(__name__)

UID_INDEX = "uid12"  # index of the request store: the first 12 hex digits of the UID


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
        for provider in self.drivers.names():
            try:
                driver = self.drivers.get(provider)
                instances = await driver.list_instances(naming.prefix(self.cluster_name))
            except (ProviderUnavailableError, ProviderError) as err:
                log.info(
                    "leak collection skips %s: %s", provider, err, extra={"provider": provider}
                )
                continue
            for instance in instances:
                key = (provider, instance.id)
                seen.add(key)
                if key in self._collected or self._owned(provider, instance):
                    continue
                if self._old_enough(provider, instance):
                    await self._collect(provider, instance)
                    self._collected.add(key)
                    collected += 1
        for key in set(self._first_seen) - seen:
            del self._first_seen[key]
        self._collected &= seen
        return collected

    def _owned(self, provider: str, instance: Instance) -> bool:
        parsed = naming.parse(self.cluster_name, instance.name)
        if parsed is None:
            return True  # not a name we make: never touch it
        for obj in self.requests.by_index(UID_INDEX, parsed.uid_part):
            status = obj.get("status") or {}
            offer = status.get("offer") or {}
            current = naming.instance_name(
                self.cluster_name, obj["metadata"]["uid"], int(status.get("attempt") or 0)
            )
            if offer.get("provider") == provider and current == instance.name:
                return True
        return False

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
