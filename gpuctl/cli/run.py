"""`gpuctl run`: the operator process."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpuctl.controllers.operator import Operator, OperatorConfig
from gpuctl.controllers.pool.disruption.settings import DisruptionSettings
from gpuctl.controllers.request.context import Settings
from gpuctl.dashboard import wiring
from gpuctl.runtime.leaderelection import LeaderElectionLost
from gpuctl.runtime.manager import LeaderElectionConfig
from gpuctl.runtime.transport import load
from gpuctl.util import logging as gpuctl_logging
from gpuctl.util.cacerthash import ca_cert_hash


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "run",
        help="run the operator",
        description="Run the gpuctl operator: reconcile GPUNodeRequests and GPUProviders, "
        "collect leaked instances, serve /healthz, /readyz and /metrics.",
    )
    add = parser.add_argument
    add("--kubeconfig", type=Path, help="kubeconfig (default: $KUBECONFIG, else in-cluster)")
    add("--cluster-name", default="gpuctl", help="names this cluster's instances (default gpuctl)")
    add(
        "--namespace",
        default=os.environ.get("POD_NAMESPACE", "gpuctl-system"),
        help="the operator's namespace: credential Secrets and the leader Lease live there",
    )
    add("--join-endpoint", help="API server URL the machines join (default: the kubeconfig's)")
    add("--ca-cert-hash", help="sha256:<hex> of the cluster CA key (default: from the kubeconfig)")
    add("--health-port", type=int, default=8080, help="port of /healthz, /readyz, /metrics")
    add("--health-host", default="0.0.0.0", help="address to serve them on")
    add(
        "--ui",
        action="store_true",
        help="also serve the read-only dashboard under /ui/ on the health port "
        "(docs/dashboard.md; off by default)",
    )
    add("--leader-elect", action="store_true", help="elect a leader among replicas (Lease)")
    add("--lease-name", default="gpuctl-leader", help="name of the leader-election Lease")
    add(
        "--workers",
        type=int,
        default=0,
        help="concurrent GPUNodeRequest reconciles (default 0: sized from the GPUProviders' "
        "rate limits, 16 to 128, docs/architecture.md)",
    )
    add("--ready-poll", type=float, default=30.0, help="seconds between checks of Ready machines")
    add("--joining-poll", type=float, default=5.0, help="seconds between checks while joining")
    add(
        "--node-unhealthy-after",
        type=float,
        default=300.0,
        help="seconds a Ready machine's Node may be not Ready or gone before it is replaced",
    )
    add("--termination-poll", type=float, default=5.0, help="seconds between teardown checks")
    add(
        "--launch-settle",
        type=float,
        default=15.0,
        help="seconds to keep looking a machine up by name after a create with no answer "
        "(or a restart) before launching again or tearing down",
    )
    add(
        "--status-coalesce",
        type=float,
        default=60.0,
        help="seconds news about a booting machine (running, Node registered) may wait to "
        "go out with the next status write, Ready as a rule (0: at once; docs/operations.md)",
    )
    add("--provider-refresh", type=float, default=300.0, help="seconds between catalog refreshes")
    add("--gc-interval", type=float, default=120.0, help="seconds between leak collections")
    add("--gc-grace", type=float, default=600.0, help="age in seconds before an orphan is taken")
    add(
        "--pool-batch-idle",
        type=float,
        default=1.0,
        help="GPUNodePools: seconds without a new pending pod that close a batch (Karpenter's 1)",
    )
    add(
        "--pool-batch-max",
        type=float,
        default=10.0,
        help="GPUNodePools: longest batch of pending pods in seconds (Karpenter's 10)",
    )
    add(
        "--pool-resync",
        type=float,
        default=30.0,
        help="GPUNodePools: seconds between re-plans while pods wait",
    )
    add(
        "--disruption-poll",
        type=float,
        default=5.0,
        help="GPUNodePools: seconds between passes while a disruption or a drain is under way",
    )
    add(
        "--disruption-replacement-timeout",
        type=float,
        default=600.0,
        help="GPUNodePools: seconds a replacement may take to be Ready before its "
        "disruption is abandoned (Karpenter's 10 minutes)",
    )
    add(
        "--disruption-retry-after",
        type=float,
        default=300.0,
        help="GPUNodePools: seconds before an abandoned disruption of a machine is tried again",
    )
    add(
        "--drain-grace",
        type=float,
        default=None,
        help="GPUNodePools: seconds after a machine's deletion after which pods that cannot "
        "be evicted (PodDisruptionBudget, do-not-disrupt) are deleted (default: never, "
        "as Karpenter without terminationGracePeriod)",
    )
    add("--log-level", default="info", help="debug, info, warning or error")
    parser.set_defaults(handler=_run)


def _disruption(args: argparse.Namespace) -> DisruptionSettings:
    grace = args.drain_grace
    return DisruptionSettings(
        poll=args.disruption_poll,
        replacement_timeout=datetime.timedelta(seconds=args.disruption_replacement_timeout),
        retry_after=datetime.timedelta(seconds=args.disruption_retry_after),
        drain_grace=None if grace is None else datetime.timedelta(seconds=grace),
    )


async def _settings(args: argparse.Namespace) -> Settings:
    configuration = await asyncio.to_thread(load, args.kubeconfig)
    ca_hash = args.ca_cert_hash
    if not ca_hash and configuration.ca_pem:
        ca_hash = ca_cert_hash(configuration.ca_pem)  # no cryptography import: 7.8 MiB less RSS
    return Settings(
        cluster_name=args.cluster_name,
        namespace=args.namespace,
        join_endpoint=str(args.join_endpoint or configuration.host),
        ca_cert_hash=ca_hash or "",
        ready_poll=args.ready_poll,
        joining_poll=args.joining_poll,
        termination_poll=args.termination_poll,
        node_unhealthy_after=datetime.timedelta(seconds=args.node_unhealthy_after),
        launch_settle=datetime.timedelta(seconds=args.launch_settle),
        status_coalesce=datetime.timedelta(seconds=args.status_coalesce),
    )


def dashboard_extension(args: argparse.Namespace) -> Callable[[Operator], None]:
    """Mount the dashboard on the operator's manager, fed by the operator's own caches."""

    def extend(operator: Operator) -> None:
        assert operator.manager is not None and operator.services is not None
        informers = operator.informers
        wiring.attach(
            operator.manager,
            operator.services.client,
            requests=informers["gpunoderequests"],
            providers=informers["gpuproviders"],
            nodes=informers["nodes"],
            pools=informers.get("gpunodepools"),
            drivers=operator.services.drivers,
            namespace=args.namespace,
            mode="operator",
            host=args.health_host,
        )

    return extend


async def _main(args: argparse.Namespace) -> int:
    leader = None
    if args.leader_elect:
        leader = LeaderElectionConfig(namespace=args.namespace, name=args.lease_name)
    config = OperatorConfig(
        settings=await _settings(args),
        kubeconfig=args.kubeconfig,
        health_port=args.health_port,
        health_host=args.health_host,
        leader_election=leader,
        workers=args.workers,
        provider_refresh=args.provider_refresh,
        gc_interval=args.gc_interval,
        gc_grace=datetime.timedelta(seconds=args.gc_grace),
        pool_batch_idle=args.pool_batch_idle,
        pool_batch_max=args.pool_batch_max,
        pool_resync=args.pool_resync,
        disruption=_disruption(args),
        extensions=(dashboard_extension(args),) if args.ui else (),
    )
    try:
        await Operator(config).run()
    except LeaderElectionLost:
        return 1  # exit so the pod restarts clean, as controller-runtime does
    return 0


def _run(args: argparse.Namespace) -> int:
    gpuctl_logging.setup(args.log_level)
    return asyncio.run(_main(args))
