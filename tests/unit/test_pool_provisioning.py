"""Provisioning decisions, each module on its own: pods, requirements, offers, binpack,
limits, launcher, batcher. The e2e test (tests/e2e/test_pool_provisioning.py) runs them
together against the real kube-scheduler."""

from __future__ import annotations

import asyncio
import datetime
from decimal import Decimal
from typing import Any

import pytest

from gpuctl.api import GPUNodePool, Limits
from gpuctl.controllers.pool import binpack, inflight, launcher, limits, liveness, offers, pods
from gpuctl.controllers.pool.batcher import Batcher
from gpuctl.controllers.pool.requirements import rejects, unselected, untolerated
from gpuctl.providers.base import CapacityType, Offer

Obj = dict[str, Any]


def offer(
    gpu: str = "H100-80GB",
    count: int = 8,
    price: str = "20",
    capacity: str = "on-demand",
    provider: str = "lambda",
    region: str = "us-east",
    available: bool = True,
) -> Offer:
    return Offer(
        provider=provider,
        cloud=provider,
        region=region,
        native_region=f"{region}-1",
        gpu_type=gpu,
        gpu_count=count,
        instance_type=f"gpu_{count}x_{gpu.lower()}",
        capacity_type=CapacityType(capacity),
        price_per_hour=Decimal(price),
        available=available,
    )


def pool(name: str = "gpu", **spec: Any) -> GPUNodePool:
    body = {"template": {}, **spec}
    return GPUNodePool.from_dict({"metadata": {"name": name, "uid": f"uid-{name}"}, "spec": body})


def pod(name: str, gpus: int, **spec: Any) -> Obj:
    container = {"name": "c", "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}
    return {
        "metadata": {"name": name, "namespace": "ml", "uid": f"uid-{name}"},
        "spec": {"containers": [container], **spec},
        "status": {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}],
        },
    }


def view(
    p: GPUNodePool, catalog: list[Offer], used: limits.Usage | None = None
) -> binpack.PoolView:
    return binpack.PoolView(
        name=p.name,
        weight=p.spec.weight or 0,
        candidates=offers.candidates(p, catalog, lambda _: False),
        taints=[{"key": t.key, "effect": t.effect.value} for t in p.spec.template.taints],
        limits=p.spec.limits,
        used=used or limits.Usage(),
    )


# -- pods ----------------------------------------------------------------------------


def test_a_pod_is_provisionable_only_when_the_scheduler_gave_up_and_it_wants_gpus() -> None:
    assert pods.provisionable(pod("a", 2))
    assert not pods.provisionable(pod("cpu", 0))
    bound = pod("b", 1, nodeName="n1")
    assert not pods.provisionable(bound)
    nominated = pod("c", 1)
    nominated["status"]["nominatedNodeName"] = "n1"
    assert not pods.provisionable(nominated)
    fresh = pod("d", 1)
    fresh["status"]["conditions"] = []  # not tried yet
    assert not pods.provisionable(fresh)
    daemon = pod("e", 1)
    daemon["metadata"]["ownerReferences"] = [{"kind": "DaemonSet", "name": "x"}]
    assert not pods.provisionable(daemon)


def test_gpus_are_summed_over_containers_or_the_largest_init_container() -> None:
    p = pod("a", 2)
    p["spec"]["containers"].append({"name": "d", "resources": {"requests": {"nvidia.com/gpu": 1}}})
    assert pods.gpus(p) == 3
    p["spec"]["initContainers"] = [{"name": "i", "resources": {"limits": {"nvidia.com/gpu": "4"}}}]
    assert pods.gpus(p) == 4


# -- requirements ----------------------------------------------------------------------


