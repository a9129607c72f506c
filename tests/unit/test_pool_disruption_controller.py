"""The disruption reconciler over in-memory caches and a recording client.

What only the cluster's state decides: budgets counted from marks already on the
requests (an operator restarted mid-disruption does not exceed them), the bookkeeping
of the last pod event, the order marks -> taint -> replacement -> delete, and the
drain finalizer's release only once no workload pod is left.
"""

from __future__ import annotations

import copy
import datetime
from decimal import Decimal
from typing import Any

import pytest

from gpuctl.api import GPUNodePool
from gpuctl.controllers.pool.disruption import keys, orchestration, planned
from gpuctl.controllers.pool.disruption.controller import DisruptionReconciler
from gpuctl.controllers.pool.disruption.machines import Machine, parse_time
from gpuctl.controllers.pool.disruption.settings import DisruptionSettings
from gpuctl.controllers.pool.disruption.termination import (
    NODE_NAME_INDEX,
    DrainReconciler,
    node_name_index,
)
from gpuctl.controllers.pool.status import POOL_INDEX
from gpuctl.controllers.request.nodes import REQUEST_INDEX
from gpuctl.providers.base import CapacityType, Offer
from gpuctl.runtime.client import ApiError
from gpuctl.runtime.store import Store, label_index
from tests.unit.test_pool_disruption import NOW, node, pod, request, stamp

pytestmark = pytest.mark.unit
Obj = dict[str, Any]


def merge(base: Obj, patch: Obj) -> Obj:
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        elif value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


class FakeClient:
    def __init__(self, stores: dict[str, Store]) -> None:
        self.stores = stores
        self.calls: list[tuple[str, str, str]] = []
        self.refuse_evictions = False

    async def patch(self, resource: Any, name: str, body: Obj, **_: Any) -> Obj:
        self.calls.append(("patch", resource.plural, name))
        store = self.stores[resource.plural]
        updated = merge(store.get(name) or {}, body)
        store.add(updated)
        return updated

    async def create(self, resource: Any, body: Obj, **kw: Any) -> Obj:
        if kw.get("subresource") == "eviction":
            self.calls.append(("evict", "pods", body["metadata"]["name"]))
            if self.refuse_evictions:
                raise ApiError(429, "TooManyRequests", "Cannot evict pod: PDB", {})
            return {}
        self.calls.append(("create", resource.plural, body["metadata"]["name"]))
        body = merge(body, {"metadata": {"resourceVersion": "1"}})
        self.stores[resource.plural].add(body)
        return body

    async def delete(self, resource: Any, name: str, **_: Any) -> Obj:
        self.calls.append(("delete", resource.plural, name))
        return {}


class FakeEvents:
    def __init__(self) -> None:
        self.said: list[tuple[str, str, str]] = []

    async def record(self, obj: Obj, type_: str, reason: str, message: str) -> None:
        self.said.append((obj["metadata"]["name"], reason, message))


def world(machines: int, pool_disruption: Obj, *, with_pods: bool = False) -> dict[str, Any]:
    requests, nodes, pods, pools, pdbs = Store(), Store(), Store(), Store(), Store()
    requests.add_indexer(POOL_INDEX, label_index(keys.POOL))
    nodes.add_indexer(REQUEST_INDEX, label_index("gpuctl.io/request"))
    pods.add_indexer(NODE_NAME_INDEX, node_name_index)
    pools.add(
        {"metadata": {"name": "p", "uid": "pool-uid"}, "spec": {"disruption": pool_disruption}}
    )
    for i in range(machines):
        obj = request(f"m{i}", price="1.00", created=120 - i)
        obj["metadata"]["finalizers"] = [keys.DRAIN_FINALIZER]
        requests.add(obj)
        nodes.add(node(f"n-m{i}", labels={"gpuctl.io/request": f"m{i}"}))
        if with_pods:
            pods.add(pod(f"w{i}", f"n-m{i}"))
    stores = {"gpunoderequests": requests, "nodes": nodes, "pods": pods}
    client = FakeClient(stores)
    events = FakeEvents()
    reconciler = DisruptionReconciler(
        pools=pools,
        requests=requests,
        nodes=nodes,
        pods=pods,
        pdbs_store=pdbs,
        client=client,  # type: ignore[arg-type]
        events=events,  # type: ignore[arg-type]
        settings=DisruptionSettings(poll=1.0),
        clock=lambda: NOW,
    )
    return {
        "r": reconciler,
        "client": client,
        "events": events,
        "requests": requests,
        "nodes": nodes,
        "pods": pods,
    }


