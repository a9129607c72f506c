"""Pieces of the no-duplicate-launch and every-dollar promises, without a cloud or a cluster.

- `errors.preferred`, `errors.launch_or_recover`, `errors.create_once`: which of several
  machines of one name is kept, and when a create's outcome counts as unknown;
- `HttpTransport`: which failures say the request certainly did nothing;
- `errors.TerminateLog`: one terminate per instance per poll, its outcome remembered;
- `RunPodDriver.terminate`: a 400 that is not "unknown pod" is not swallowed;
- `Collector`: ownership by name AND cloud id; a twin is terminated at once and
  reported, an orphan only after the grace, and a vanished machine's leftovers are
  cleaned up;
- `cost.add_interval`: billing a machine found by name from the attempt's start.
"""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from gpuctl.controllers import cost, naming
from gpuctl.controllers.garbagecollect import UID_INDEX, Collector, uid_index
from gpuctl.controllers.metrics import DUPLICATES, LEAKS_COLLECTED
from gpuctl.controllers.request.context import LaunchMemory
from gpuctl.providers import errors, registry
from gpuctl.providers.base import (
    DriverConfig,
    Instance,
    InstanceState,
    InvalidRequestError,
    LaunchOutcomeUnknownError,
    TransientError,
)
from gpuctl.providers.errors import HttpFailure
from gpuctl.providers.http import HttpTransport
from gpuctl.runtime.store import Store
from tests.unit.test_providers_fakes import Reply, running

T0 = datetime.datetime(2026, 11, 1, 12, 0, tzinfo=datetime.UTC)


def instance(id: str, state: InstanceState, at: int | None = None, name: str = "n") -> Instance:
    launched = T0 + datetime.timedelta(seconds=at) if at is not None else None
    return Instance(id=id, name=name, state=state, native_state=state.value, launched_at=launched)


# -- which machine is kept ---------------------------------------------------------------


def test_preferred_keeps_a_serviceable_machine_then_the_oldest() -> None:
    old_preempted = instance("a", InstanceState.PREEMPTED, at=0)
    young_running = instance("b", InstanceState.RUNNING, at=50)
    older_pending = instance("c", InstanceState.PENDING, at=10)
    undated = instance("d", InstanceState.RUNNING)
    ordered = errors.preferred([old_preempted, young_running, undated, older_pending])
    assert [i.id for i in ordered] == ["c", "b", "d", "a"]


async def test_launch_or_recover_adopts_whatever_exists_in_any_state() -> None:
    stopped = instance("s", InstanceState.STOPPED)
    created: list[str] = []

    async def find_all(name: str) -> list[Instance]:
        return [stopped]

    async def create() -> Instance:
        created.append("x")
        return instance("x", InstanceState.PENDING)

    assert (await errors.launch_or_recover("n", find_all, create)).id == "s"
    assert created == []


async def test_launch_or_recover_looks_again_after_an_unknown_outcome() -> None:
    listed: list[list[Instance]] = [[], [instance("late", InstanceState.PENDING)]]

    async def find_all(name: str) -> list[Instance]:
        return listed.pop(0)

    async def create() -> Instance:
        raise LaunchOutcomeUnknownError("timed out")

    assert (await errors.launch_or_recover("n", find_all, create)).id == "late"


@pytest.mark.parametrize(
    ("error", "unknown"),
    [
        (TransientError("5xx"), True),
        (TransientError("429", outcome_unknown=False), False),
        (InvalidRequestError("bad"), False),
    ],
)
async def test_create_once_marks_only_maybe_done_failures_unknown(
    error: Exception, unknown: bool
) -> None:
    async def failing() -> None:
        raise error

    with pytest.raises(type(error)) as info:
        await errors.create_once(failing())
    assert isinstance(info.value, LaunchOutcomeUnknownError) is unknown


# -- the transport: did the request do anything? -------------------------------------------


def _transport(session: aiohttp.ClientSession, url: str) -> HttpTransport:
    return HttpTransport(
        session=session,
        cloud="runpod",
        provider="p",
        base_url=url,
        api_key="key",
        error_mapper=errors.runpod_error,
    )


