"""The operator: informers, the controllers and the leak collector on one manager.

`Operator(config).run(stop)` is what `gpuctl run` executes and what the e2e tests
run in-process. Watches: GPUNodeRequests and GPUProviders (all), Nodes carrying
`gpuctl.io/instance-name` (only gpuctl's machines), and Secrets of the operator's
own namespace (credentials, templates). Event mapping:
- a GPUNodeRequest -> itself; a Node -> the request in its `gpuctl.io/request` label;
- a GPUProvider -> itself, and every request still looking for an offer that may use it;
- a Secret -> every GPUProvider whose credentials it holds.
GPUNodePools and Pods (all namespaces) feed the pool status controller and the
provisioner (gpuctl/controllers/pool/wiring.py), and with PodDisruptionBudgets the
pool disruption and drain controllers (gpuctl/controllers/pool/disruption/install.py).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import attrs

from gpuctl.controllers import naming, transforms
from gpuctl.controllers.concurrency import MIN_WORKERS, SizeFromProviders
from gpuctl.controllers.drivers import DriverPool
from gpuctl.controllers.garbagecollect import UID_INDEX, Collector, uid_index
from gpuctl.controllers.metrics import register_request_collector
from gpuctl.controllers.pool import wiring as pool_wiring
from gpuctl.controllers.pool.disruption.install import install as install_disruption
from gpuctl.controllers.pool.disruption.settings import DisruptionSettings
from gpuctl.controllers.pool.provisioner import ProvisionerSettings
from gpuctl.controllers.provider import ProviderReconciler
from gpuctl.controllers.request.context import Services, Settings
from gpuctl.controllers.request.controller import RequestReconciler
from gpuctl.controllers.request.nodes import INSTANCE_INDEX, REQUEST_INDEX
from gpuctl.controllers.resources import GPUNODEPOOLS, GPUNODEREQUESTS, GPUPROVIDERS
from gpuctl.providers.capacity import CapacityCache
from gpuctl.runtime.client import Client
from gpuctl.runtime.controller import Controller
from gpuctl.runtime.events import EventRecorder
from gpuctl.runtime.handler import EnqueueMapped
from gpuctl.runtime.informer import Informer
from gpuctl.runtime.manager import LeaderElectionConfig, Manager
from gpuctl.runtime.resources import NODES, PODS, SECRETS
from gpuctl.runtime.status import StatusWriter
from gpuctl.runtime.store import label_index
from gpuctl.runtime.transport import connect

log = logging.getLogger(__name__)

Obj = dict[str, Any]


@attrs.frozen
class OperatorConfig:
    settings: Settings
    kubeconfig: Path | None = None
    health_port: int | None = 8080
    health_host: str = "0.0.0.0"  # probes and Prometheus reach the pod IP
    leader_election: LeaderElectionConfig | None = None
    workers: int = 0  # request reconciles at once; 0: sized from the providers' limits
    provider_workers: int = 8  # GPUProviders reconciled at once (one key per provider)
    provider_refresh: float = 300.0
    gc_interval: float = 120.0
    gc_grace: datetime.timedelta = datetime.timedelta(minutes=10)
    capacity_ttl: float = 180.0
    handle_signals: bool = True  # SIGTERM/SIGINT stop the operator gracefully
    # GPUNodePool provisioning: Karpenter's batch window (idle, max) and a re-plan
    # period while pods wait.
    pool_batch_idle: float = 1.0
    pool_batch_max: float = 10.0
    pool_resync: float = 30.0
    # Pool disruption: poll while under way, replacement timeout, drain grace.
    disruption: DisruptionSettings = attrs.field(factory=DisruptionSettings)
    # Called with the built Operator before its manager runs: adds what a command
    # wires on top (`gpuctl run --ui` mounts the dashboard on the operator's caches).
    extensions: tuple[Callable[[Operator], None], ...] = ()


def _pending_requests_for(requests: Informer) -> Any:
    def keys(provider: Obj) -> list[str]:
        name = provider["metadata"]["name"]
        found = []
        for obj in requests.store.list():
            allowed = (obj.get("spec") or {}).get("providers") or []
            if not (obj.get("status") or {}).get("offer") and (not allowed or name in allowed):
                found.append(obj["metadata"]["name"])
        return found

    return keys


def _providers_using(providers: Informer) -> Any:
    def keys(secret: Obj) -> list[str]:
        meta = secret["metadata"]
        found = []
        for obj in providers.store.list():
            ref = (obj.get("spec") or {}).get("credentialsSecretRef") or {}
            if ref.get("namespace") == meta.get("namespace") and ref.get("name") == meta["name"]:
                found.append(obj["metadata"]["name"])
        return found

    return keys


def _request_of_node(node: Obj) -> list[str]:
    request = (node["metadata"].get("labels") or {}).get("gpuctl.io/request")
    return [request] if request else []


class Operator:
    def __init__(self, config: OperatorConfig) -> None:
        naming.validate_cluster_name(config.settings.cluster_name)
        self.config = config
        self.manager: Manager | None = None
        self.services: Services | None = None
        self.collector: Collector | None = None
        self.informers: dict[str, Informer] = {}

    async def run(self, stop: asyncio.Event | None = None) -> None:
        # Our own transport: kubernetes_asyncio's generated client is 38 MiB never used.
        async with await connect(self.config.kubeconfig) as api, aiohttp.ClientSession() as http:
            manager = self._build(api, http)
            try:
                await manager.run(stop)
            finally:
                if self.services is not None:
                    await self.services.drivers.close()

    def _build(self, api: Any, http: aiohttp.ClientSession) -> Manager:
        config, settings = self.config, self.config.settings
        client = Client(api)
        # Cache only what the controllers read (controllers/transforms.py): no
        # managedFields anywhere, Nodes and Secrets cut to the fields used, strings interned.
        custom = transforms.custom_resource
        # One list at a time: each holds its whole answer while decoding it, and two big
        # ones at once (10,000 Nodes and 10,000 requests) would add their peaks up.
        gate = asyncio.Semaphore(1)
        requests = Informer(
            client, GPUNODEREQUESTS, name="gpunoderequests", transform=custom, list_gate=gate
        )
        providers = Informer(
            client, GPUPROVIDERS, name="gpuproviders", transform=custom, list_gate=gate
        )
        nodes = Informer(
            client,
            NODES,
            label_selector="gpuctl.io/instance-name",
            name="nodes",
            transform=transforms.node,
            list_gate=gate,
        )
        secrets = Informer(
            client,
            SECRETS,
            namespace=settings.namespace,
            name="secrets",
            transform=transforms.secret,
            list_gate=gate,
        )
        pools = Informer(
            client, GPUNODEPOOLS, name="gpunodepools", transform=custom, list_gate=gate
        )
        pods = Informer(client, PODS, name="pods", transform=transforms.pod, list_gate=gate)
        requests.store.add_indexer(UID_INDEX, uid_index)
        nodes.store.add_indexer(INSTANCE_INDEX, label_index("gpuctl.io/instance-name"))
        nodes.store.add_indexer(REQUEST_INDEX, label_index("gpuctl.io/request"))

        events = EventRecorder(client)
        status = StatusWriter(client)
        drivers = DriverPool(providers.store, secrets.store, http, namespace=settings.namespace)
        self.services = Services(
            client=client,
            events=events,
            drivers=drivers,
            capacity=CapacityCache(config.capacity_ttl),
            nodes=nodes.store,
            settings=settings,
        )
        request_controller = Controller(
            "gpunoderequest",
            RequestReconciler(requests.store, self.services, status),
            workers=config.workers or MIN_WORKERS,
        )
        if not config.workers:  # follow the providers' limits (controllers/concurrency.py)
            providers.add_handler(SizeFromProviders(providers.store, request_controller))
        request_controller.watch(requests)
        queue = request_controller.queue
        request_controller.watch(nodes, EnqueueMapped(queue, _request_of_node))
        request_controller.watch(providers, EnqueueMapped(queue, _pending_requests_for(requests)))

        provider_controller = Controller(
            "gpuprovider",
            ProviderReconciler(
                providers.store, drivers, status, events, refresh_interval=config.provider_refresh
            ),
            workers=config.provider_workers,
        )
        provider_controller.watch(providers)
        provider_controller.watch(
            secrets, EnqueueMapped(provider_controller.queue, _providers_using(providers))
        )
        self.collector = Collector(
            settings.cluster_name,
            requests.store,
            drivers,
            events,
            interval=config.gc_interval,
            grace=config.gc_grace,
        )
        register_request_collector(requests.store.list)
        pool_controller, _, provision = pool_wiring.wire(
            pool_wiring.Sources(pools, requests, nodes, pods, providers),
            client=client,
            events=events,
            status_writer=status,
            drivers=drivers,
            blocked=self.services.capacity.blocked,
            settings=ProvisionerSettings(
                config.pool_batch_idle, config.pool_batch_max, config.pool_resync
            ),
        )

        manager = Manager(
            api,
            health_port=config.health_port,
            health_host=config.health_host,
            leader_election=config.leader_election,
            handle_signals=config.handle_signals,
        )
        for informer in (requests, providers, nodes, secrets, pools, pods):
            manager.add_informer(informer)
        manager.add_controller(request_controller)
        manager.add_controller(provider_controller)
        manager.add_controller(pool_controller)
        manager.add_runnable(self.collector.run, needs_leader=True)
        manager.add_runnable(provision, needs_leader=True)
        self.manager = manager
        self.informers = {
            "gpunoderequests": requests,
            "gpuproviders": providers,
            "nodes": nodes,
            "secrets": secrets,
            "gpunodepools": pools,
            "pods": pods,
        }
        # Disruption and drain: on these caches, plus a PodDisruptionBudget informer.
        install_disruption(self, config.disruption)
        for extend in config.extensions:
            extend(self)
        return manager