async def test_empty_machines_are_marked_and_deleted_within_the_budget() -> None:
    w = world(4, {"consolidateAfter": "1m", "expireAfter": "Never", "budgets": [{"nodes": "2"}]})
    await w["r"].reconcile("p")
    marked = [
        o["metadata"]["name"]
        for o in w["requests"].list()
        if keys.DISRUPTION in (o["metadata"].get("annotations") or {})
    ]
    assert len(marked) == 2
    said = [m for _, reason, m in w["events"].said if reason == "Disrupting"]
    assert len(said) == 4 and "saves $1.00/h" in said[0]  # pool + request, per machine
    # The next pass: no replacements, so the marked machines are deleted (drain follows).
    await w["r"].reconcile("p")
    deleted = [c[2] for c in w["client"].calls if c[0] == "delete"]
    assert sorted(deleted) == sorted(marked)


async def test_marks_already_in_the_cluster_use_the_budget_up_after_a_restart() -> None:
    w = world(4, {"consolidateAfter": "1m", "expireAfter": "Never", "budgets": [{"nodes": "2"}]})
    for name in ("m0", "m1"):  # a previous process marked two, then died
        obj = w["requests"].get(name)
        obj["metadata"]["annotations"] = {
            keys.DISRUPTION: "Empty",
            keys.DISRUPTION_STARTED: stamp(0),
            orchestration.PLAN: "[]",
        }
        obj["metadata"]["deletionTimestamp"] = stamp(0)  # ... and deleted them
    await w["r"].reconcile("p")  # a fresh reconciler: nothing in memory
    marked = [
        o["metadata"]["name"]
        for o in w["requests"].list()
        if (o["metadata"].get("annotations") or {}).get(keys.DISRUPTION)
    ]
    assert sorted(marked) == ["m0", "m1"]  # still two: the budget is used up


async def test_pods_changing_restart_the_quiet_time() -> None:
    w = world(
        1,
        {"consolidateAfter": "1m", "expireAfter": "Never", "budgets": [{"nodes": "1"}]},
        with_pods=True,
    )
    await w["r"].reconcile("p")
    annotations = w["requests"].get("m0")["metadata"]["annotations"]
    assert (
        parse_time(annotations[keys.LAST_POD_EVENT]) == parse_time(stamp(0))
        and keys.PODS_DIGEST in annotations
    )
    w["pods"].delete(pod("w0", "n-m0"))  # the last pod leaves: empty, but not quiet yet
    result = await w["r"].reconcile("p")
    assert keys.DISRUPTION not in w["requests"].get("m0")["metadata"]["annotations"]
    assert result.requeue_after is not None and 0 < result.requeue_after <= 60


async def test_an_expired_machine_is_replaced_first_then_deleted() -> None:
    w = world(
        1,
        {"consolidateAfter": "Never", "expireAfter": "1h", "budgets": [{"nodes": "100%"}]},
        with_pods=True,
    )
    await w["r"].reconcile("p")  # marks, with a plan of one replacement like it
    plan = orchestration.plan_of(Machine(obj=w["requests"].get("m0"), node=None, pods=()))
    assert len(plan) == 1 and plan[0].price == 1
    await w["r"].reconcile("p")  # taints the Node, creates the replacement, waits
    calls = w["client"].calls
    assert ("create", "gpunoderequests", plan[0].name) in calls
    assert any(t["key"] == keys.DISRUPTED_TAINT for t in w["nodes"].get("n-m0")["spec"]["taints"])
    assert not [c for c in calls if c[0] == "delete"]
    replacement = w["requests"].get(plan[0].name)
    assert replacement["metadata"]["annotations"][keys.REPLACES] == "m0"
    assert replacement["metadata"]["ownerReferences"][0]["uid"] == "pool-uid"
    replacement["status"] = {"phase": "Ready"}
    await w["r"].reconcile("p")
    assert ("delete", "gpunoderequests", "m0") in w["client"].calls


