"""Disruption decisions on plain data: candidates, emptiness, consolidation, expiry, fit."""

from __future__ import annotations

import datetime
import json
from decimal import Decimal
from typing import Any

import pytest

from gpuctl.controllers.pool.disruption import (
    candidates,
    consolidation,
    emptiness,
    expiration,
    fit,
    keys,
    orchestration,
    pdbs,
    policy,
)
from gpuctl.controllers.pool.disruption.command import Command, Replacement
from gpuctl.controllers.pool.disruption.machines import Machine, pods_digest
from gpuctl.controllers.pool.disruption.quantity import parse_quantity

pytestmark = pytest.mark.unit
UTC = datetime.UTC
NOW = datetime.datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
Obj = dict[str, Any]


def stamp(minutes_ago: float) -> str:
    return (NOW - datetime.timedelta(minutes=minutes_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def node(name: str, gpus: int = 8, cpu: str = "32", **extra: Any) -> Obj:
    return {
        "metadata": {
            "name": name,
            "labels": extra.pop("labels", {}),
            "resourceVersion": "1",
            "annotations": extra.pop("annotations", {}),
        },
        "spec": {"taints": extra.pop("taints", []), **extra},
        "status": {
            "allocatable": {
                "nvidia.com/gpu": str(gpus),
                "cpu": cpu,
                "memory": "200Gi",
                "pods": "110",
            },
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def pod(name: str, node_name: str, gpus: int = 1, **extra: Any) -> Obj:
    meta = {
        "name": name,
        "namespace": "default",
        "uid": f"uid-{name}",
        "annotations": extra.pop("annotations", {}),
        "labels": extra.pop("labels", {}),
        "ownerReferences": extra.pop("owners", []),
    }
    return {
        "metadata": meta,
        "spec": {
            "nodeName": node_name,
            "containers": [
                {
                    "name": "c",
                    "resources": {
                        "limits": {"nvidia.com/gpu": str(gpus)},
                        "requests": {"cpu": "1"},
                    },
                }
            ],
            **extra,
        },
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }


def request(name: str, price: str = "2.00", created: float = 60, **annotations: str) -> Obj:
    return {
        "metadata": {
            "name": name,
            "uid": f"uid-{name}",
            "resourceVersion": "7",
            "creationTimestamp": stamp(created),
            "annotations": annotations,
            "labels": {keys.POOL: "p"},
        },
        "spec": {"gpu": {"type": "A10", "count": 8}},
        "status": {
            "phase": "Ready",
            "readyAt": stamp(created - 1),
            "offer": {"pricePerHour": price, "gpuCount": 8, "gpuType": "A10"},
        },
    }


def machine(
    name: str,
    pods_: list[Obj] = (),
    price: str = "2.00",
    created: float = 60,
    node_obj: Obj | None = None,
    **annotations: str,
) -> Machine:  # type: ignore[assignment]
    return Machine(
        obj=request(name, price, created, **annotations),
        node=node_obj or node(f"n-{name}"),
        pods=tuple(pods_),
    )


DAEMON = {"kind": "DaemonSet", "name": "ds", "controller": True}


# -- pods and candidates ---------------------------------------------------------


def test_only_workload_pods_make_a_machine_non_empty() -> None:
    bound = [
        pod("ds", "n-a", owners=[DAEMON]),
        pod("mirror", "n-a", annotations={"kubernetes.io/config.mirror": "x"}),
        {**pod("done", "n-a"), "status": {"phase": "Succeeded"}},
        {
            **pod("going", "n-a"),
            "metadata": {**pod("going", "n-a")["metadata"], "deletionTimestamp": stamp(0)},
        },
    ]
    assert machine("a", bound).empty
    assert not machine("a", [*bound, pod("work", "n-a")]).empty


def test_do_not_disrupt_and_pdbs_block_candidates() -> None:
    free = machine("free", [pod("w", "n-free")])
    guarded = machine("guarded", [pod("g", "n-guarded", annotations={keys.DO_NOT_DISRUPT: "true"})])
    held = machine("held", [pod("h", "n-held", labels={"app": "train"})])
    node_guard = machine("nodeguard", **{keys.DO_NOT_DISRUPT: "true"})
    limits = [pdbs.Limit("default", "train", {"matchLabels": {"app": "train"}}, 0, False)]
    found, blocked = candidates.split([free, guarded, held, node_guard], limits)
    assert [m.name for m in found] == ["free"]
    reasons = {b.machine.name: b.reason for b in blocked}
    assert keys.DO_NOT_DISRUPT in reasons["guarded"]
    assert "PodDisruptionBudget default/train allows no disruption" in reasons["held"]
    assert "GPUNodeRequest nodeguard" in reasons["nodeguard"]


def test_a_pdb_that_allows_a_disruption_does_not_block() -> None:
    held = machine("held", [pod("h", "n-held", labels={"app": "train"})])
    limits = [pdbs.Limit("default", "train", {"matchLabels": {"app": "train"}}, 1, False)]
    assert candidates.why_not(held, limits) is None
    other_ns = [pdbs.Limit("other", "train", {"matchLabels": {"app": "train"}}, 0, False)]
    assert candidates.why_not(held, other_ns) is None


def test_two_pdbs_on_one_pod_block_and_unhealthy_pods_may_go() -> None:
    sick = pod("h", "n-held", labels={"app": "train"})
    sick["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    selector = {"matchExpressions": [{"key": "app", "operator": "In", "values": ["train"]}]}
    always = pdbs.Limit("default", "a", selector, 0, True)
    assert pdbs.blocking([always], sick) is None
    assert "several" in (
        pdbs.blocking([always, pdbs.Limit("default", "b", {}, 5, False)], sick) or ""
    )


def test_pdb_from_object_reads_status() -> None:
    limit = pdbs.Limit.from_object(
        {
            "metadata": {"name": "x", "namespace": "ns"},
            "spec": {"selector": {"matchLabels": {"a": "b"}}, "maxUnavailable": 0},
            "status": {"disruptionsAllowed": 0},
        }
    )
    assert limit.disruptions_allowed == 0 and limit.selector == {"matchLabels": {"a": "b"}}


def test_machines_being_disrupted_deleted_or_unready_are_not_candidates() -> None:
    marked = machine("m", **{keys.DISRUPTION: "Empty"})
    sick = Machine(obj=request("s"), node={**node("n-s"), "status": {"conditions": []}}, pods=())
    deleting = Machine(
        obj={
            **request("d"),
            "metadata": {**request("d")["metadata"], "deletionTimestamp": stamp(0)},
        },
        node=node("n-d"),
        pods=(),
    )
    found, _ = candidates.split([marked, sick, deleting], [])
    assert found == []


# -- emptiness -------------------------------------------------------------------


def test_empty_machines_go_after_consolidate_after_from_the_last_pod_event() -> None:
    quiet = machine("quiet", **{keys.LAST_POD_EVENT: stamp(10)})
    recent = machine("recent", **{keys.LAST_POD_EVENT: stamp(1)})
    busy = machine("busy", [pod("w", "n-busy")], **{keys.LAST_POD_EVENT: stamp(10)})
    after = datetime.timedelta(minutes=5)
    chosen = emptiness.commands([quiet, recent, busy], after, NOW, budget=10)
    assert [c.machine.name for c in chosen] == ["quiet"]
    assert chosen[0].savings == Decimal("2.00")
    assert emptiness.commands([quiet], None, NOW, 10) == []  # Never
    assert emptiness.commands([quiet], after, NOW, 0) == []  # no budget
    # without a pod event, the clock runs from readyAt (59 minutes ago here)
    assert [c.machine.name for c in emptiness.commands([machine("new")], after, NOW, 1)] == ["new"]
    assert emptiness.next_due([recent], after) == NOW + datetime.timedelta(minutes=4)


def test_emptiness_respects_the_budget_oldest_quiet_first() -> None:
    ms = [machine(f"m{i}", **{keys.LAST_POD_EVENT: stamp(10 + i)}) for i in range(4)]
    chosen = emptiness.commands(ms, datetime.timedelta(0), NOW, budget=2)
    assert [c.machine.name for c in chosen] == ["m3", "m2"]


# -- fit and consolidation -------------------------------------------------------


def test_fit_respects_resources_selectors_affinity_and_taints() -> None:
    gpu_pod = pod("p", "x", gpus=4)
    room = fit.Room.of(node("n1", gpus=8), [pod("q", "n1", gpus=6)])
    assert not fit.fits_in(gpu_pod, room)  # 2 GPUs left
    assert fit.fits_in(pod("small", "x", gpus=2), room)
    tainted = fit.Room.of(node("n2", taints=[{"key": "gpu", "effect": "NoSchedule"}]), [])
    assert not fit.fits_in(gpu_pod, tainted)
    tolerant = pod("t", "x", tolerations=[{"key": "gpu", "operator": "Exists"}])
    assert fit.fits_in(tolerant, tainted)
    labelled = fit.Room.of(node("n3", labels={"gpuctl.io/gpu-type": "H100"}), [])
    assert not fit.fits_in(pod("s", "x", nodeSelector={"gpuctl.io/gpu-type": "A10"}), labelled)
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": "gpuctl.io/gpu-type", "operator": "In", "values": ["H100"]}
                        ]
                    }
                ]
            }
        }
    }
    assert fit.fits_in(pod("a", "x", affinity=affinity), labelled)
    assert not fit.fits_in(pod("a", "x", affinity=affinity), fit.Room.of(node("n4"), []))
    left = fit.place(
        [pod("a", "x", gpus=4), pod("b", "x", gpus=4), pod("c", "x", gpus=4)],
        [fit.Room.of(node("n5"), [])],
    )
    assert [p["metadata"]["name"] for p in left] == ["c"]


