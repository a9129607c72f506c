"""The leak collector per provider: in parallel, within `interval` + `grace`, and counted.

- an orphan is terminated at the first pass at least `grace` after it may first have
  been unowned, so within `interval` + `grace` of that;
- `gpuctl_unowned_instance_seconds_total{provider}` adds the time each orphan was
  listed unowned, pass by pass; an owned machine adds nothing;
- a provider whose list hangs (a slow or rate-limited cloud) does not delay another's
  pass, and is not started twice.
"""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

from gpuctl.controllers import naming
from gpuctl.controllers.garbagecollect import UID_INDEX, Collector, uid_index
from gpuctl.controllers.metrics import UNOWNED, UNOWNED_SECONDS
from gpuctl.providers.base import Instance, InstanceState
from gpuctl.runtime.store import Store

T0 = datetime.datetime(2026, 11, 29, 12, 0, tzinfo=datetime.UTC)
UID = "0123456789ab-cdef-0000-0000-000000000000"
GRACE = datetime.timedelta(seconds=60)
INTERVAL = datetime.timedelta(seconds=20)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime.datetime:
        return self.now


class Driver:
    def __init__(self, *instances: Instance) -> None:
        self.instances = list(instances)
        self.terminated: list[str] = []
        self.hang: asyncio.Event | None = None
        self.lists = 0

    async def list_instances(self, prefix: str) -> list[Instance]:
        self.lists += 1
        if self.hang is not None:
            await self.hang.wait()
        return [i for i in self.instances if i.name.startswith(prefix)]

    async def terminate(self, instance_id: str) -> None:
        self.terminated.append(instance_id)

    async def cleanup(self, name: str) -> None:
        pass


class Pool:
    def __init__(self, **drivers: Driver) -> None:
        self.drivers = drivers

    def names(self) -> list[str]:
        return sorted(self.drivers)

    def get(self, name: str) -> Driver:
        return self.drivers[name]


class Events:
    async def record(self, obj: Any, type_: str, reason: str, message: str) -> None:
        pass


def orphan(instance_id: str, launched: datetime.datetime | None) -> Instance:
    name = naming.instance_name("c1", UID, 1)  # no request has this UID: nobody's
    return Instance(instance_id, name, InstanceState.RUNNING, "RUNNING", launched_at=launched)


def collector(pool: Pool, clock: Clock) -> Collector:
    store = Store()
    store.add_indexer(UID_INDEX, uid_index)
    return Collector(
        "c1",
        store,
        pool,  # type: ignore[arg-type]
        Events(),  # type: ignore[arg-type]
        interval=INTERVAL.total_seconds(),
        grace=GRACE,
        clock=clock,
    )


def unowned_seconds(provider: str) -> float:
    return UNOWNED_SECONDS.labels(provider)._value.get()  # type: ignore[no-any-return]


async def test_an_orphan_goes_within_interval_plus_grace_and_its_time_is_counted() -> None:
    clock = Clock()
    driver = Driver()
    gc = collector(Pool(p1=driver), clock)
    before = unowned_seconds("p1")
    assert await gc.collect_once() == 0  # the first pass: nothing yet
    clock.now += datetime.timedelta(seconds=5)
    driver.instances = [orphan("m1", None)]  # became unowned after that pass
    passes = 0
    while not driver.terminated:
        clock.now += INTERVAL
        await gc.collect_once()
        passes += 1
    # unowned since the previous pass at the latest (T0): gone by T0 + grace + interval
    assert clock.now - T0 <= GRACE + INTERVAL + datetime.timedelta(seconds=5)
    assert driver.terminated == ["m1"]
    counted = unowned_seconds("p1") - before
    assert counted == (clock.now - T0).total_seconds()  # from the last pass it was not seen
    assert UNOWNED.labels("p1")._value.get() == 1
    driver.instances = []
    clock.now += INTERVAL
    await gc.collect_once()
    assert unowned_seconds("p1") - before == counted  # gone: counting stopped
    assert UNOWNED.labels("p1")._value.get() == 0


async def test_a_launch_time_bounds_the_unowned_time_and_an_old_orphan_goes_at_once() -> None:
    clock = Clock()
    clock.now = T0 + datetime.timedelta(hours=1)
    young = orphan("young", clock.now - datetime.timedelta(seconds=10))
    old = orphan("old", T0)
    driver = Driver(young, old)
    gc = collector(Pool(p2=driver), clock)
    before = unowned_seconds("p2")
    assert await gc.collect_once() == 1 and driver.terminated == ["old"]  # leaked long ago
    # Both counted from the collector's start (this pass): nothing to add yet.
    assert unowned_seconds("p2") == before
    clock.now += INTERVAL
    await gc.collect_once()
    assert unowned_seconds("p2") - before == 2 * INTERVAL.total_seconds()


async def test_a_hanging_provider_does_not_delay_another() -> None:
    clock = Clock()
    slow, fast = Driver(orphan("s1", T0)), Driver(orphan("f1", T0))
    slow.hang = asyncio.Event()
    gc = collector(Pool(fast=fast, slow=slow), clock)
    clock.now = T0 + GRACE * 2
    first = gc.start_passes()
    await asyncio.wait(first, timeout=5, return_when=asyncio.FIRST_COMPLETED)
    assert fast.terminated == ["f1"] and slow.terminated == []
    again = gc.start_passes()  # the next tick: the slow pass is still running
    assert [t.get_name() for t in again] == ["collect-fast"] and slow.lists == 1
    slow.hang.set()
    await asyncio.wait(first + again, timeout=5)
    assert slow.terminated == ["s1"]
