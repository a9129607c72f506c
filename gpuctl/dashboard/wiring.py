"""Putting the dashboard on a manager: in the operator (`gpuctl run --ui`) or alone.

`attach(manager, ...)` takes the GPUNodeRequest, GPUProvider and Node informers the
manager already runs (the operator's own caches), adds the dashboard's optional
informers — Events about GPUNodeRequests and GPUProviders (field-selected by
involvedObject.kind) and, unless the caller has one, GPUNodePools — as runnables
that never hold up readiness or stop the manager when refused, and mounts the page
under `/ui` on the manager's health port. Runnables: the optional informers, the
ledger reader and the snapshot publisher, all `needs_leader=False` (a standby replica
serves the page too).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import Metric

from gpuctl.api import GNP_KIND, GNP_PLURAL, GROUP, VERSION
from gpuctl.controllers.request.offer import Drivers
from gpuctl.dashboard.fleet import PhaseHistory
from gpuctl.dashboard.server import LOOPBACK_HOSTS, Dashboard
from gpuctl.dashboard.sources import Changes, LedgerCache, Sources
from gpuctl.runtime.client import Client
from gpuctl.runtime.informer import Informer, drop_managed_fields
from gpuctl.runtime.manager import Manager
from gpuctl.runtime.metrics import REGISTRY
from gpuctl.runtime.resources import EVENTS, Resource

GPUNODEPOOLS = Resource(GROUP, VERSION, GNP_PLURAL, GNP_KIND, namespaced=False)
PREFIX = "/ui"
EVENT_KINDS = ("GPUNodeRequest", "GPUProvider")


def attach(
    manager: Manager,
    client: Client,
    *,
    requests: Informer,
    providers: Informer,
    nodes: Informer,
    drivers: Drivers,
    namespace: str,
    mode: str,
    host: str,
    metrics: Callable[[], Iterable[Metric]] | None = None,
    events_namespace: str | None = None,
    pools: Informer | None = None,
) -> Dashboard:
    """Mount the dashboard on `manager` (see the module docstring); returns it."""
    changes = Changes()
    phases = PhaseHistory()
    ledger = LedgerCache(client, namespace, changes)
    events = [
        Informer(
            client,
            EVENTS,
            namespace=events_namespace,
            field_selector=f"involvedObject.kind={kind}",
            name=f"dashboard-events-{kind.lower()}",
            transform=drop_managed_fields,
        )
        for kind in EVENT_KINDS
    ]
    optional = list(events)
    if pools is None:  # the operator's own when it watches pools, else the dashboard's
        pools = Informer(
            client, GPUNODEPOOLS, name="dashboard-gpunodepools", transform=drop_managed_fields
        )
        optional.append(pools)
    for informer in (requests, providers, nodes, *events, pools):
        informer.add_handler(changes)
    requests.add_handler(phases)
    requests.add_handler(ledger)
    sources = Sources(
        requests=requests.store,
        providers=providers.store,
        nodes=nodes.store,
        events=[e.store for e in events],
        ledger=ledger,
        drivers=drivers,
        metrics=metrics or REGISTRY.collect,
        phases=phases,
        changes=changes,
        mode=mode,
        events_synced=lambda: all(e.has_synced for e in events),
        pools=pools.store,
    )
    loopback = host in LOOPBACK_HOSTS or host.startswith("127.")
    dashboard = Dashboard(sources, allowed_hosts=LOOPBACK_HOSTS | {host} if loopback else None)
    for informer in optional:
        # retries with backoff on errors (a 403 too) until cancelled: never fatal
        manager.add_runnable(informer.run, needs_leader=False)
    manager.add_runnable(ledger.run, needs_leader=False)
    manager.add_runnable(dashboard.run, needs_leader=False)
    manager.mount(PREFIX, dashboard.app())
    return dashboard