async def test_a_replacement_that_fails_abandons_the_disruption() -> None:
    w = world(
        1,
        {"consolidateAfter": "Never", "expireAfter": "1h", "budgets": [{"nodes": "100%"}]},
        with_pods=True,
    )
    await w["r"].reconcile("p")
    await w["r"].reconcile("p")
    created = [c[2] for c in w["client"].calls if c[0] == "create"]
    w["requests"].get(created[0])["status"] = {"phase": "Failed", "message": "no capacity"}
    await w["r"].reconcile("p")
    assert ("delete", "gpunoderequests", created[0]) in w["client"].calls
    assert keys.DISRUPTION not in (w["requests"].get("m0")["metadata"].get("annotations") or {})
    assert not any(
        t["key"] == keys.DISRUPTED_TAINT for t in w["nodes"].get("n-m0")["spec"].get("taints") or []
    )
    assert any(reason == "DisruptionAbandoned" for _, reason, _ in w["events"].said)


async def test_drain_evicts_waits_and_releases_the_finalizer_when_empty() -> None:
    w = world(1, {}, with_pods=True)
    w["pods"].add(pod("guarded", "n-m0", annotations={keys.DO_NOT_DISRUPT: "true"}))
    w["pods"].add(
        pod("ds", "n-m0", owners=[{"kind": "DaemonSet", "name": "d", "controller": True}])
    )
    w["requests"].get("m0")["metadata"]["deletionTimestamp"] = stamp(0)
    drain = DrainReconciler(
        requests=w["requests"],
        nodes=w["nodes"],
        pods=w["pods"],
        client=w["client"],
        events=w["events"],
        settings=DisruptionSettings(poll=1.0),
        clock=lambda: NOW,
    )
    w["client"].refuse_evictions = True
    result = await drain.reconcile("m0")
    assert result.requeue_after == 1.0
    evicted = [c[2] for c in w["client"].calls if c[0] == "evict"]
    assert evicted == ["w0"]  # not the do-not-disrupt pod, not the DaemonSet pod
    node_now = w["nodes"].get("n-m0")
    assert node_now["spec"]["unschedulable"] is True
    draining = [m for _, reason, m in w["events"].said if reason == "Draining"]
    assert "eviction refused" in draining[0] and keys.DO_NOT_DISRUPT in draining[0]
    # the pods go (the eviction allowed, the guarded one finished): the finalizer goes
    w["pods"].delete(pod("w0", "n-m0"))
    w["pods"].delete(pod("guarded", "n-m0"))
    await drain.reconcile("m0")
    assert keys.DRAIN_FINALIZER not in w["requests"].get("m0")["metadata"]["finalizers"]


async def test_drain_grace_deletes_what_is_left() -> None:
    w = world(1, {}, with_pods=True)
    w["requests"].get("m0")["metadata"]["deletionTimestamp"] = stamp(10)
    drain = DrainReconciler(
        requests=w["requests"],
        nodes=w["nodes"],
        pods=w["pods"],
        client=w["client"],
        events=w["events"],
        settings=DisruptionSettings(drain_grace=datetime.timedelta(minutes=5)),
        clock=lambda: NOW,
    )
    await drain.reconcile("m0")
    assert ("delete", "pods", "w0") in w["client"].calls


def _offer(gpus: int, price: str, gpu_type: str = "A10-24GB") -> Offer:
    return Offer(
        provider="lambda-x",
        cloud="lambda",
        region="us-east",
        native_region="us-east-1",
        gpu_type=gpu_type,
        gpu_count=gpus,
        instance_type=f"gpu_{gpus}x",
        price_per_hour=Decimal(price),
        capacity_type=CapacityType.ON_DEMAND,
    )


