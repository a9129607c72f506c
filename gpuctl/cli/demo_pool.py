"""The demo's pool act: a GPU Deployment scales up on the sample GPUNodePool, then down.

Once the sample requests are Ready, `PoolAct.run()` creates the Deployment `demo-train`
(two pods of one GPU each, tolerating the pool's taint and selecting its Nodes with
`gpuctl.io/pool`); the kube-scheduler marks them Unschedulable, the provisioner buys
the cheapest machine(s) the pool allows, the pods run there. Then it scales the
Deployment to zero and waits (`scale_down_timeout`) for the pool's disruption to
remove the now empty machines (`consolidateAfter` is set short for the demo by
`shorten_consolidation`). Each step is a notice on the demo's view; what happens is
read from the cluster (pods, the pool's status), never assumed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import attrs

from gpuctl.controllers.resources import GPUNODEPOOLS, GPUNODEREQUESTS
from gpuctl.runtime.client import Client, is_not_found
from gpuctl.runtime.resources import PODS, Resource

Obj = dict[str, Any]
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment", namespaced=True)
NAME = "demo-train"
NAMESPACE = "default"
REPLICAS = 2
DEMO_CONSOLIDATE_AFTER = "10s"


def shorten_consolidation(objects: list[Obj]) -> list[Obj]:
    """The samples' pools with `consolidateAfter` short enough to watch (in place)."""
    for obj in objects:
        if obj.get("kind") == "GPUNodePool":
            disruption = obj["spec"].setdefault("disruption", {})
            disruption["consolidateAfter"] = DEMO_CONSOLIDATE_AFTER
    return objects


def deployment(pool: str, replicas: int = REPLICAS) -> Obj:
    labels = {"app": NAME}
    container = {
        "name": "train",
        "image": "registry.example/train:1",
        "resources": {"limits": {"nvidia.com/gpu": "1"}},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": {"gpuctl.io/pool": pool},
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
                    "terminationGracePeriodSeconds": 0,
                    "containers": [container],
                },
            },
        },
    }


@attrs.define
class PoolAct:
    client: Client
    pool: str
    say: Callable[[str], None]
    scale_up_timeout: float = 120.0
    scale_down_timeout: float = 90.0

    async def run(self) -> bool:
        """Scale up, then down; False when a step did not happen in time (said why)."""
        self.say(f"pool act: Deployment {NAME} with {REPLICAS} pods of 1 GPU on pool {self.pool}")
        await self.client.create(DEPLOYMENTS, deployment(self.pool), namespace=NAMESPACE)
        started = time.monotonic()
        if not await self._until(self._all_running, self.scale_up_timeout):
            self.say(f"pool act: pods not Running after {self.scale_up_timeout:g}s")
            return False
        status = await self._status()
        self.say(
            f"pool act: {REPLICAS} pods Running after {time.monotonic() - started:.1f}s on "
            f"{status.get('machines', 0)} machine(s) of pool {self.pool}, "
            f"${status.get('pricePerHour', '0')}/h"
        )
        await self.client.patch(DEPLOYMENTS, NAME, {"spec": {"replicas": 0}}, namespace=NAMESPACE)
        self.say(f"pool act: scaled {NAME} to 0; empty machines go after {DEMO_CONSOLIDATE_AFTER}")
        started = time.monotonic()
        if not await self._until(self._no_machines, self.scale_down_timeout):
            left = len(await self._requests())
            self.say(f"pool act: {left} machine(s) still in pool {self.pool}")
            return False
        self.say(f"pool act: pool {self.pool} empty again after {time.monotonic() - started:.1f}s")
        return True

    async def delete(self) -> None:
        """Teardown: the Deployment (its pods must not make the pool buy again)."""
        try:
            await self.client.delete(DEPLOYMENTS, NAME, namespace=NAMESPACE)
        except Exception as err:
            if not is_not_found(err):
                raise

    async def _until(self, check: Callable[[], Any], timeout: float) -> bool:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await check():
                return True
            await asyncio.sleep(0.5)
        return False

    async def _all_running(self) -> bool:
        listed = await self.client.list(PODS, namespace=NAMESPACE, label_selector=f"app={NAME}")
        running = [p for p in listed["items"] if p["status"].get("phase") == "Running"]
        return len(running) == REPLICAS

    async def _requests(self) -> list[Obj]:
        listed = await self.client.list(
            GPUNODEREQUESTS, label_selector=f"gpuctl.io/pool={self.pool}"
        )
        return list(listed["items"])

    async def _no_machines(self) -> bool:
        return not await self._requests()

    async def _status(self) -> Obj:
        found: Obj = (await self.client.get(GPUNODEPOOLS, self.pool)).get("status") or {}
        return found