def test_taints_need_tolerations_and_selectors_need_labels() -> None:
    taint = {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}
    plain = pod("a", 1)
    assert untolerated(plain, [taint]) == "does not tolerate taint nvidia.com/gpu=true:NoSchedule"
    assert untolerated(plain, [{"key": "x", "effect": "PreferNoSchedule"}]) is None
    tolerant = pod("b", 1, tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists"}])
    assert untolerated(tolerant, [taint]) is None
    everything = pod("c", 1, tolerations=[{"operator": "Exists"}])
    assert untolerated(everything, [taint]) is None
    labels = {"gpuctl.io/capacity-type": "spot", "gpuctl.io/gpu-count": "8"}
    on_demand = pod("d", 1, nodeSelector={"gpuctl.io/capacity-type": "on-demand"})
    assert unselected(on_demand, labels) == "nodeSelector gpuctl.io/capacity-type=on-demand"
    term = {"matchExpressions": [{"key": "gpuctl.io/gpu-count", "operator": "Gt", "values": ["4"]}]}
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [term]}}}  # fmt: skip
    assert rejects(pod("e", 1, affinity=affinity), labels, []) is None
    labels["gpuctl.io/gpu-count"] = "2"
    assert rejects(pod("e", 1, affinity=affinity), labels, []) == (
        "node affinity gpuctl.io/gpu-count Gt 4"
    )


# -- offers ----------------------------------------------------------------------------


def test_candidates_follow_the_pool_requirements_cap_and_memory_cheapest_first() -> None:
    catalog = [
        offer("H100-80GB", 8, "20"),
        offer("H100-80GB", 8, "12", capacity="spot"),
        offer("A100-40GB", 1, "1.1"),
        offer("A100-80GB", 2, "3.5"),
        offer("A100-80GB", 2, "3.0", available=False),
        offer("H100-80GB", 1, "30"),
    ]
    p = pool(
        template={
            "requirements": [
                {"key": "gpuctl.io/capacity-type", "operator": "In", "values": ["on-demand"]}
            ],
            "maxPricePerHour": "25",
            "minGPUMemoryGiB": 80,
        }
    )
    found = offers.candidates(p, catalog, lambda _: False)
    assert [(c.offer.gpu_type, c.gpus, str(c.price)) for c in found] == [
        ("A100-80GB", 2, "3.5"),
        ("H100-80GB", 8, "20"),
    ]
    assert found[0].labels["gpuctl.io/pool"] == "gpu"
    assert found[0].labels["node.kubernetes.io/instance-type"] == "gpu_2x_a100-80gb"
    # No capacity-type requirement: on-demand only; asking for spot allows it.
    assert all(c.offer.capacity_type.value == "on-demand" for c in offers.candidates(
        pool(), catalog, lambda _: False))  # fmt: skip
    spot = pool(template={"requirements": [
        {"key": "gpuctl.io/capacity-type", "operator": "In", "values": ["spot"]}]})  # fmt: skip
    assert [str(c.price) for c in offers.candidates(spot, catalog, lambda _: False)] == ["12"]


# -- binpack ---------------------------------------------------------------------------


def test_three_2_gpu_pods_take_the_cheapest_machines() -> None:
    # Three 2-GPU machines ($4 each) beat one 8-GPU machine ($14).
    catalog = [offer("A100-80GB", 2, "4"), offer("A100-80GB", 8, "14")]
    result = binpack.plan([pod(f"p{i}", 2) for i in range(3)], [view(pool(), catalog)], [])
    assert [(m.choice.gpus, len(m.pods)) for m in result.new] == [(2, 1)] * 3
    # Four of them: one 8-GPU machine ($14) beats four 2-GPU ones ($16).
    result = binpack.plan([pod(f"p{i}", 2) for i in range(4)], [view(pool(), catalog)], [])
    assert [(m.choice.gpus, len(m.pods)) for m in result.new] == [(8, 4)]


def test_one_gpu_pods_share_a_machine_when_that_is_cheaper() -> None:
    catalog = [offer("H100-80GB", 1, "3"), offer("H100-80GB", 8, "20")]
    result = binpack.plan([pod(f"p{i}", 1) for i in range(8)], [view(pool(), catalog)], [])
    assert [(m.choice.gpus, len(m.pods)) for m in result.new] == [(8, 8)]
    result = binpack.plan([pod(f"p{i}", 1) for i in range(3)], [view(pool(), catalog)], [])
    assert sorted(m.choice.gpus for m in result.new) == [1, 1, 1]