def test_quantities() -> None:
    assert parse_quantity("500m") == Decimal("0.5")
    assert parse_quantity("16Gi") == 16 * 2**30
    assert parse_quantity("1e3") == 1000
    with pytest.raises(ValueError):
        parse_quantity("lots")


def _rooms(*nodes_: Obj) -> consolidation.RoomsFor:
    return lambda m: [fit.Room.of(n, []) for n in nodes_ if n["metadata"]["name"] != m.node_name]


def test_an_underutilized_machine_whose_pods_fit_elsewhere_is_removed() -> None:
    small = machine(
        "small", [pod("w", "n-small", gpus=2)], price="3.00", **{keys.LAST_POD_EVENT: stamp(10)}
    )
    chosen = consolidation.command(
        [small],
        datetime.timedelta(minutes=5),
        NOW,
        _rooms(node("n-big", gpus=8)),
        lambda pods_: None,
    )
    assert chosen is not None and chosen.replacements == ()
    assert chosen.savings == Decimal("3.00") and "Underutilized" in chosen.describe()


def test_consolidation_replaces_with_a_cheaper_machine_only() -> None:
    busy = machine(
        "busy", [pod("w", "n-busy", gpus=2)], price="3.00", **{keys.LAST_POD_EVENT: stamp(10)}
    )
    cheaper = Replacement({"gpu": {"count": 2}}, Decimal("1.00"), "2x A10")
    chosen = consolidation.command(
        [busy], datetime.timedelta(0), NOW, _rooms(), lambda pods_: cheaper
    )
    assert chosen is not None and chosen.savings == Decimal("2.00")
    dearer = Replacement({}, Decimal("3.00"), "same")
    assert (
        consolidation.command([busy], datetime.timedelta(0), NOW, _rooms(), lambda pods_: dearer)
        is None
    )