@pytest.mark.parametrize(
    ("status", "unknown"), [(500, True), (502, True), (429, False), (408, False)]
)
async def test_transport_says_which_answers_mean_nothing_happened(
    status: int, unknown: bool
) -> None:
    async with running() as fake, aiohttp.ClientSession() as session:
        fake.handler = lambda seen: Reply(status, {"title": "x", "status": status})
        with pytest.raises(TransientError) as info:
            await _transport(session, fake.url).request("POST", "/pods", operation="CreatePod")
    assert info.value.outcome_unknown is unknown


async def test_refused_connection_did_nothing() -> None:
    async with aiohttp.ClientSession() as session:
        transport = _transport(session, "http://127.0.0.1:9")  # discard port: refused
        with pytest.raises(TransientError) as info:
            await transport.request("POST", "/pods", operation="CreatePod")
    assert info.value.outcome_unknown is False


def test_an_unreadable_create_answer_is_an_unknown_outcome() -> None:
    with pytest.raises(LaunchOutcomeUnknownError), errors.create_guard("lambda", "launch", "p"):
        raise IndexError("list index out of range")  # reading an answer without an id


def test_error_mappers_keep_a_5xx_transient() -> None:
    failure = HttpFailure("runpod", "p", "CreatePod", "POST", 503, b"{}")
    assert isinstance(errors.runpod_error(failure), TransientError)


# -- terminate: once per poll ----------------------------------------------------------------


def test_terminate_log_sends_once_per_period_and_never_for_a_gone_id() -> None:
    now = [0.0]
    log = errors.TerminateLog(resend_after=30, clock=lambda: now[0])
    assert log.due("i1")
    log.accepted("i1")
    now[0] = 29.9
    assert not log.due("i1")
    now[0] = 30.0
    assert log.due("i1")  # the cloud accepted it 30 s ago and still has it: ask again
    log.gone("i1")
    now[0] = 100.0
    assert not log.due("i1")
    assert log.due("i2")  # a failed terminate is not remembered: the next call tries


async def test_runpod_terminate_does_not_swallow_a_400_for_a_live_pod() -> None:
    seen: list[tuple[str, str]] = []

    def handle(request: Any) -> Reply:
        seen.append((request.method, request.path))
        if request.method == "DELETE":
            return Reply(400, {"title": "Bad Request", "status": 400, "detail": "locked"})
        pod = {"id": "p1", "name": "n", "desiredStatus": "RUNNING", "interruptible": False}
        return Reply(200, pod)

    async with running() as fake, aiohttp.ClientSession() as session:
        fake.handler = handle
        config = DriverConfig(
            name="r",
            cloud="runpod",
            api_key="k",
            endpoint=fake.url,
            options={"rateLimit": "unlimited", "imageName": "i"},
        )
        driver = registry.build_driver(config, session)
        with pytest.raises(InvalidRequestError, match="locked"):
            await driver.terminate("p1")
    assert [m for m, _ in seen] == ["DELETE", "GET"]  # confirmed with a GET: the pod lives


# -- the collector: ownership by name and id ---------------------------------------------


class FakeDriver:
    def __init__(self, instances: list[Instance]) -> None:
        self.instances = instances
        self.terminated: list[str] = []
        self.cleaned: list[str] = []

    async def list_instances(self, prefix: str) -> list[Instance]:
        return [i for i in self.instances if i.name.startswith(prefix)]

    async def terminate(self, instance_id: str) -> None:
        self.terminated.append(instance_id)

    async def cleanup(self, name: str) -> None:
        self.cleaned.append(name)


class FakePool:
    def __init__(self, driver: FakeDriver) -> None:
        self.driver = driver

    def names(self) -> list[str]:
        return ["p"]

    def get(self, name: str) -> FakeDriver:
        return self.driver