def test_launching_machines_take_pods_first_so_nothing_is_bought_twice() -> None:
    catalog = [offer("A100-80GB", 2, "4")]
    labels = offers.machine_labels(pool(), catalog[0])
    launching = [binpack.Existing("gpu-abc", "gpu", labels, [], 2)]
    result = binpack.plan([pod("a", 2), pod("b", 2)], [view(pool(), catalog)], launching)
    assert result.onto_existing == {"ml/a": "gpu-abc"}
    assert [len(m.pods) for m in result.new] == [1]


def test_limits_stop_new_machines_and_say_which() -> None:
    catalog = [offer("A100-80GB", 2, "4")]
    p = pool(limits={"gpus": 5, "pricePerHour": "100"})
    result = binpack.plan([pod(f"p{i}", 2) for i in range(4)], [view(p, catalog)], [])
    assert len(result.new) == 2  # 4 GPUs; a third machine would make 6 > 5
    assert set(result.unserved.values()) == {"pool gpu: limit reached (gpus 6 > 5)"}
    dollars = pool(limits={"pricePerHour": "10"})
    used = limits.Usage(machines=1, gpus=2, price=Decimal("4"))
    result = binpack.plan([pod(f"p{i}", 2) for i in range(3)], [view(dollars, catalog, used)], [])
    assert len(result.new) == 1  # $4 + $4 = $8; a third would be $12 > $10
    assert "pricePerHour $12/h > $10/h" in next(iter(result.unserved.values()))


def test_affinity_to_on_demand_never_gets_spot() -> None:
    catalog = [offer(price="20"), offer(price="8", capacity="spot")]
    either = {"key": "gpuctl.io/capacity-type", "operator": "In", "values": ["spot", "on-demand"]}
    both = pool(template={"requirements": [either]})
    term = {"matchExpressions": [
        {"key": "gpuctl.io/capacity-type", "operator": "In", "values": ["on-demand"]}]}  # fmt: skip
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [term]}}}  # fmt: skip
    result = binpack.plan([pod("a", 8, affinity=affinity), pod("b", 8)], [view(both, catalog)], [])
    chosen = {m.pods[0]["metadata"]["name"]: m.choice.offer.capacity_type.value for m in result.new}
    assert chosen == {"a": "on-demand", "b": "spot"}


def test_weight_orders_pools_and_reasons_name_every_pool() -> None:
    cheap = view(pool("cheap"), [offer(price="10")])
    preferred = view(pool("preferred", weight=50), [offer(price="20")])
    result = binpack.plan([pod("a", 8)], [cheap, preferred], [])
    assert [m.pool.name for m in result.new] == ["preferred"]
    tainted = pool("tainted", template={"taints": [{"key": "gpu", "effect": "NoSchedule"}]})
    small = view(pool("small"), [offer(count=1, price="3")])
    result = binpack.plan([pod("a", 2)], [view(tainted, [offer()]), small], [])
    assert result.unserved == {
        "ml/a": "pool tainted: does not tolerate taint gpu:NoSchedule; "
        "pool small: needs 2 GPUs; the largest machine it accepts has 1"
    }


# -- limits, in-flight machines ----------------------------------------------------------


def request(
    name: str, count: int, *, price: str | None = None, cap: str = "20", **status: Any
) -> Obj:
    body: Obj = {
        "metadata": {"name": name, "labels": {"gpuctl.io/pool": "gpu"}},
        "spec": {"gpu": {"type": "H100-80GB", "count": count}, "capacityType": "on-demand",
                 "maxPricePerHour": cap, "providers": ["lambda"], "regions": ["us-east"]},
        "status": dict(status),
    }  # fmt: skip
    if price is not None:
        body["status"]["offer"] = {
            "provider": "lambda", "region": "us-east", "gpuType": "H100-80GB",
            "gpuCount": count, "capacityType": "on-demand", "pricePerHour": price,
            "nativeRegion": "us-east-1", "instanceType": "gpu_8x_h100", "cloud": "lambda",
        }  # fmt: skip
    return body


