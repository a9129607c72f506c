"""News about a booting machine is held back to go out with the next status write.

The way up wrote the machine seen running, the Node registered and Ready as three status
writes; now the first two wait (at most `status_coalesce`) and go out with Ready as one,
with the Registered condition dated by the Node's creationTimestamp, and Ready records no
Event of its own (`controllers/request/coalesce.py`). With nothing after them, they go
out when the window ends; a write money safety needs is never held.
"""

from __future__ import annotations

import copy
import datetime
import types
from typing import Any

import attrs

from gpuctl.api import GPUNodeRequest, GPUNodeRequestStatus, Phase, set_condition
from gpuctl.api.convert import format_time
from gpuctl.controllers import naming
from gpuctl.controllers.request.coalesce import informational
from gpuctl.controllers.request.context import Services, Settings
from gpuctl.controllers.request.controller import RequestReconciler
from gpuctl.controllers.request.nodes import INSTANCE_INDEX
from gpuctl.providers.base import Instance, InstanceState
from gpuctl.providers.capacity import CapacityCache
from gpuctl.runtime.store import Store, label_index
from tests.unit.test_rate_limited_reconcile import Events, deleted_request
from tests.unit.test_rate_limited_reconcile import Writer as RecordingWriter

NOW = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.UTC)
UID = "0b0e5a3c-1111-2222-3333-444455556666"
NODE = naming.instance_name("c1", UID, 1)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime.datetime:
        return self.now

    def at(self, seconds: float) -> None:
        self.now = NOW + datetime.timedelta(seconds=seconds)


class Driver:
    async def get(self, instance_id: str, since: Any = None) -> Instance:
        return Instance(instance_id, "n", InstanceState.RUNNING, "RUNNING", public_ip="10.0.0.7")


class Drivers:
    def get(self, name: str) -> Driver:
        return Driver()

    def provider(self, name: str) -> Any:
        return types.SimpleNamespace(spec=None)  # the request sets its registration timeout


class Writer(RecordingWriter):
    """The status subresource: writes what changed, with a new resourceVersion."""

    async def update_status(self, resource: Any, obj: Any, status: Any) -> Any:
        if obj.get("status") == status:
            return None
        self.written.append(status)
        new = copy.deepcopy(obj)
        new["status"] = status
        new["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)
        return new


class Client:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def patch(self, resource: Any, name: str, patch: Any) -> Any:
        self.calls.append(f"patch {name}")
        return {}

    async def delete(self, resource: Any, name: str, **_: Any) -> None:
        self.calls.append(f"delete {name}")


def booting_request() -> dict[str, Any]:
    obj = deleted_request()
    del obj["metadata"]["deletionTimestamp"]
    obj["spec"]["registrationTimeout"] = "15m"
    status = obj["status"]
    status["phase"] = "Provisioning"
    status["observedGeneration"] = 1
    status["instance"]["state"] = "PENDING"
    status["instance"]["launchedAt"] = "2026-11-30T11:59:59Z"
    # Billed since the launch (a status without a figure is written at once: its first).
    status["cost"] = {
        "accruedUSD": "0.0000",
        "since": "2026-11-30T11:59:59Z",
        "updatedAt": "2026-11-30T11:59:59Z",
    }
    status["conditions"] = [
        {
            "type": "Launched",
            "status": "True",
            "reason": "Launched",
            "message": "pod-1",
            "lastTransitionTime": "2026-11-30T11:59:59Z",
            "observedGeneration": 1,
        }
    ]
    return obj


def node(*, ready: bool) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": NODE,
            "resourceVersion": "1",
            "creationTimestamp": format_time(NOW + datetime.timedelta(seconds=10)),
            "labels": {"gpuctl.io/instance-name": NODE},
        },
        "status": {
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "allocatable": {"nvidia.com/gpu": "1" if ready else "0"},
        },
    }


def setup(window: float = 60.0) -> tuple[RequestReconciler, Store, Writer, Events, Clock]:
    requests, nodes = Store(), Store()
    requests.add(booting_request())
    nodes.add_indexer(INSTANCE_INDEX, label_index("gpuctl.io/instance-name"))
    writer, events, clock = Writer(), Events(), Clock()
    settings = Settings(
        "c1",
        "gpuctl-system",
        "https://k:6443",
        "sha256:x",
        status_coalesce=datetime.timedelta(seconds=window),
    )
    services = Services(
        client=Client(),  # type: ignore[arg-type]
        events=events,  # type: ignore[arg-type]
        drivers=Drivers(),  # type: ignore[arg-type]
        capacity=CapacityCache(60),
        nodes=nodes,
        settings=settings,
        clock=clock,
    )
    reconciler = RequestReconciler(requests, services, writer)  # type: ignore[arg-type]
    return reconciler, nodes, writer, events, clock