class FakeEvents:
    def __init__(self) -> None:
        self.recorded: list[tuple[str, str]] = []

    async def record(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.recorded.append((reason, message))


UID = "0123456789ab-cdef-0000-0000-000000000000"


def request_obj(recorded: str | None, attempt: int = 1) -> dict[str, Any]:
    status: dict[str, Any] = {"attempt": attempt, "offer": {"provider": "p"}}
    if recorded is not None:
        status["instance"] = {"id": recorded}
    return {"metadata": {"name": "r", "uid": UID}, "status": status}


def collector(driver: FakeDriver, obj: dict[str, Any] | None, now: datetime.datetime) -> Any:
    store = Store()
    store.add_indexer(UID_INDEX, uid_index)
    if obj is not None:
        store.add(obj)
    events = FakeEvents()
    found = Collector(
        "c1",
        store,
        FakePool(driver),  # type: ignore[arg-type]
        events,  # type: ignore[arg-type]
        grace=datetime.timedelta(minutes=10),
        clock=lambda: now,
    )
    return found, events


async def test_a_same_named_twin_is_not_owned_and_goes_at_once() -> None:
    name = naming.instance_name("c1", UID, 1)
    mine = instance("m1", InstanceState.RUNNING, at=0, name=name)
    twin = instance("m2", InstanceState.PREEMPTED, at=0, name=name)
    driver = FakeDriver([mine, twin])
    before = DUPLICATES.labels("p")._value.get()
    gc, events = collector(driver, request_obj("m1"), T0 + datetime.timedelta(seconds=5))
    assert await gc.collect_once() == 1
    assert driver.terminated == ["m2"]  # at once: no grace for a twin
    assert DUPLICATES.labels("p")._value.get() == before + 1
    assert [r for r, _ in events.recorded] == ["DuplicateInstance"]
    assert await gc.collect_once() == 0  # terminating already: not asked again


async def test_a_machine_of_an_attempt_that_recorded_nothing_yet_is_owned() -> None:
    name = naming.instance_name("c1", UID, 1)
    driver = FakeDriver([instance("m1", InstanceState.PENDING, at=0, name=name)])
    gc, _ = collector(driver, request_obj(None), T0 + datetime.timedelta(hours=1))
    assert await gc.collect_once() == 0 and driver.terminated == []


async def test_an_orphan_waits_for_the_grace_then_goes() -> None:
    name = naming.instance_name("c1", UID, 1)
    driver = FakeDriver([instance("m1", InstanceState.RUNNING, at=0, name=name)])
    before = LEAKS_COLLECTED.labels("p")._value.get()
    young, _ = collector(driver, None, T0 + datetime.timedelta(minutes=5))
    assert await young.collect_once() == 0
    old, _ = collector(driver, None, T0 + datetime.timedelta(minutes=11))
    assert await old.collect_once() == 1 and driver.terminated == ["m1"]
    assert LEAKS_COLLECTED.labels("p")._value.get() == before + 1


async def test_a_vanished_machine_has_its_leftovers_cleaned_up() -> None:
    name = naming.instance_name("c1", UID, 1)
    driver = FakeDriver([instance("m1", InstanceState.RUNNING, at=0, name=name)])
    gc, _ = collector(driver, request_obj("m1"), T0)
    await gc.collect_once()
    assert driver.cleaned == []
    driver.instances = []
    await gc.collect_once()
    assert driver.cleaned == [name]


# -- billing a machine found by name -------------------------------------------------------


def test_add_interval_bills_from_the_attempt_start() -> None:
    now = T0 + datetime.timedelta(minutes=30)
    billed = cost.accrue(None, None, T0 + datetime.timedelta(minutes=10))
    found = cost.add_interval(billed, Decimal("2.00"), T0, now)
    assert found.accrued_usd == Decimal("1.0000")  # half an hour at $2/h
    assert found.since == T0 and found.updated_at == now


def test_only_an_attempt_begun_here_with_no_machine_recorded_skips_the_look_up() -> None:
    memory = LaunchMemory()
    key = ("uid", 1)
    assert not memory.nothing_there(key)  # met for the first time: look it up
    memory.settle(key)  # this process created the attempt's token
    assert memory.nothing_there(key)
    memory.machines.add(key)  # a create answered (its status write may still be lost)
    assert not memory.nothing_there(key)
    other = ("uid", 2)
    memory.settle(other)
    memory.doubt(other, T0)  # a create went out with no answer
    assert not memory.nothing_there(other)
    memory.forget("uid")
    assert not memory.machines and not memory.settled
