"""The disruption and drain controllers on the operator's informers.

Watches and their keys:
- disruption (key: pool): the pool itself; a GPUNodeRequest -> its `gpuctl.io/pool`
  label; a Node -> its request's pool; a pod -> its Node's request's pool; any
  PodDisruptionBudget -> every pool (there are few);
- drain (key: request): the request; a Node -> its `gpuctl.io/request` label; a pod ->
  its Node's request.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import attrs

from gpuctl.controllers.pool.disruption import keys
from gpuctl.controllers.pool.disruption.controller import Catalog, DisruptionReconciler
from gpuctl.controllers.pool.disruption.replacement import Finder, same_shape
from gpuctl.controllers.pool.disruption.settings import DisruptionSettings
from gpuctl.controllers.pool.disruption.termination import (
    NODE_NAME_INDEX,
    DrainReconciler,
    node_name_index,
)
from gpuctl.controllers.pool.status import POOL_INDEX
from gpuctl.controllers.pool.wiring import ensure_index
from gpuctl.runtime.client import Client
from gpuctl.runtime.controller import Controller
from gpuctl.runtime.events import EventRecorder
from gpuctl.runtime.handler import EnqueueMapped
from gpuctl.runtime.informer import Informer
from gpuctl.runtime.store import Store, label_index

Obj = dict[str, Any]


@attrs.frozen
class Sources:
    pools: Informer
    requests: Informer
    nodes: Informer
    pods: Informer
    pdbs: Informer


def _request_of(node: Obj) -> list[str]:
    request = (node["metadata"].get("labels") or {}).get("gpuctl.io/request")
    return [request] if request else []


def _pool_of(requests: Store) -> Callable[[Obj], list[str]]:
    def pools(request: Obj) -> list[str]:
        pool = (request["metadata"].get("labels") or {}).get(keys.POOL)
        return [pool] if pool else []

    return pools


def _node_request_of(nodes: Store) -> Callable[[Obj], list[str]]:
    def requests(pod: Obj) -> list[str]:
        node_name = (pod.get("spec") or {}).get("nodeName")
        node = nodes.get(node_name) if node_name else None
        return _request_of(node) if node is not None else []

    return requests


def controllers(
    sources: Sources,
    *,
    client: Client,
    events: EventRecorder,
    settings: DisruptionSettings,
    clock: Callable[[], datetime.datetime],
    find_replacement: Finder = same_shape,
    catalog: Catalog | None = None,
) -> list[Controller]:
    requests, nodes, pods = sources.requests.store, sources.nodes.store, sources.pods.store
    # The same indexes as the provisioner's: added by whoever comes first.
    ensure_index(requests, POOL_INDEX, label_index(keys.POOL))
    ensure_index(pods, NODE_NAME_INDEX, node_name_index)
    pool_of = _pool_of(requests)
    node_request_of = _node_request_of(nodes)

    def pools_of_requests(names: list[str]) -> list[str]:
        found: list[str] = []
        for name in names:
            obj = requests.get(name)
            found += pool_of(obj) if obj is not None else []
        return found

    disruption = Controller(
        "pool-disruption",
        DisruptionReconciler(
            pools=sources.pools.store,
            requests=requests,
            nodes=nodes,
            pods=pods,
            pdbs_store=sources.pdbs.store,
            client=client,
            events=events,
            settings=settings,
            clock=clock,
            find_replacement=find_replacement,
            catalog=catalog,
        ),
    )
    queue = disruption.queue
    disruption.watch(sources.pools)
    disruption.watch(sources.requests, EnqueueMapped(queue, pool_of))
    disruption.watch(
        sources.nodes, EnqueueMapped(queue, lambda n: pools_of_requests(_request_of(n)))
    )
    disruption.watch(
        sources.pods, EnqueueMapped(queue, lambda p: pools_of_requests(node_request_of(p)))
    )
    disruption.watch(sources.pdbs, EnqueueMapped(queue, lambda _: list(sources.pools.store.keys())))

    drain = Controller(
        "pool-drain",
        DrainReconciler(
            requests=requests,
            nodes=nodes,
            pods=pods,
            client=client,
            events=events,
            settings=settings,
            clock=clock,
        ),
        workers=4,
    )
    drain.watch(sources.requests)
    drain.watch(sources.nodes, EnqueueMapped(drain.queue, _request_of))
    drain.watch(sources.pods, EnqueueMapped(drain.queue, node_request_of))
    return [disruption, drain]