def test_consolidation_waits_for_quiet_pods_and_leaves_empties_to_emptiness() -> None:
    recent = machine("r", [pod("w", "n-r")], **{keys.LAST_POD_EVENT: stamp(1)})
    empty = machine("e", **{keys.LAST_POD_EVENT: stamp(10)})
    chosen = consolidation.command(
        [recent, empty],
        datetime.timedelta(minutes=5),
        NOW,
        _rooms(node("n-big")),
        lambda pods_: None,
    )
    assert chosen is None


# -- expiration ------------------------------------------------------------------


def test_expired_machines_are_recycled_with_a_replacement_when_pods_fit_nowhere() -> None:
    old = machine("old", [pod("w", "n-old", gpus=8)], created=120)
    young = machine("young", [pod("v", "n-young", gpus=8)], created=10)
    like = Replacement({"gpu": {"count": 8}}, Decimal("2.00"), "like old")
    outcome = expiration.commands(
        [old, young],
        datetime.timedelta(hours=1),
        NOW,
        5,
        rooms=[],
        find_replacement=lambda pods_: like,
    )
    assert [c.machine.name for c in outcome.commands] == ["old"]
    assert outcome.commands[0].replacements == (like,)
    assert outcome.commands[0].savings == 0
    # pods that fit elsewhere need no replacement
    outcome = expiration.commands(
        [old],
        datetime.timedelta(hours=1),
        NOW,
        5,
        rooms=[fit.Room.of(node("spare"), [])],
        find_replacement=lambda pods_: None,
    )
    assert outcome.commands[0].replacements == ()
    # nowhere to go and nothing to rent: stays, and says why
    outcome = expiration.commands(
        [old], datetime.timedelta(hours=1), NOW, 5, rooms=[], find_replacement=lambda pods_: None
    )
    assert outcome.commands == [] and "no machine" in outcome.stuck[0][1]
    assert (
        expiration.commands([old], None, NOW, 5, rooms=[], find_replacement=lambda p: like).commands
        == []
    )
    assert (
        expiration.commands(
            [old], datetime.timedelta(hours=1), NOW, 0, rooms=[], find_replacement=lambda p: like
        ).commands
        == []
    )