async def test_running_and_registered_go_out_with_ready_as_one_write() -> None:
    reconciler, nodes, writer, events, clock = setup()
    result = await reconciler.reconcile("r1")  # the first poll: running
    assert writer.written == [] and len(reconciler.holds) == 1
    assert result.requeue_after is not None and result.requeue_after <= 60
    clock.at(12)
    nodes.add(node(ready=False))  # registered at +10 s
    await reconciler.reconcile("r1")  # the same cached copy: the hold survives it
    assert writer.written == []
    clock.at(20)
    nodes.add(node(ready=True))
    await reconciler.reconcile("r1")
    [status] = writer.written
    conditions = {c["type"]: c for c in status["conditions"]}
    assert status["phase"] == "Ready" and status["nodeName"] == NODE
    assert status["instance"]["state"] == "RUNNING"
    assert status["instance"]["publicIP"] == "10.0.0.7"
    assert conditions["Registered"]["lastTransitionTime"] == "2026-11-30T12:00:10Z"
    assert conditions["Ready"]["lastTransitionTime"] == "2026-11-30T12:00:20Z"
    assert status["message"] == f"Node {NODE} Ready 21s after launch"
    assert events.recorded == []  # the way up's one Event is Launched (sent at launch)
    assert len(reconciler.holds) == 0


async def test_news_with_nothing_after_it_goes_out_when_the_window_ends() -> None:
    reconciler, _, writer, events, clock = setup(window=30.0)
    await reconciler.reconcile("r1")
    clock.at(29)
    await reconciler.reconcile("r1")
    assert writer.written == []
    clock.at(30)
    await reconciler.reconcile("r1")
    [status] = writer.written
    assert (status["phase"], status["instance"]["state"]) == ("Joining", "RUNNING")
    assert events.recorded == [] and len(reconciler.holds) == 0


async def test_the_hold_survives_a_new_copy_with_the_same_status() -> None:
    reconciler, _, writer, _, _ = setup()
    await reconciler.reconcile("r1")
    deleted = booting_request()
    deleted["metadata"]["resourceVersion"] = "8"
    deleted["metadata"]["deletionTimestamp"] = "2026-11-30T12:00:05Z"
    request = GPUNodeRequest.from_dict(deleted)
    status = reconciler.holds.start("r1", deleted, request)  # the teardown starts here
    assert status.phase == Phase.JOINING and status.instance is not None
    assert status.instance.state == "RUNNING"  # as seen: no TerminatingInstance Event
    assert writer.written == []


async def test_another_status_rederives_the_news_without_a_new_window() -> None:
    reconciler, _, writer, _, clock = setup(window=30.0)
    await reconciler.reconcile("r1")
    moved = booting_request()
    moved["metadata"]["resourceVersion"] = "8"
    moved["status"]["message"] = "written by someone else"
    reconciler.requests.add(moved)
    clock.at(29)
    await reconciler.reconcile("r1")  # polled again (due): held again, window kept
    assert writer.written == []
    clock.at(30)
    await reconciler.reconcile("r1")
    assert [s["phase"] for s in writer.written] == ["Joining"]


async def test_no_window_writes_at_once() -> None:
    reconciler, _, writer, _, _ = setup(window=0.0)
    await reconciler.reconcile("r1")
    assert [s["phase"] for s in writer.written] == ["Joining"]


def test_only_news_about_the_same_booting_machine_is_held() -> None:
    before = GPUNodeRequest.from_dict(booting_request()).status
    assert before.instance is not None

    def after(**changes: Any) -> GPUNodeRequestStatus:
        status = copy.deepcopy(before)
        assert status.instance is not None
        status.instance.state = "RUNNING"
        status.phase = Phase.JOINING
        return attrs.evolve(status, **changes)

    assert informational(before, after())
    registered = after(node_name=NODE)
    set_condition(registered.conditions, "Registered", True, "Registered", now=NOW)
    assert informational(before, registered)
    lost = after()
    set_condition(lost.conditions, "Registered", False, "Interrupted", now=NOW)
    assert not informational(before, lost)
    assert not informational(before, after(phase=Phase.READY))
    assert not informational(before, after(observed_generation=2))  # the spec changed
    assert not informational(before, after(instance=attrs.evolve(before.instance, id="pod-2")))
    assert not informational(before, after(attempt=2))


async def test_a_held_status_is_billed_once_when_written_not_at_every_reconcile() -> None:
    reconciler, nodes, writer, _, clock = setup()
    stamp = "2026-11-30T11:59:59Z"
    obj = booting_request()
    obj["status"]["cost"] = {"accruedUSD": "0.0000", "since": stamp, "updatedAt": stamp}
    reconciler.requests.add(obj)
    for second in range(20):  # reconciles of the hold: each rounded the figure (4 places)
        clock.at(second)
        await reconciler.reconcile("r1")
    assert writer.written == []
    nodes.add(node(ready=True))
    clock.at(20)
    await reconciler.reconcile("r1")
    [status] = writer.written
    # 21 s at $0.69/h = $0.0040250, rounded once (twenty-one roundings gave $0.0042).
    assert status["cost"]["accruedUSD"] == "0.0040"


async def test_a_status_without_a_cost_figure_is_written_at_once_with_its_first() -> None:
    reconciler, _, writer, _, _ = setup()
    obj = booting_request()
    del obj["status"]["cost"]
    reconciler.requests.add(obj)
    await reconciler.reconcile("r1")
    assert len(writer.written) == 1 and len(reconciler.holds) == 0
    assert writer.written[0]["cost"]["accruedUSD"] == "0.0000"
