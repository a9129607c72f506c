"""`providers.snapshot.Snapshots`: looks served by one shared list, and its exact rules;
then a teardown through it (a terminate per machine and a few lists, no GET per
machine) on RunPod and Lambda, requests torn down together sharing lists, and the
freshness liveness polls ask for."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from gpuctl.controllers.request import liveness, settle, termination
from gpuctl.controllers.request.context import Ctx
from gpuctl.providers import registry, snapshot
from gpuctl.providers.base import (
    DriverConfig,
    Instance,
    InstanceState,
    LaunchRequest,
    NotFoundError,
    RateLimitedError,
)
from gpuctl.providers.ratelimit import _PRIORITY, current_holder, nonblocking
from gpuctl.providers.snapshot import Snapshots
from tests.unit import test_spare_polls as spare_polls
from tests.unit.test_billing_bounds import Client, Drivers, make_ctx, request_obj
from tests.unit.test_providers_drivers import FAST, HANDLERS, JOIN, OPTIONS, FakeApi, Rig
from tests.unit.test_providers_fakes import running

T0 = datetime.datetime(2026, 11, 30, 2, 0, tzinfo=datetime.UTC)
SECOND = datetime.timedelta(seconds=1)


def machine(instance_id: str, state: InstanceState = InstanceState.RUNNING) -> Instance:
    return Instance(instance_id, f"name-{instance_id}", state, state.value)


class Cloud:
    """A list call over `machines`, counted; a GET by id for what lists do not show yet."""

    def __init__(self, *machines: Instance) -> None:
        self.machines = {m.id: m for m in machines}
        self.unlisted: dict[str, Instance] = {}  # too new for the cloud's listing
        self.now = T0
        self.lists = 0
        self.gets: list[str] = []
        self.holders: list[tuple[str | None, bool]] = []  # (holder, priority)
        self.release: asyncio.Event | None = None  # set: lists wait for it
        self.refuse: RateLimitedError | None = None

    async def fetch(self) -> list[Instance]:
        self.lists += 1
        self.holders.append((current_holder(), _PRIORITY.get()))
        if self.refuse is not None:
            raise self.refuse
        if self.release is not None:
            await self.release.wait()
        return list(self.machines.values())

    async def get(self, instance_id: str) -> Instance:
        self.gets.append(instance_id)
        found = self.machines.get(instance_id) or self.unlisted.get(instance_id)
        if found is None:
            raise NotFoundError(instance_id)
        return found

    def snapshots(self) -> Snapshots:
        return Snapshots(
            "p",
            self.fetch,
            lambda i: i.state is InstanceState.TERMINATED,
            self.get,
            clock=lambda: self.now,
        )


async def test_concurrent_looks_share_one_list_and_a_fresh_one_serves_later_looks() -> None:
    cloud = Cloud(machine("a"), machine("b"), machine("c", InstanceState.PREEMPTED))
    snapshots = cloud.snapshots()
    cloud.release = asyncio.Event()
    looks = [asyncio.ensure_future(snapshots.get(i, T0)) for i in "abc"]
    await asyncio.sleep(0)
    cloud.release.set()
    got = await asyncio.gather(*looks)
    assert [g.state for g in got] == [
        InstanceState.RUNNING,
        InstanceState.RUNNING,
        InstanceState.PREEMPTED,  # a preempted machine bills: answered as listed
    ]
    cloud.now += 5 * SECOND
    assert (await snapshots.get("a", T0 + SECOND)).id == "a"  # the list sent at T0 is older
    assert cloud.lists == 2  # T0 < T0 + 1 s: a new list
    assert (await snapshots.get("b", T0 + 2 * SECOND)).id == "b"  # sent at T0 + 5 s: served
    assert [i.id for i in await snapshots.find_all("name-c", T0)] == ["c"]
    assert cloud.lists == 2 and cloud.gets == []


async def test_a_terminated_machine_is_looked_at_only_in_a_list_sent_after_the_terminate() -> None:
    cloud = Cloud(machine("a"))
    snapshots = cloud.snapshots()
    assert (await snapshots.get("a", T0)).state is InstanceState.RUNNING
    cloud.now += SECOND
    snapshots.terminated("a")
    cloud.machines["a"] = machine("a", InstanceState.TERMINATED)
    # The caller accepts the list sent at T0; it predates the terminate: a new list.
    assert (await snapshots.get("a", T0)).state is InstanceState.TERMINATED
    assert cloud.lists == 2
    cloud.now += SECOND
    del cloud.machines["a"]
    with pytest.raises(NotFoundError):  # gone for good: no call
        await snapshots.get("a", T0)
    assert cloud.lists == 2 and cloud.gets == []


async def test_absent_after_being_listed_is_gone_never_listed_is_a_get() -> None:
    cloud = Cloud(machine("a"))
    snapshots = cloud.snapshots()
    await snapshots.listing(T0)
    cloud.now += SECOND
    del cloud.machines["a"]
    cloud.unlisted["new"] = machine("new")  # created moments ago: not listed yet
    with pytest.raises(NotFoundError):
        await snapshots.get("a", cloud.now)  # listed at T0, absent since: gone
    assert cloud.gets == []
    assert (await snapshots.get("new", cloud.now)).id == "new"  # never "gone" from a list
    assert cloud.gets == ["new"]
    assert await snapshots.find_all("name-a", cloud.now) == []
    for _ in range(2):  # unknown to the GET as well: gone, and asked for once
        with pytest.raises(NotFoundError):
            await snapshots.get("old", cloud.now)
    assert cloud.gets == ["new", "old"]
    # A process that never listed it, told lists show it from T0 on: gone, no GET.
    fresh = cloud.snapshots()
    with pytest.raises(NotFoundError):
        await fresh.get("a", cloud.now, listed_by=T0)
    assert (await fresh.get("new", cloud.now, listed_by=cloud.now + SECOND)).id == "new"
    assert cloud.gets == ["new", "old", "new"]  # not known to be listable yet: a GET


async def test_lists_run_under_their_own_holder_and_a_refusal_reaches_every_caller() -> None:
    cloud = Cloud(machine("a"))
    snapshots = cloud.snapshots()
    cloud.refuse = RateLimitedError("wait", retry_after=7.0)
    with nonblocking("gpunoderequest/r1"):
        looks = [asyncio.ensure_future(snapshots.get(i, T0)) for i in ("a", "b")]
        results = await asyncio.gather(*looks, return_exceptions=True)
    assert all(isinstance(r, RateLimitedError) and r.delay == 7.0 for r in results)
    # One list, one slot reserved, for the snapshot (whoever comes back first claims
    # it), ahead of the queue: it answers every look waiting on it.
    assert cloud.lists == 1 and cloud.holders == [("snapshot/p", True)]
    cloud.refuse = None
    assert (await snapshots.get("a", T0)).id == "a"  # blocking: no holder
    assert cloud.holders == [("snapshot/p", True), (None, False)]


async def _state(rig: Rig, instance_id: str, since: datetime.datetime) -> InstanceState | None:
    try:
        return (await rig.driver.get(instance_id, since=since)).state
    except NotFoundError:
        return None


async def test_a_hanging_list_puts_reconciles_off_and_serves_them_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(snapshot, "JOIN_WAIT", 0.01)
    cloud = Cloud(machine("a"))
    snapshots = cloud.snapshots()
    cloud.release = asyncio.Event()  # the list hangs
    with nonblocking("gpunoderequest/r1"), pytest.raises(RateLimitedError) as put_off:
        await snapshots.get("a", T0)  # the worker is free again; the list goes on
    assert put_off.value.delay == snapshot.JOIN_RETRY
    cloud.release.set()
    monkeypatch.setattr(snapshot, "JOIN_WAIT", 30.0)  # no race with the answer
    with nonblocking("gpunoderequest/r1"):
        assert (await snapshots.get("a", T0)).id == "a"  # that list's answer
    assert cloud.lists == 1


LIST_PATHS = {"runpod": "/v1/pods", "lambda": "/api/v1/instances"}


@pytest.fixture(params=sorted(LIST_PATHS))
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    cloud = request.param
    async with aiohttp.ClientSession() as session, running() as fake:
        api = FakeApi(cloud)
        fake.handler = HANDLERS[cloud](api)
        config = DriverConfig(
            name="prov",
            cloud=cloud,
            api_key="key-for-tests",
            endpoint=fake.url,
            options={**FAST, **OPTIONS[cloud]},
        )
        yield Rig(cloud, registry.build_driver(config, session), api, fake)


async def test_a_teardown_is_a_terminate_per_machine_and_a_few_lists(rig: Rig) -> None:
    names = [f"gpuctl-r{n}-abc" for n in range(3)]
    made = [await rig.driver.launch(LaunchRequest(n, rig.offer(), JOIN)) for n in names]
    rig.fake.seen.clear()
    since = datetime.datetime.now(datetime.UTC)
    looks = [await rig.driver.get(m.id, since=since) for m in made]  # one list
    assert {i.state for i in looks} <= {InstanceState.PENDING, InstanceState.RUNNING}
    for m in made:
        await rig.driver.terminate(m.id)
    for m in made:  # one list after the terminates: each gone (absent, or terminated)
        assert await _state(rig, m.id, since) in (None, InstanceState.TERMINATED)
    for name in names:  # the look-up by name: the same list
        assert await rig.driver.find_all(name, since=since) == []
    calls = [(s.method, s.path) for s in rig.fake.seen]
    assert calls.count(("GET", LIST_PATHS[rig.cloud])) == 2
    assert len(calls) == 2 + len(made)  # a terminate each, no GET by id


class ListingDriver:
    """A driver whose looks with `since` are served by `Snapshots` over `cloud`."""

    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud
        self.snapshots = cloud.snapshots()
        self.deletes: list[str] = []

    async def get(
        self, instance_id: str, since: datetime.datetime, listed_by: Any = None
    ) -> Instance:
        return await self.snapshots.get(instance_id, since, listed_by)

    async def find_all(self, name: str, since: datetime.datetime) -> list[Instance]:
        return await self.snapshots.find_all(name, since)

    async def terminate(self, instance_id: str) -> None:
        self.deletes.append(instance_id)
        self.snapshots.terminated(instance_id)
        self.cloud.machines[instance_id] = machine(instance_id, InstanceState.TERMINATED)


async def test_requests_torn_down_together_share_the_lists() -> None:
    cloud = Cloud(machine("i-1"), machine("i-2"))
    driver = ListingDriver(cloud)
    first = make_ctx(Client(None), T0, request_obj(deleted=True, instance=True), Drivers(driver))
    contexts = [first]
    other = request_obj(deleted=True, instance=True)
    other["metadata"].update(name="r2", uid="0b0e5a3c-1111-2222-3333-777777777777")
    other["status"]["instance"]["id"] = "i-2"
    request = type(first.request).from_dict(other)
    contexts.append(Ctx(other, request, request.status, T0, first.services))
    for ctx in contexts:  # this process launched them: their names are looked up after
        ctx.services.launches.record_machine(settle.attempt_key(ctx), machine("i-1"), ctx.now)
    for ctx in contexts:  # one list for both looks; each live: terminated
        assert not await termination.machine_gone(ctx)
    assert (cloud.lists, driver.deletes) == (1, ["i-1", "i-2"])
    cloud.now += 5 * SECOND
    for ctx in contexts:  # one list after the terminates: both gone, billed
        ctx.now = cloud.now
        assert not await termination.machine_gone(ctx)
        assert ctx.status.instance is None
    for ctx in contexts:  # the look-up by name: the same list
        assert await termination.machine_gone(ctx)
    assert cloud.lists == 2 and cloud.gets == []


class PolledDriver(spare_polls.Driver):
    def __init__(self) -> None:
        super().__init__(limited=False)
        self.since: list[datetime.datetime] = []

    async def get(self, instance_id: str, since: Any = None) -> Any:
        self.since.append(since)
        return await super().get(instance_id)


async def test_a_poll_accepts_a_list_sent_half_an_interval_before_it_was_due() -> None:
    driver = PolledDriver()
    ctx = spare_polls.ctx_for(driver, node_ready=True)
    assert await liveness.reconcile(ctx) is None  # met unpolled: a moment is fixed
    [seeded] = ctx.services.last_poll.values()
    ctx.now = seeded + 30 * SECOND  # `ready_poll` after it
    assert await liveness.reconcile(ctx) is None
    ctx.now += 30 * SECOND
    assert await liveness.reconcile(ctx) is None
    assert driver.since == [seeded + 15 * SECOND, seeded + 45 * SECOND]


async def test_the_credential_check_the_collector_and_first_looks_share_one_list() -> None:
    cloud = Cloud(machine("a"))
    snapshots = cloud.snapshots()
    cloud.release = asyncio.Event()
    with nonblocking("gpunoderequest/r1"):  # a restarted process's first look
        look = asyncio.ensure_future(snapshots.get("a", T0))
    await asyncio.sleep(0)
    cloud.now += SECOND  # the credential check and the leak collector, a moment later
    every = [asyncio.ensure_future(snapshots.list_every()) for _ in range(2)]
    await asyncio.sleep(0)
    cloud.release.set()
    assert (await look).id == "a"
    assert [[i.id for i in e] for e in await asyncio.gather(*every)] == [["a"], ["a"]]
    assert cloud.lists == 1
    snapshots.spacing = 5 * SECOND
    cloud.now += 3 * SECOND  # a list sent less than `spacing` ago serves it
    await snapshots.list_every()
    assert cloud.lists == 1
    cloud.now += 3 * SECOND  # nothing in flight or that new: its own, not put off
    await snapshots.list_every()
    assert cloud.lists == 2
    cloud.now += SECOND
    snapshots.terminated("a")  # never older news than our own terminate
    await snapshots.list_every()
    assert cloud.lists == 3


async def test_a_list_in_flight_since_before_our_terminate_is_not_joined() -> None:
    cloud = Cloud(machine("a"))
    snapshots = cloud.snapshots()
    cloud.release = asyncio.Event()
    with nonblocking("gpunoderequest/r1"):
        look = asyncio.ensure_future(snapshots.get("a", T0))
    await asyncio.sleep(0)
    cloud.now += SECOND
    snapshots.terminated("a")  # accepted after the list in flight began
    every = asyncio.ensure_future(snapshots.list_every())
    await asyncio.sleep(0)
    cloud.release.set()
    await asyncio.gather(look, every)
    assert cloud.lists == 2


async def test_a_collector_whose_joined_list_was_rate_limited_sends_its_own() -> None:
    cloud = Cloud(machine("a"))
    release = asyncio.Event()
    refusals = [RateLimitedError("limited", retry_after=5.0)]

    async def fetch() -> list[Instance]:  # the first list waits, then is refused
        if refusals:
            await release.wait()
            raise refusals.pop()
        return await cloud.fetch()

    snapshots = Snapshots("p", fetch, lambda i: False, cloud.get, clock=lambda: cloud.now)
    with nonblocking("gpunoderequest/r1"):
        look = asyncio.ensure_future(snapshots.get("a", T0))
    await asyncio.sleep(0)
    collector = asyncio.ensure_future(snapshots.list_every())  # outside a reconcile: joins
    await asyncio.sleep(0)
    release.set()
    with pytest.raises(RateLimitedError):
        await look
    assert [i.id for i in await collector] == ["a"]  # its own list, once refused
    assert cloud.lists == 1