# -- policy and orchestration state ------------------------------------------------


def test_policy_reads_the_pool_with_crd_defaults() -> None:
    rules = policy.read(
        {
            "spec": {
                "disruption": {
                    "consolidationPolicy": "WhenEmpty",
                    "consolidateAfter": "Never",
                    "expireAfter": "2h",
                    "budgets": [
                        {
                            "nodes": "1",
                            "schedule": "@daily",
                            "duration": "1h30m",
                            "reasons": ["Empty"],
                        }
                    ],
                }
            }
        }
    )
    assert rules.consolidation == "WhenEmpty" and rules.consolidate_after is None
    assert rules.expire_after == datetime.timedelta(hours=2)
    assert rules.budgets[0].duration == datetime.timedelta(minutes=90)
    default = policy.read({"spec": {}})
    assert default.budgets[0].nodes == "10%" and default.consolidate_after == datetime.timedelta(0)


def test_marks_record_the_plan_and_names_are_deterministic() -> None:
    m = machine("old", [pod("w", "n-old")])
    cmd = Command("Expired", m, (Replacement({"gpu": {"count": 8}}, Decimal("1.5"), "r"),))
    marks = orchestration.marks(cmd, "pool", NOW)
    assert marks[keys.DISRUPTION] == "Expired" and marks[keys.SAVINGS] == "0.50"
    marked = Machine(
        obj={**m.obj, "metadata": {**m.obj["metadata"], "annotations": marks}},
        node=m.node,
        pods=m.pods,
    )
    planned = orchestration.plan_of(marked)
    assert planned[0].name == orchestration.replacement_name("pool", "uid-old", 0)
    assert planned[0].spec == {"gpu": {"count": 8}} and planned[0].price == Decimal("1.5")
    assert orchestration.replacement_name("pool", "uid-old", 0) != orchestration.replacement_name(
        "pool", "uid-other", 0
    )
    assert json.loads(marks[orchestration.PLAN])[0]["price"] == "1.5"


def test_pods_digest_changes_with_the_set_of_workload_pods_only() -> None:
    base = pods_digest([pod("a", "n")])
    assert base == pods_digest([pod("a", "n"), pod("ds", "n", owners=[DAEMON])])
    assert base != pods_digest([pod("a", "n"), pod("b", "n")])
    assert pods_digest([]) == pods_digest([pod("ds", "n", owners=[DAEMON])])


def test_a_machine_a_pending_pod_fits_is_not_a_candidate() -> None:
    empty = machine("fresh")
    waiting = pod("waiting", "", gpus=1)
    waiting["spec"].pop("nodeName")
    waiting["status"] = {"phase": "Pending"}
    assert candidates.pending_pods([waiting, pod("bound", "n-x")]) == [waiting]
    reason = candidates.why_not(empty, [], [waiting])
    assert reason is not None and "pending pod default/waiting" in reason
    too_big = {
        **waiting,
        "spec": {
            **waiting["spec"],
            "containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "9"}}}],
        },
    }
    assert candidates.why_not(empty, [], [too_big]) is None


def test_a_machine_with_a_startup_taint_left_is_not_initialized() -> None:
    rules = policy.read(
        {
            "spec": {
                "template": {
                    "startupTaints": [{"key": "example.com/not-ready", "effect": "NoSchedule"}]
                }
            }
        }
    )
    assert rules.startup_taints == ("example.com/not-ready",)
    tainted = node("n-s", taints=[{"key": "example.com/not-ready", "effect": "NoSchedule"}])
    starting = Machine(obj=request("s"), node=tainted, pods=(), startup_taints=rules.startup_taints)
    assert not starting.initialized
    assert Machine(
        obj=request("s"), node=node("n-s"), pods=(), startup_taints=rules.startup_taints
    ).initialized


def test_a_node_still_tainted_not_ready_is_not_initialized() -> None:
    # The node lifecycle controller lifts node.kubernetes.io/not-ready a moment after
    # Ready; until then the pods the machine was bought for cannot land on it.
    taint = {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}
    fresh = Machine(obj=request("s"), node=node("n-s", taints=[taint]), pods=())
    assert not fresh.initialized
    assert candidates.why_not(fresh, []) == "it is not initialized and Ready"