def test_the_planner_finds_the_cheapest_one_machine_replacement() -> None:
    pool_obj = {"metadata": {"name": "p", "uid": "pool-uid"}, "spec": {"template": {}}}
    pool = GPUNodePool.from_dict(pool_obj)
    catalog = [_offer(8, "8.00"), _offer(2, "1.50"), _offer(1, "0.75")]
    find = planned.finder(pool, catalog, lambda offer: False)
    old = Machine(obj=request("m0", price="8.00"), node=node("n-m0"), pods=())
    two = [pod("a", "n-m0"), pod("b", "n-m0")]
    found = find(pool_obj, old, two)
    assert found is not None and str(found.price) == "1.50"
    assert found.spec["gpu"] == {"type": "A10-24GB", "count": 2}
    assert found.spec["providers"] == ["lambda-x"]
    # pods no single machine holds: a machine like the old one instead
    many = [pod(f"p{i}", "n-m0", gpus=8) for i in range(2)]
    fallback = find(pool_obj, old, many)
    assert fallback is not None and fallback.spec == old.obj["spec"]


async def test_a_lost_write_is_a_quick_requeue_not_an_error() -> None:
    w = world(1, {"consolidateAfter": "1m", "expireAfter": "Never"}, with_pods=True)

    async def conflict(*_: Any, **__: Any) -> Obj:
        raise ApiError(409, "Conflict", "the object has been modified", {})

    w["client"].patch = conflict
    result = await w["r"].reconcile("p")
    assert result.requeue_after == 0.2


async def test_pods_do_not_move_where_pending_pods_are_about_to_go() -> None:
    rules = {"consolidateAfter": "0s", "expireAfter": "Never", "budgets": [{"nodes": "100%"}]}
    w = world(2, rules, with_pods=True)
    await w["r"].reconcile("p")  # without waiting pods, m0's pod fits on m1: m0 goes
    assert any(reason == "Disrupting" and "Underutilized" in m for _, reason, m in w["events"].said)

    w = world(2, rules, with_pods=True)
    waiting = pod("waiting", "", gpus=7, nodeSelector={"gpuctl.io/request": "m1"})
    waiting["spec"].pop("nodeName")
    waiting["status"] = {"phase": "Pending"}
    w["pods"].add(waiting)
    await w["r"].reconcile("p")  # the waiting pod takes m1's room first: nothing moves
    assert not [m for _, reason, m in w["events"].said if reason == "Disrupting"]


async def test_a_machine_whose_gpus_are_not_advertised_yet_is_not_judged() -> None:
    w = world(1, {"consolidateAfter": "0s", "expireAfter": "Never"})
    w["nodes"].get("n-m0")["status"]["allocatable"]["nvidia.com/gpu"] = "0"
    await w["r"].reconcile("p")
    assert not [m for _, reason, m in w["events"].said if reason == "Disrupting"]


def test_gpuctl_run_flags_make_the_disruption_settings() -> None:
    from gpuctl.cli import run  # noqa: PLC0415 - the CLI layer, only for this test
    from gpuctl.cli.main import build_parser  # noqa: PLC0415

    args = build_parser().parse_args(
        [
            "run",
            "--disruption-poll",
            "0.5",
            "--disruption-replacement-timeout",
            "90",
            "--disruption-retry-after",
            "30",
            "--drain-grace",
            "600",
        ]
    )
    settings = run._disruption(args)
    assert settings == DisruptionSettings(
        poll=0.5,
        replacement_timeout=datetime.timedelta(seconds=90),
        retry_after=datetime.timedelta(seconds=30),
        drain_grace=datetime.timedelta(minutes=10),
    )
    assert run._disruption(build_parser().parse_args(["run"])) == DisruptionSettings()


async def test_a_due_machine_held_back_by_a_budget_is_looked_at_again() -> None:
    rules = {"consolidateAfter": "0s", "expireAfter": "Never", "budgets": [{"nodes": "0"}]}
    w = world(1, rules)
    result = await w["r"].reconcile("p")  # due, but the budget allows nothing now
    assert not [m for _, reason, m in w["events"].said if reason == "Disrupting"]
    assert result.requeue_after == 1.0  # the settings' poll: a budget window may open
