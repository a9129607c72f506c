"""The pool status reconcile and the liveness of requests that cannot launch, on fakes."""

from __future__ import annotations

import datetime
from typing import Any

import attrs

from gpuctl.controllers.pool import liveness
from gpuctl.controllers.pool.provisioner import NODE_NAME_INDEX, node_name_index
from gpuctl.controllers.pool.status import POOL_INDEX, REQUEST_INDEX, PoolReconciler
from gpuctl.runtime.store import Store, label_index

Obj = dict[str, Any]
NOW = datetime.datetime(2026, 11, 29, 20, 0, tzinfo=datetime.UTC)


@attrs.define
class FakeClient:
    deleted: list[str] = attrs.field(factory=list)

    async def delete(self, resource: Any, name: str, **_: Any) -> Obj:
        self.deleted.append(name)
        return {}


@attrs.define
class FakeEvents:
    recorded: list[tuple[str, str, str]] = attrs.field(factory=list)

    async def record(self, obj: Obj, type_: str, reason: str, message: str) -> None:
        self.recorded.append((obj["metadata"]["name"], reason, message))


@attrs.define
class FakeStatus:
    written: list[Obj] = attrs.field(factory=list)

    async def update_status(self, resource: Any, obj: Obj, status: Obj) -> Obj:
        self.written.append(status)
        return {**obj, "status": status}


def request(name: str, count: int, price: str | None = None, **status: Any) -> Obj:
    body: Obj = {
        "metadata": {"name": name, "labels": {"gpuctl.io/pool": "gpu"}, "uid": f"u-{name}"},
        "spec": {"gpu": {"type": "A100-80GB", "count": count}, "maxPricePerHour": "10"},
        "status": dict(status),
    }
    if price:
        body["status"]["offer"] = {"pricePerHour": price}
    return body


def stores(requests: list[Obj], nodes: list[Obj], pods: list[Obj]) -> tuple[Store, ...]:
    pools, by_pool, by_request, by_node, providers = Store(), Store(), Store(), Store(), Store()
    pools.add({
        "metadata": {"name": "gpu", "generation": 2, "resourceVersion": "7"},
        "spec": {"template": {}, "limits": {"gpus": 10}},
    })  # fmt: skip
    by_pool.add_indexer(POOL_INDEX, label_index("gpuctl.io/pool"))
    by_request.add_indexer(REQUEST_INDEX, label_index("gpuctl.io/request"))
    by_node.add_indexer(NODE_NAME_INDEX, node_name_index)
    for r in requests:
        by_pool.add(r)
    for n in nodes:
        by_request.add(n)
    for p in pods:
        by_node.add(p)
    providers.add({"metadata": {"name": "runpod"},
                   "status": {"conditions": [{"type": "Ready", "status": "True"}]}})  # fmt: skip
    return pools, by_pool, by_request, by_node, providers


async def test_status_counts_machines_gpus_money_and_the_limit() -> None:
    node = {"metadata": {"name": "n1", "labels": {"gpuctl.io/request": "a"}}}
    pod = {"metadata": {"name": "p", "namespace": "ml"}, "status": {"phase": "Running"},
           "spec": {"nodeName": "n1", "containers": [
               {"name": "c", "resources": {"limits": {"nvidia.com/gpu": "2"}}}]}}  # fmt: skip
    requests = [
        request("a", 8, "4.5", phase="Ready"),
        request("b", 2),
        request("c", 8, phase="Failed"),
    ]
    pools, by_pool, by_request, by_node, providers = stores(requests, [node], [pod])
    writer, client = FakeStatus(), FakeClient()
    reconciler = PoolReconciler(
        pools, by_pool, by_request, by_node, providers, client, writer, FakeEvents(),  # type: ignore[arg-type]
        clock=lambda: NOW,
    )  # fmt: skip
    await reconciler.reconcile("gpu")
    (status,) = writer.written
    assert (status["machines"], status["launching"], status["gpus"], status["gpusInUse"]) == (
        2,
        1,
        10,
        2,
    )
    assert status["pricePerHour"] == "14.5"  # 4.5 + the launching one at its cap
    assert status["observedGeneration"] == 2
    conditions = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conditions == {"Ready": ("True", "Ready"), "LimitReached": ("True", "LimitReached")}


async def test_a_request_that_cannot_launch_is_deleted_after_the_grace() -> None:
    def stuck(name: str, since: datetime.datetime) -> Obj:
        condition = {"type": "OfferAvailable", "status": "False", "reason": "NoOffer",
                     "lastTransitionTime": since.strftime("%Y-%m-%dT%H:%M:%SZ")}  # fmt: skip
        return request(name, 8, conditions=[condition])

    client, events = FakeClient(), FakeEvents()
    old = stuck("old", NOW - datetime.timedelta(seconds=11))
    new = stuck("new", NOW - datetime.timedelta(seconds=4))
    with_machine = stuck("machine", NOW - datetime.timedelta(minutes=5))
    with_machine["status"]["instance"] = {"id": "i-1"}
    removed, due = await liveness.remove_stuck(
        client,
        events,
        [old, new, with_machine],
        NOW,  # type: ignore[arg-type]
    )
    assert (removed, due) == (1, 6.0)
    assert client.deleted == ["old"]
    assert events.recorded[0][:2] == ("old", "CannotLaunch")
