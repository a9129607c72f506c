"""The pool status controller and the provisioner on the operator's informers.

Watches and their keys:
- pool status (key: pool): the pool; a GPUNodeRequest -> its `gpuctl.io/pool` label;
  a Node -> its `gpuctl.io/pool` label; a pod -> the pool of the Node it is bound to;
  a GPUProvider -> every pool (Ready follows the providers; there are few pools);
- provisioner (a runnable, leader only): a pod that becomes provisionable triggers the
  batch window; a pool added or changed, or a pool request deleted or changed, pokes
  it (room may have appeared for waiting pods).

The indexes both this and disruption read are added once, whoever comes first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

import attrs

from gpuctl.api import LABEL_POOL
from gpuctl.controllers.pool.offers import Drivers
from gpuctl.controllers.pool.provisioner import (
    NODE_NAME_INDEX,
    REQUEST_INDEX,
    Provisioner,
    ProvisionerSettings,
    node_name_index,
)
from gpuctl.controllers.pool.status import POOL_INDEX, PoolReconciler
from gpuctl.providers.base import Offer
from gpuctl.runtime.client import Client
from gpuctl.runtime.controller import Controller
from gpuctl.runtime.events import EventRecorder
from gpuctl.runtime.handler import EnqueueMapped
from gpuctl.runtime.informer import Informer
from gpuctl.runtime.status import StatusWriter
from gpuctl.runtime.store import Store, label_index

Obj = dict[str, Any]


@attrs.frozen
class Sources:
    pools: Informer
    requests: Informer
    nodes: Informer  # gpuctl's Nodes only
    pods: Informer
    providers: Informer


def ensure_index(store: Store, name: str, fn: Callable[[Obj], list[str]]) -> None:
    """Add the index unless it is there (disruption adds the same ones)."""
    with contextlib.suppress(ValueError):
        store.add_indexer(name, fn)


def _label(key: str) -> Callable[[Obj], list[str]]:
    def keys(obj: Obj) -> list[str]:
        value = (obj["metadata"].get("labels") or {}).get(key)
        return [value] if value else []

    return keys


class _ProvisionerEvents:
    """Informer handler: pods trigger the batcher, pools and requests poke it."""

    def __init__(self, provisioner: Provisioner, kind: str) -> None:
        self.provisioner, self.kind = provisioner, kind

    def _seen(self, obj: Obj) -> None:
        if self.kind == "pod":
            self.provisioner.on_pod(obj)
        else:
            self.provisioner.poke(f"{self.kind}/{obj['metadata']['name']}")

    def on_add(self, obj: Obj) -> None:
        if self.kind != "request":  # a new request takes room, it does not make any
            self._seen(obj)

    def on_update(self, old: Obj, new: Obj) -> None:
        self._seen(new)

    def on_delete(self, obj: Obj) -> None:
        if self.kind != "pod":
            self._seen(obj)


def wire(
    sources: Sources,
    *,
    client: Client,
    events: EventRecorder,
    status_writer: StatusWriter,
    drivers: Drivers,
    blocked: Callable[[Offer], bool],
    settings: ProvisionerSettings,
) -> tuple[Controller, Provisioner, Callable[[], Coroutine[Any, Any, None]]]:
    """The status controller, the provisioner, and the provisioner's runnable (it starts
    once every source has synced, so its first round sees the whole cluster)."""
    requests, nodes, pods = sources.requests.store, sources.nodes.store, sources.pods.store
    ensure_index(requests, POOL_INDEX, label_index(LABEL_POOL))
    ensure_index(nodes, REQUEST_INDEX, label_index("gpuctl.io/request"))
    ensure_index(pods, NODE_NAME_INDEX, node_name_index)
    provisioner = Provisioner(
        client=client,
        pools=sources.pools.store,
        pods=pods,
        nodes=nodes,
        drivers=drivers,
        blocked=blocked,
        events=events,
        settings=settings,
    )
    reconciler = PoolReconciler(
        pools=sources.pools.store,
        requests=requests,
        nodes=nodes,
        pods=pods,
        providers=sources.providers.store,
        client=client,
        status_writer=status_writer,
        events=events,
        on_change=provisioner.poke,
    )
    controller = Controller("gpunodepool", reconciler)
    queue = controller.queue
    controller.watch(sources.pools)
    controller.watch(sources.requests, EnqueueMapped(queue, _label(LABEL_POOL)))
    controller.watch(sources.nodes, EnqueueMapped(queue, _label(LABEL_POOL)))

    def pool_of_pod(pod: Obj) -> Iterable[str]:
        node = nodes.get((pod.get("spec") or {}).get("nodeName") or "")
        return _label(LABEL_POOL)(node) if node is not None else []

    controller.watch(sources.pods, EnqueueMapped(queue, pool_of_pod))
    controller.watch(
        sources.providers, EnqueueMapped(queue, lambda _: list(sources.pools.store.keys()))
    )
    sources.pods.add_handler(_ProvisionerEvents(provisioner, "pod"))
    sources.pools.add_handler(_ProvisionerEvents(provisioner, "pool"))
    sources.requests.add_handler(_ProvisionerEvents(provisioner, "request"))

    async def run() -> None:
        for informer in attrs.astuple(sources, recurse=False):
            await informer.wait_synced()
        await provisioner.run()

    return controller, provisioner, run
