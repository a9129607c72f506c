"""A GPUNodeRequest that belongs to a pool: its metadata and its create, in one place.

Both ways a pool buys a machine use it — the provisioner for pending pods
(`launcher.py`) and disruption for a replacement (`disruption/orchestration.py`) — so
both carry the same ownership: label `gpuctl.io/pool`, a controller ownerReference to
the pool (deleting the pool makes the garbage collector delete its requests), and the
drain finalizer from creation (a pool deleted right after the create must still drain
the machine; the disruption controller would only add it a pass later).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gpuctl.api import API_VERSION, GNP_KIND, GNR_KIND, LABEL_POOL
from gpuctl.controllers.pool.disruption.keys import DRAIN_FINALIZER
from gpuctl.controllers.resources import GPUNODEREQUESTS
from gpuctl.runtime.client import Client, is_already_exists

Obj = dict[str, Any]


def request(
    name: str, pool: str, pool_uid: str, spec: Obj, annotations: Mapping[str, str] | None = None
) -> Obj:
    """The body of a GPUNodeRequest named `name` owned by pool `pool`."""
    meta: Obj = {
        "name": name,
        "labels": {LABEL_POOL: pool},
        "finalizers": [DRAIN_FINALIZER],
        "ownerReferences": [owner_reference(pool, pool_uid)],
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    return {"apiVersion": API_VERSION, "kind": GNR_KIND, "metadata": meta, "spec": spec}


def owner_reference(pool: str, pool_uid: str) -> Obj:
    return {
        "apiVersion": API_VERSION,
        "kind": GNP_KIND,
        "name": pool,
        "uid": pool_uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


async def create(client: Client, body: Obj) -> bool:
    """Create the request; False if it already exists (an earlier pass, maybe of a
    process since killed, made it: the names are deterministic)."""
    try:
        await client.create(GPUNODEREQUESTS, body)
    except Exception as err:
        if is_already_exists(err):
            return False
        raise
    return True