def test_usage_counts_launching_requests_at_their_cap_and_skips_failed_ones() -> None:
    used = limits.usage(
        [request("a", 8, price="18"), request("b", 8), request("c", 8, phase="Failed")]
    )
    assert used == limits.Usage(machines=2, gpus=16, price=Decimal("38"))
    assert limits.reached(Limits(gpus=16), used) == "gpus 16/16"
    assert limits.exceeded(Limits(gpus=16), used) is None


def test_inflight_machines_carry_their_planned_labels_and_free_gpus() -> None:
    node = {
        "metadata": {"name": "n1", "labels": {"gpuctl.io/pool": "gpu", "x": "y"}},
        "spec": {"taints": [{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}]},
    }
    bound = [pod("a", 3, nodeName="n1")]
    found = inflight.existing(
        [
            request("joined", 8, price="18"),
            request("launching", 8),
            request("gone", 8, phase="Failed"),
        ],
        lambda name: node if name == "joined" else None,
        lambda name: bound if name == "n1" else [],
    )
    assert [(e.name, e.free, e.taints) for e in found] == [("joined", 5, []), ("launching", 8, [])]
    assert found[1].labels["gpuctl.io/provider"] == "lambda"
    assert found[1].labels["gpuctl.io/gpu-count"] == "8"


# -- launcher, liveness ----------------------------------------------------------------


def test_the_request_asks_for_the_planned_offer_and_is_owned_by_the_pool() -> None:
    template = {
        "labels": {"team": "a"},
        "taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}],
        "startupTaints": [{"key": "init", "value": "1", "effect": "NoSchedule"}],
    }
    p = pool(template=template)
    result = binpack.plan(
        [pod("a", 8, tolerations=[{"operator": "Exists"}])], [view(p, [offer()])], []
    )
    body = launcher.request_body(p, result.new[0])
    assert body["metadata"]["labels"] == {"gpuctl.io/pool": "gpu"}
    assert body["metadata"]["ownerReferences"][0]["uid"] == "uid-gpu"
    assert body["metadata"]["ownerReferences"][0]["controller"] is True
    assert body["spec"]["gpu"] == {"type": "H100-80GB", "count": 8}
    assert body["spec"]["maxPricePerHour"] == "20"
    assert body["spec"]["providers"] == ["lambda"] and body["spec"]["regions"] == ["us-east"]
    assert [t["key"] for t in body["spec"]["node"]["taints"]] == ["nvidia.com/gpu", "init"]
    # The same pods and offer give the same name: a repeated round cannot create twice.
    again = binpack.plan(
        [pod("a", 8, tolerations=[{"operator": "Exists"}])], [view(p, [offer()])], []
    )
    assert launcher.request_body(p, again.new[0])["metadata"]["name"] == body["metadata"]["name"]
    assert len(body["metadata"]["name"]) <= 63


def test_a_request_without_an_offer_is_stuck_after_the_grace() -> None:
    at = "2026-11-29T20:00:00Z"
    stuck = request("s", 8, conditions=[{"type": "OfferAvailable", "status": "False",
        "reason": "NoOffer", "lastTransitionTime": at}])  # fmt: skip
    assert liveness.stuck_since(stuck) == datetime.datetime(2026, 11, 29, 20, tzinfo=datetime.UTC)
    assert liveness.stuck_since(request("ok", 8, price="18")) is None


# -- batcher ---------------------------------------------------------------------------


async def test_batcher_closes_after_idle_and_caps_at_max() -> None:
    batcher = Batcher(idle=0.05, longest=0.2)
    assert await batcher.wait(poll=0.01) is False
    loop = asyncio.get_running_loop()
    start = loop.time()
    batcher.trigger("a")
    assert await batcher.wait() is True
    assert loop.time() - start < 0.15

    async def keep_arriving() -> None:
        for i in range(20):
            batcher.trigger(i)
            await asyncio.sleep(0.02)

    feeder = asyncio.create_task(keep_arriving())
    await asyncio.sleep(0)
    start = loop.time()
    assert await batcher.wait() is True
    assert 0.18 <= loop.time() - start < 0.35  # the max, not the idle window, ended it
    feeder.cancel()


def test_batcher_rejects_bad_windows() -> None:
    with pytest.raises(ValueError, match="idle"):
        Batcher(idle=2, longest=1)
