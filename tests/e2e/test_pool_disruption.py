"""Pool disruption on the real cluster: machines nobody uses go; protected pods stay.

Real kube-apiserver, kube-scheduler and kube-controller-manager (Deployments, the
garbage collector, the PDB disruption controller), simulated clouds whose machines
join with the node agent, and the operator in-process with short disruption timings.
The pool's machines are GPUNodeRequests owned by the pool, as the provisioner makes
them (label `gpuctl.io/pool`, a controller ownerReference); the pods are placed by
the real scheduler through Node labels once the machines are Ready.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest

from gpuctl.controllers.pool.disruption import keys
from gpuctl.controllers.pool.disruption.drain import PDBS
from gpuctl.controllers.pool.disruption.settings import DisruptionSettings
from gpuctl.controllers.resources import GPUNODEPOOLS, GPUNODEREQUESTS
from gpuctl.dev.controlplane import ControlPlane
from gpuctl.runtime.client import ApiError, Client, is_not_found
from gpuctl.runtime.resources import EVENTS, NODES, PODS
from gpuctl.sim import Simulator
from tests.e2e.conftest import Env, Running, operator_config, start_operator, wait_for, wait_phase
from tests.e2e.test_pool_provisioning import DEPLOYMENTS

pytestmark = pytest.mark.e2e

NS = "default"
A10 = {"gpu": {"type": "A10-24GB", "count": 1}, "capacityType": "on-demand"}  # $0.75/h


@pytest.fixture
async def operator(env: Env, control_plane: ControlPlane) -> AsyncIterator[Running]:
    settings = DisruptionSettings(poll=0.3, replacement_timeout=datetime.timedelta(seconds=90))
    running = await start_operator(operator_config(env, control_plane, disruption=settings))
    yield running
    await running.halt()


@attrs.define
class Pools:
    api: Client
    env: Env
    made: list[str] = attrs.field(factory=list)

    async def pool(self, name: str, disruption: dict[str, Any]) -> dict[str, Any]:
        body = {
            "apiVersion": "gpuctl.io/v1alpha1",
            "kind": "GPUNodePool",
            "metadata": {"name": f"{name}-{self.env.suffix}"},
            "spec": {
                "template": {
                    "labels": {"pool": f"{name}-{self.env.suffix}"},
                    # No machine of its own to rent: only the test's requests exist.
                    "requirements": [
                        {
                            "key": "gpuctl.io/provider",
                            "operator": "In",
                            "values": [self.env.providers["lambda"]],
                        }
                    ],
                },
                "disruption": disruption,
            },
        }
        created = await self.api.create(GPUNODEPOOLS, body)
        self.made.append(created["metadata"]["name"])
        return created

    async def machine(self, pool: dict[str, Any], index: int) -> str:
        """A GPUNodeRequest of the pool, as the provisioner's launcher makes one."""
        meta = pool["metadata"]
        name = f"{meta['name']}-m{index}"
        spec = {
            **A10,
            "providers": [self.env.providers["lambda"]],
            "node": {"labels": {"pool": meta["name"]}},
        }
        body = {
            "apiVersion": "gpuctl.io/v1alpha1",
            "kind": "GPUNodeRequest",
            "metadata": {
                "name": name,
                "labels": {keys.POOL: meta["name"]},
                "ownerReferences": [
                    {
                        "apiVersion": "gpuctl.io/v1alpha1",
                        "kind": "GPUNodePool",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": spec,
        }
        await self.api.create(GPUNODEREQUESTS, body)
        return name

    async def disruption(self, pool: str, change: dict[str, Any]) -> None:
        await self.api.patch(GPUNODEPOOLS, pool, {"spec": {"disruption": change}})

    async def members(self, pool: str) -> list[dict[str, Any]]:
        found = await self.api.list(GPUNODEREQUESTS, label_selector=f"{keys.POOL}={pool}")
        return list(found["items"])

    async def delete(self, pool: str) -> None:
        try:
            await self.api.delete(GPUNODEPOOLS, pool)
        except Exception as err:
            if not is_not_found(err):
                raise


@pytest.fixture
async def pools(api: Client, env: Env, operator: Running) -> AsyncIterator[Pools]:
    made = Pools(api, env)
    yield made
    for name in made.made:  # everything drained and terminated before the operator stops
        await made.delete(name)
        await wait_for(lambda n=name: _none(made, n), 90, f"pool {name}'s machines gone")


async def _none(pools: Pools, name: str) -> bool:
    return not await pools.members(name)


def gpu_pod_spec(pool: str, selector: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "nodeSelector": {"pool": pool, **(selector or {})},
        "terminationGracePeriodSeconds": 1,
        "containers": [
            {
                "name": "train",
                "image": "registry.example/train:1",
                "resources": {"limits": {"nvidia.com/gpu": "1"}},
            }
        ],
    }


async def deployment(
    api: Client, name: str, pool: str, replicas: int, selector: dict[str, str] | None = None
) -> None:
    labels = {"app": name}
    await api.create(
        DEPLOYMENTS,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": gpu_pod_spec(pool, selector)},
            },
        },
        namespace=NS,
    )


async def scale(api: Client, name: str, replicas: int) -> None:
    await api.patch(DEPLOYMENTS, name, {"spec": {"replicas": replicas}}, namespace=NS)


async def pods_of(api: Client, app: str) -> list[dict[str, Any]]:
    found = await api.list(PODS, namespace=NS, label_selector=f"app={app}")
    return list(found["items"])


async def events_about(api: Client, name: str) -> list[dict[str, Any]]:
    found = await api.list(EVENTS, namespace=NS, field_selector=f"involvedObject.name={name}")
    return list(found["items"])


async def ready_machines(api: Client, pools: Pools, pool: dict[str, Any], count: int) -> list[str]:
    """Machines Ready and advertising their GPU (the device plugin reports it just after
    Ready): pods created earlier would be Unschedulable and make the provisioner buy."""
    names = [await pools.machine(pool, i) for i in range(count)]
    for name in names:
        status = (await wait_phase(api, name, "Ready", timeout=90))["status"]

        async def gpu(node: str = status["nodeName"]) -> bool:
            found = await api.get(NODES, node)
            return bool(found["status"].get("allocatable", {}).get("nvidia.com/gpu") == "1")

        await wait_for(gpu, 30, f"{name}'s GPU advertised")
    return names


async def _cleanup_deployment(api: Client, name: str) -> None:
    try:
        await api.delete(DEPLOYMENTS, name, namespace=NS, propagation_policy="Foreground")
    except Exception as err:
        if not is_not_found(err):
            raise


async def test_scale_to_zero_removes_the_machines_after_consolidate_after(
    api: Client, pools: Pools, sim: Simulator
) -> None:
    pool = await pools.pool(
        "empty",
        {
            "consolidationPolicy": "WhenEmpty",
            "consolidateAfter": "Never",  # 3s once the pods run (set-up takes longer)
            "expireAfter": "Never",
            "budgets": [{"nodes": "100%"}],
        },
    )
    name = pool["metadata"]["name"]
    machines = await ready_machines(api, pools, pool, 2)
    app = f"train-{name}"
    await deployment(api, app, name, replicas=2)
    try:

        async def two_running() -> bool:
            found = await pods_of(api, app)
            return len([p for p in found if p["status"].get("phase") == "Running"]) == 2

        await wait_for(two_running, 60, "2 pods Running, one per machine")
        await pools.disruption(name, {"consolidateAfter": "3s"})
        # Busy machines stay, however long after consolidateAfter.
        await asyncio.sleep(4)
        assert set(machines) <= {m["metadata"]["name"] for m in await pools.members(name)}
        left_at = asyncio.get_running_loop().time()
        await scale(api, app, 0)

        async def all_gone() -> bool:
            return not await pools.members(name)

        await wait_for(all_gone, 60, "the empty machines gone")
        took = asyncio.get_running_loop().time() - left_at
        assert took >= 3, f"removed {took:.1f}s after the pods left: before consolidateAfter"
        said = [
            e["message"]
            for m in machines
            for e in await events_about(api, m)
            if e["reason"] == "Disrupting"
        ]
        assert len(said) == 2 and all(
            "Empty: removing" in s and "saves $0.75/h" in s for s in said
        ), said
        pool_said = [
            e["message"] for e in await events_about(api, name) if e["reason"] == "Disrupting"
        ]
        assert len(pool_said) >= 2
    finally:
        await _cleanup_deployment(api, app)


async def test_protected_pods_are_never_evicted_and_deleting_the_pool_drains_everything(
    api: Client, pools: Pools, sim: Simulator
) -> None:
    pool = await pools.pool(
        "expire",
        {
            "consolidationPolicy": "WhenEmpty",
            "consolidateAfter": "Never",
            "expireAfter": "Never",  # 20s once the pods run (set-up takes longer)
            "budgets": [{"nodes": "100%"}],
        },
    )
    name = pool["metadata"]["name"]
    guarded, held, _plain = await ready_machines(api, pools, pool, 3)
    # A: do-not-disrupt on `guarded`; B: a PDB with maxUnavailable 0 on `held`;
    # C: an ordinary pod on `plain`, which expiry recycles (replacement first).
    await api.create(
        PODS,
        {
            "metadata": {
                "name": f"a-{name}",
                "namespace": NS,
                "annotations": {keys.DO_NOT_DISRUPT: "true"},
            },
            "spec": gpu_pod_spec(name, {"gpuctl.io/request": guarded}),
        },
        namespace=NS,
    )
    app_b, app_c = f"b-{name}", f"c-{name}"
    await deployment(api, app_b, name, 1, {"gpuctl.io/request": held})
    await api.create(
        PDBS,
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": app_b, "namespace": NS},
            "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": app_b}}},
        },
        namespace=NS,
    )
    await deployment(api, app_c, name, 1)  # anywhere in the pool: it may move
    try:

        async def placed() -> bool:
            a = await api.get(PODS, f"a-{name}", namespace=NS)
            b, c = await pods_of(api, app_b), await pods_of(api, app_c)
            return (
                a["status"].get("phase") == "Running"
                and len(b) == 1
                and len(c) == 1
                and b[0]["status"].get("phase") == "Running"
                and c[0]["status"].get("phase") == "Running"
            )

        await wait_for(placed, 60, "pods A, B, C Running")
        await pools.disruption(name, {"expireAfter": "20s"})
        c_before = (await pods_of(api, app_c))[0]
        a_uid = (await api.get(PODS, f"a-{name}", namespace=NS))["metadata"]["uid"]
        b_uid = (await pods_of(api, app_b))[0]["metadata"]["uid"]

        async def untouched() -> None:
            a = await api.get(PODS, f"a-{name}", namespace=NS)
            b = await pods_of(api, app_b)
            assert a["metadata"]["uid"] == a_uid and "deletionTimestamp" not in a["metadata"]
            assert [p["metadata"]["uid"] for p in b] == [b_uid]
            assert "deletionTimestamp" not in b[0]["metadata"]

        # C's machine is recycled once expired: a replacement first, then drain, then gone.
        c_machine = c_before["spec"]["nodeName"]

        # Replacements expire too (expireAfter applies to every machine of the pool), so
        # pod C may move again while this waits: what it saw is kept across polls.
        seen_replacement: list[str] = []
        seen_new_c: list[str] = []

        async def recycled() -> bool:
            await untouched()
            members = {m["metadata"]["name"]: m for m in await pools.members(name)}
            seen_replacement.extend(
                n
                for n, m in members.items()
                if (m["metadata"].get("annotations") or {}).get(keys.REPLACES)
            )
            seen_new_c.extend(
                p["metadata"]["uid"]
                for p in await pods_of(api, app_c)
                if p["metadata"]["uid"] != c_before["metadata"]["uid"]
                and p["status"].get("phase") == "Running"
            )
            return (
                bool(seen_replacement)
                and bool(seen_new_c)
                and not any(
                    m.get("status", {}).get("nodeName") == c_machine for m in members.values()
                )
            )

        await wait_for(recycled, 120, "the expired machine of pod C replaced and gone")
        await untouched()
        for machine, why in ((guarded, keys.DO_NOT_DISRUPT), (held, "PodDisruptionBudget")):
            blocked = [
                e["message"]
                for e in await events_about(api, machine)
                if e["reason"] == "DisruptionBlocked"
            ]
            assert blocked and why in blocked[0], blocked
            annotations = (await api.get(GPUNODEREQUESTS, machine))["metadata"].get("annotations")
            assert keys.DISRUPTION not in (annotations or {})

        # Deleting the pool drains every machine — still never evicting A nor B ...
        await pools.delete(name)

        async def draining() -> bool:
            said = [
                e["message"]
                for m in (guarded, held)
                for e in await events_about(api, m)
                if e["reason"] == "Draining"
            ]
            return len(said) >= 2

        await wait_for(draining, 60, "both protected machines draining")
        await asyncio.sleep(2)
        await untouched()
        # ... until the protection is lifted: then both go, and every machine with them.
        await api.patch(
            PODS,
            f"a-{name}",
            {"metadata": {"annotations": {keys.DO_NOT_DISRUPT: None}}},
            namespace=NS,
        )
        await api.delete(PDBS, app_b, namespace=NS)

        async def all_gone() -> bool:
            return not await pools.members(name)

        await wait_for(all_gone, 90, "every machine of the deleted pool gone")
        try:  # A was evicted by the drain: gone, or stopped and being deleted
            a = await api.get(PODS, f"a-{name}", namespace=NS)
            assert a["metadata"].get("deletionTimestamp"), a["status"]
        except ApiError as err:
            assert is_not_found(err)
        drained = [e for e in await events_about(api, held) if e["reason"] == "Drained"]
        assert drained
    finally:
        for app in (app_b, app_c):
            await _cleanup_deployment(api, app)
        for pod in (f"a-{name}",):
            try:
                await api.delete(PODS, pod, namespace=NS, grace_period_seconds=0)
            except Exception as err:
                if not is_not_found(err):
                    raise
