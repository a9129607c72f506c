"""`gpuctl dashboard`: the read-only web dashboard, on this machine, for a cluster.

Runs its own informers (GPUNodeRequests, GPUProviders, gpuctl's Nodes, the
operator namespace's Secrets for the Offers page's drivers, Events about requests
and providers, GPUNodePools) on a manager and serves the pages under
`http://HOST:PORT/ui/` (default 127.0.0.1:8090: only this machine can connect; pass
`--host` to listen elsewhere, behind your own authentication). Every viewer reads the
same in-memory snapshots: watching adds no load on the API server. The same pages are
served by the operator itself with `gpuctl run --ui`. See docs/dashboard.md.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import aiohttp

from gpuctl.cli.config import ConfigError, add_kubeconfig_flag, add_namespace_flag, kube
from gpuctl.controllers.drivers import DriverPool
from gpuctl.controllers.resources import GPUNODEREQUESTS, GPUPROVIDERS
from gpuctl.dashboard import wiring
from gpuctl.dashboard.sources import ScrapedMetrics
from gpuctl.runtime.informer import Informer, drop_managed_fields
from gpuctl.runtime.manager import Manager
from gpuctl.runtime.resources import NODES, SECRETS
from gpuctl.util import logging as gpuctl_logging

DEFAULT_PORT = 8090


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "dashboard",
        help="serve the read-only web dashboard (fleet, offers, cost, providers)",
        description="Serve the gpuctl dashboard at http://HOST:PORT/ui/: the fleet of "
        "GPUNodeRequests with timelines, offers ranked as `gpuctl plan` ranks them, spend "
        "from the cost ledger and provider health, updated live. Read-only.",
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    add("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    add(
        "--metrics-url",
        metavar="URL",
        help="the operator's /metrics, for the Providers page's API call, 429 and error "
        "counters (default: this process's own, i.e. the calls its Offers page makes)",
    )
    add("--log-level", default="warning", help="debug, info, warning or error")
    add_kubeconfig_flag(parser)
    add_namespace_flag(parser)
    parser.set_defaults(handler=_run)


def url_of(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}/ui/"


async def _main(args: argparse.Namespace) -> int:
    async with kube(args.kubeconfig) as client, aiohttp.ClientSession() as http:
        api = client.api_client
        slim = drop_managed_fields
        requests = Informer(client, GPUNODEREQUESTS, name="gpunoderequests", transform=slim)
        providers = Informer(client, GPUPROVIDERS, name="gpuproviders", transform=slim)
        nodes = Informer(
            client, NODES, label_selector="gpuctl.io/instance-name", name="nodes", transform=slim
        )
        secrets = Informer(
            client, SECRETS, namespace=args.namespace, name="secrets", transform=slim
        )
        manager = Manager(api, health_port=args.port, health_host=args.host)
        for informer in (requests, providers, nodes):
            manager.add_informer(informer)
        # Secrets only feed the Offers page's drivers: optional, never shown.
        manager.add_runnable(secrets.run, needs_leader=False)
        scraped = ScrapedMetrics(args.metrics_url, http) if args.metrics_url else None
        if scraped is not None:
            manager.add_runnable(scraped.run, needs_leader=False)
        drivers = DriverPool(providers.store, secrets.store, http, namespace=args.namespace)
        wiring.attach(
            manager,
            client,
            requests=requests,
            providers=providers,
            nodes=nodes,
            drivers=drivers,
            namespace=args.namespace,
            mode="standalone",
            host=args.host,
            metrics=scraped,
        )
        print(f"gpuctl dashboard: {url_of(args.host, args.port)}", flush=True)
        try:
            await manager.run()
        finally:
            await drivers.close()
    return 0


def _run(args: argparse.Namespace) -> int:
    gpuctl_logging.setup(args.log_level)
    try:
        return asyncio.run(_main(args))
    except ConfigError as err:
        print(f"error: {err}")
        return 2
