"""Lifecycle benchmark: N GPUNodeRequests from creation to Ready Nodes, and back to nothing.

    PYTHONPATH=hack .venv/bin/python -m bench.lifecycle [--requests 100] [--json FILE]

Needs root: every request's machine runs a real node agent. With `--no-agents` the
simulator runs no join data (no root, no agents' memory, so 1,000 requests fit a small
machine): the way up ends at launched and the report gives the operator's own figures,
time to all launched against the launch-pacing floor and create -> launched p50 over it,
then the teardown.

What runs, all on this machine and on 127.0.0.1:
- a real cluster (`gpuctl.dev.controlplane.ControlPlane`: etcd, kube-apiserver,
  kube-controller-manager, kube-scheduler, kubeadm's join objects) with gpuctl's join
  RBAC applied from `manifests/join` (`kubectl apply -k`, as a user installs it);
- the simulated clouds as a child process (`gpuctl sim`, execute_join_data): zero boot
  and termination delay, capacity for every request; each instance that turns RUNNING
  boots as a machine (its own mount and PID namespaces) running the join data gpuctl
  gave the cloud, so real `kubeadm join` code (token discovery, CA pinning) and the
  real kubelet (TLS bootstrap through a CSR kube-controller-manager approves, then
  `system:node:<name>`) register each Node: `gpuctl-node-agent` (`make controlplane`);
- the operator as a child process (`gpuctl run`, gpuctl's default poll intervals unless
  overridden), so its memory and CPU are its own;
- this process: creates the requests (at most `--concurrency` calls in flight), watches
  them with gpuctl's informer, deletes them, collects the figures.

The requests go round-robin to the clouds (`--clouds`, default Lambda and Paperspace:
see DEFAULT_CLOUDS for why not RunPod), each pinned to that cloud's GPUProvider and to a
one-GPU type only that cloud sells in the simulator (Lambda A10-24GB, RunPod RTX-4090,
Paperspace RTX-A4000). The GPUProviders allow the most the CRD does: 1,000 requests/s
and 600 launches a minute (a launch every 0.1 s per provider).

Figures (docs/benchmarks.md explains them):
- time to all Ready: first create call sent -> last request seen Ready by the watch;
- per-request latencies, two ways: from the objects (metadata.creationTimestamp,
  status.instance.launchedAt, status.readyAt; whole seconds) and from this process
  (monotonic clock when the create call was sent, and when the watch first delivered the
  request with `status.instance` set / phase Ready; includes the watch delivery delay);
- per request, for the way up and the way down apart: status writes, Kubernetes API
  calls, provider API calls (operator metrics, and the simulator's ledger), reconciles;
- launch pacing: launches per second per cloud against the 10/s the providers allow;
- the operator's peak RSS (VmHWM) and the CPU time of every process (the machines'
  processes together as "machines");
- the machines (bench.machines, bench.joins): PSS and RSS of their processes at all
  Ready, at their peak and after `--hold` idle seconds, with their CPU then; per machine
  RUNNING -> agent start -> Node registered / Ready; Nodes Ready; the host's memory in
  use (MemTotal - MemAvailable) before, at all Ready and at its peak;
- teardown: first delete sent -> last request gone; then instances still live at the
  clouds, Nodes and bootstrap-token Secrets left, machine processes left after
  teardown and after the simulator stopped (all must be zero).
Exit status: 0 when every request got Ready and everything was torn down, else 1.

Size: an agent costs about 20 MiB PSS and 0.4 % of a core idle, so the default is 100
requests (about 2 GiB of agents), which fits a 2-core, 24 GiB machine; 1,000 would need
about 20 GiB. Before starting, the run checks that MemAvailable covers
MACHINE_BUDGET per request plus BASE_BUDGET; `--requests N --ignore-memory-check` runs
more anyway, on a machine that has the room.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import os
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs

from bench.cluster import (
    OPERATOR_NAMESPACE,
    bounded,
    create_quietly,
    prepare_cluster,
    retrying,
    wait_until,
)
from bench.faults import set_faults
from bench.figures import Summary, note, parse_time, per, to_json
from bench.host import Machine, cpu_seconds_of, load_average
from bench.joins import INSTANCE_LABEL, NodeTracker, join_latencies
from bench.lifecycle_report import (
    BASE_BUDGET,
    DEFAULT_CLOUDS,
    DEFAULT_REQUESTS,
    LAUNCHES_PER_MINUTE,
    MACHINE_BUDGET,
    REQUESTS_PER_SECOND,
    Agents,
    Latencies,
    LifecycleReport,
    Options,
    Pacing,
    Work,
    render,
)
from bench.machines import MachineMemory, MachineWatch, descendants, host_memory_used, meminfo, scan
from bench.processes import OperatorProcess, SimProcess
from bench.promtext import Metrics, grown, grown_by
from bench.statusdiff import StatusChanges
from gpuctl.controllers.concurrency import provider_limits, workers_for
from gpuctl.controllers.resources import GPUNODEREQUESTS, GPUPROVIDERS
from gpuctl.dev.controlplane import ControlPlane
from gpuctl.dev.manifests import apply_join_rbac
from gpuctl.dev.pki import ca_public_key_hash
from gpuctl.runtime.client import Client, is_not_found
from gpuctl.runtime.informer import Informer
from gpuctl.runtime.kubeclient import api_client
from gpuctl.runtime.resources import CONFIGMAPS, NODES, SECRETS
from gpuctl.sim import CLOUDS

JSON = dict[str, Any]

# cloud -> (GPU type only that cloud sells in the simulator, the GPUProvider's cloud block)
OFFERS: dict[str, tuple[str, JSON]] = {
    "lambda": ("A10-24GB", {"lambda": {"sshKeyName": "gpuctl"}}),
    "runpod": ("RTX-4090", {"runpod": {"imageName": "ghcr.io/gpuctl/node:latest"}}),
    "paperspace": ("RTX-A4000", {"paperspace": {"templateId": "tkni3aa4"}}),
}
# The specs' operationIds of a launch, as the simulator's ledger records them.
LAUNCH_OPERATIONS = frozenset({"launchInstance", "CreatePod", "machines-create"})
PROGRESS_EVERY = 10.0  # seconds between progress lines on stderr
MACHINES_GONE_TIMEOUT = 60.0  # after teardown, how long machine processes may take to go


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.lifecycle",
        description="N GPUNodeRequests through the operator (a child process) on the local "
        "cluster and the simulated clouds, whose machines join as real Nodes (kubeadm join "
        "and kubelet code, gpuctl-node-agent; needs root): time to all Ready, latencies, "
        "API calls, memory, agents, teardown. See docs/benchmarks.md.",
    )
    add = parser.add_argument
    add(
        "--requests",
        type=_positive_int,
        default=DEFAULT_REQUESTS,
        help=f"requests to create ({DEFAULT_REQUESTS}). Each runs a real node agent, about "
        "20 MiB PSS and 0.4 %% of a core idle: 100 fit a 2-core, 24 GiB machine, 1,000 do not "
        "(the run refuses what MemAvailable cannot hold; see --ignore-memory-check)",
    )
    add("--concurrency", type=_positive_int, default=32, help="create/delete calls in flight")
    add(
        "--workers",
        type=int,
        default=0,
        help="operator reconcile workers (0: gpuctl run's default, sized from the limits)",
    )
    add(
        "--clouds",
        type=_clouds,
        default=DEFAULT_CLOUDS,
        help=f"comma-separated clouds to spread over ({','.join(DEFAULT_CLOUDS)})",
    )
    add("--timeout", type=float, default=900.0, help="bound in s of the way up and of teardown")
    add("--ready-poll", type=float, help="operator --ready-poll (default: gpuctl's)")
    add("--joining-poll", type=float, help="operator --joining-poll (default: gpuctl's)")
    add("--termination-poll", type=float, help="operator --termination-poll")
    add(
        "--status-coalesce",
        type=float,
        help="operator --status-coalesce (default: gpuctl's; 0: every status change at once)",
    )
    add("--log-level", default="info", help="operator log level (info)")
    add("--json", type=Path, dest="json_path", help="also write the report as JSON here")
    add(
        "--hold",
        type=float,
        default=30.0,
        help="seconds to stay idle once all are Ready, measuring idle agents (30; 0: none)",
    )
    add(
        "--ignore-memory-check",
        action="store_true",
        help=f"run even if MemAvailable is below {MACHINE_BUDGET >> 20} MiB per request + "
        f"{BASE_BUDGET >> 30} GiB (e.g. --requests 1000 on a machine known to have room)",
    )
    add(
        "--rate",
        type=float,
        help="steady-rate mode (bench.lifecycle_steady): create this many requests a second "
        "for --duration seconds, each deleted once Ready (or launched, --no-agents)",
    )
    add("--duration", type=float, default=60.0, help="seconds of creating, with --rate (60)")
    add(
        "--no-agents",
        action="store_true",
        help="the simulator runs no join data (no root needed, no Node joins): the run "
        "measures the operator's way up to launched (all launched against the launch-pacing "
        "floor), then tears down; with --rate, requests are deleted once launched",
    )
    add(
        "--providers-per-cloud",
        type=_positive_int,
        help="with --rate: GPUProviders per cloud (default: launch limits for 1.2 x the rate)",
    )
    add(
        "--faults",
        action="store_true",
        help="every cloud call fails at the chaos suite's rates (issue 12: about 10 %% 5xx, "
        "5 %% 429, 2 %% timeouts; bench.faults): convergence under faults",
    )
    args = parser.parse_args(argv)
    if args.hold < 0:
        parser.error("--hold must be 0 or more")
    if args.rate is not None and (args.rate <= 0 or args.duration <= 0):
        parser.error("--rate and --duration must be positive")
    if args.workers < 0:
        parser.error("--workers must be 0 (gpuctl's sizing) or more")
    return Options(
        requests=args.requests,
        concurrency=args.concurrency,
        workers=args.workers,
        clouds=args.clouds,
        timeout=args.timeout,
        ready_poll=args.ready_poll,
        joining_poll=args.joining_poll,
        termination_poll=args.termination_poll,
        status_coalesce=args.status_coalesce,
        log_level=args.log_level,
        json_path=args.json_path,
        hold=args.hold,
        ignore_memory_check=args.ignore_memory_check,
        rate=args.rate,
        duration=args.duration,
        agents=not args.no_agents,
        providers_per_cloud=args.providers_per_cloud,
        faults=args.faults,
    )


def memory_needed(requests: int) -> int:
    """Bytes a run of `requests` real agents needs available (see MACHINE_BUDGET)."""
    return requests * MACHINE_BUDGET + BASE_BUDGET


def preflight(options: Options, euid: int | None = None, available: int | None = None) -> None:
    """Refuse a run that cannot work here: not root, or not enough memory for the agents."""
    if not options.agents:
        return  # no machine joins: nothing needs root, agents take no memory
    if (os.geteuid() if euid is None else euid) != 0:
        raise SystemExit(
            "bench.lifecycle runs every request's machine as a real node agent in its own "
            "mount and PID namespaces (gpuctl sim --execute-join-data): run it as root"
        )
    have = meminfo().get("MemAvailable", 0) if available is None else available
    need = memory_needed(options.requests)
    if need > have and not options.ignore_memory_check:
        raise SystemExit(
            f"{options.requests} requests run {options.requests} node agents: want "
            f"{need / 2**30:.1f} GiB available ({MACHINE_BUDGET >> 20} MiB each + "
            f"{BASE_BUDGET >> 30} GiB), MemAvailable is {have / 2**30:.1f} GiB. Use fewer "
            "--requests, or --ignore-memory-check"
        )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"want a positive integer, got {text}")
    return value


def _clouds(text: str) -> tuple[str, ...]:
    clouds = tuple(c.strip() for c in text.split(",") if c.strip())
    unknown = [c for c in clouds if c not in CLOUDS]
    if unknown or not clouds:
        raise argparse.ArgumentTypeError(f"want some of {','.join(CLOUDS)}, got {text!r}")
    return clouds


# -- watching the requests ----------------------------------------------------------------


@attrs.define
class Timeline:
    """Monotonic times of one request's milestones, as this process saw them."""

    sent: float | None = None
    created: float | None = None
    launched: float | None = None
    ready: float | None = None
    delete_sent: float | None = None
    gone: float | None = None


class Tracker:
    """An informer handler stamping each request's milestones when the watch delivers them."""

    def __init__(self) -> None:
        self.timelines: dict[str, Timeline] = defaultdict(Timeline)
        self.status_changes = StatusChanges()  # what each status write changed

    def on_add(self, obj: JSON) -> None:
        self._see(obj)

    def on_update(self, old: JSON, new: JSON) -> None:
        self.status_changes.see(old, new)
        self._see(new)

    def on_delete(self, obj: JSON) -> None:
        timeline = self.timelines[obj["metadata"]["name"]]
        if timeline.gone is None:
            timeline.gone = time.monotonic()

    def _see(self, obj: JSON) -> None:
        now = time.monotonic()
        timeline = self.timelines[obj["metadata"]["name"]]
        status = obj.get("status") or {}
        if timeline.launched is None and (status.get("instance") or {}).get("id"):
            timeline.launched = now
        if timeline.ready is None and status.get("phase") == "Ready":
            timeline.ready = now

    def count(self, milestone: str) -> int:
        return sum(getattr(t, milestone) is not None for t in self.timelines.values())

    def last(self, milestone: str) -> float | None:
        stamps = [getattr(t, milestone) for t in self.timelines.values()]
        return max((s for s in stamps if s is not None), default=None)


def watch_latencies(timelines: Sequence[Timeline]) -> tuple[list[float], ...]:
    """Seconds create sent -> launched, create sent -> Ready, launched -> Ready."""
    launch = [t.launched - t.sent for t in timelines if t.launched and t.sent]
    ready = [t.ready - t.sent for t in timelines if t.ready and t.sent]
    launch_to_ready = [t.ready - t.launched for t in timelines if t.ready and t.launched]
    return launch, ready, launch_to_ready


def status_latencies(objects: Sequence[JSON]) -> tuple[list[float], list[float]]:
    """Seconds from creationTimestamp to launchedAt and to readyAt (1 s resolution)."""
    launch: list[float] = []
    ready: list[float] = []
    for obj in objects:
        created = parse_time(obj["metadata"].get("creationTimestamp"))
        status = obj.get("status") or {}
        launched = parse_time((status.get("instance") or {}).get("launchedAt"))
        ready_at = parse_time(status.get("readyAt"))
        if created and launched:
            launch.append((launched - created).total_seconds())
        if created and ready_at:
            ready.append((ready_at - created).total_seconds())
    return launch, ready


# -- cluster objects ---------------------------------------------------------------------


def operator_process(options: Options, cp: ControlPlane, workdir: Path) -> OperatorProcess:
    """`gpuctl run` against `cp` with the run's workers, polls and log level."""
    return OperatorProcess(
        kubeconfig=cp.kubeconfig,
        ca_cert_hash=ca_public_key_hash(cp.ca_file.read_bytes()),
        log_path=workdir / "operator.log",
        workers=options.workers,
        ready_poll=options.ready_poll,
        joining_poll=options.joining_poll,
        termination_poll=options.termination_poll,
        status_coalesce=options.status_coalesce,
        log_level=options.log_level,
    )


def operator_workers(options: Options, sim: SimProcess, cp: ControlPlane) -> int:
    """The operator's request workers: `--workers`, else what gpuctl sizes from the limits."""
    if options.workers:
        return options.workers
    bodies = [provider_body(cloud, sim, cp) for cloud in options.clouds]
    return workers_for(provider_limits(bodies))


def provider_name(cloud: str) -> str:
    return f"bench-{cloud}"


def provider_body(cloud: str, sim: SimProcess, cp: ControlPlane) -> JSON:
    name = provider_name(cloud)
    return {
        "apiVersion": "gpuctl.io/v1alpha1",
        "kind": "GPUProvider",
        "metadata": {"name": name},
        "spec": {
            "type": cloud,
            "endpoint": sim.endpoint(cloud),
            "credentialsSecretRef": {
                "namespace": OPERATOR_NAMESPACE,
                "name": name,
                "key": "apiKey",
            },
            "rateLimit": {
                "requestsPerSecond": REQUESTS_PER_SECOND,
                "launchesPerMinute": LAUNCHES_PER_MINUTE,
            },
            "bootstrap": {"method": "kubeadm", "apiServerEndpoint": cp.url},
            **OFFERS[cloud][1],
        },
    }


def secret_body(cloud: str, key: str) -> JSON:
    return {
        "metadata": {"name": provider_name(cloud), "namespace": OPERATOR_NAMESPACE},
        "data": {"apiKey": base64.b64encode(key.encode()).decode()},
    }


def request_name(index: int) -> str:
    return f"bench-{index:05d}"


def request_body(index: int, cloud: str) -> JSON:
    return {
        "apiVersion": "gpuctl.io/v1alpha1",
        "kind": "GPUNodeRequest",
        "metadata": {"name": request_name(index)},
        "spec": {
            "gpu": {"type": OFFERS[cloud][0], "count": 1},
            "providers": [provider_name(cloud)],
        },
    }


def assignments(requests: int, clouds: Sequence[str]) -> Iterator[tuple[int, str]]:
    """(index, cloud) for every request, round-robin over `clouds`."""
    return zip(range(requests), itertools.cycle(clouds), strict=False)


# -- the run -----------------------------------------------------------------------------


@attrs.frozen
class Mark:
    """Where the counters stood at the start of a phase."""

    metrics: Metrics
    ledger_entries: int
    cpu: dict[str, float]
    status_changes: Counter[str] = attrs.field(factory=Counter)


@attrs.define
class Bench:
    """One run; `run()` fills the report in phase by phase."""

    options: Options
    workdir: Path
    cp: ControlPlane
    api: Client
    sim: SimProcess
    operator: OperatorProcess
    watch: MachineWatch
    tracker: Tracker = attrs.field(factory=Tracker)
    nodes: NodeTracker = attrs.field(factory=NodeTracker)
    informer: Informer | None = None
    errors: list[str] = attrs.field(factory=list)

    def processes(self) -> dict[str, int]:
        # ControlPlane.pids lists etcd, kube-apiserver, kube-controller-manager, scheduler.
        names = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
        named = dict(zip(names, self.cp.pids, strict=False))
        return {
            "operator": self.operator.pid,
            "sim": self.sim.pid,
            **named,
            "bench": os.getpid(),
        }

    def cpu(self) -> dict[str, float]:
        cpu = {name: cpu_seconds_of(pid) for name, pid in self.processes().items()}
        cpu["machines"] = self.watch.cpu_seconds()
        return cpu

    async def providers_ready(self) -> None:
        async def ready() -> bool:
            states = (await self.operator.metrics()).by("gpuctl_provider_ready", "provider")
            return all(states.get(provider_name(c)) == 1.0 for c in self.options.clouds)

        await wait_until(ready, 120, "every GPUProvider Ready", interval=0.5)

    async def create_all(self) -> float:
        timelines = self.tracker.timelines

        async def create(item: tuple[int, str]) -> None:
            index, cloud = item
            timeline = timelines[request_name(index)]
            timeline.sent = time.monotonic()
            await create_quietly(self.api, GPUNODEREQUESTS, request_body(index, cloud))
            timeline.created = time.monotonic()

        started = time.monotonic()
        await bounded(
            assignments(self.options.requests, self.options.clouds),
            create,
            self.options.concurrency,
        )
        return time.monotonic() - started

    async def delete_all(self) -> None:
        timelines = self.tracker.timelines

        async def delete(name: str) -> None:
            timelines[name].delete_sent = time.monotonic()
            try:
                await retrying(lambda: self.api.delete(GPUNODEREQUESTS, name))
            except Exception as err:
                if not is_not_found(err):
                    raise

        names = [request_name(i) for i in range(self.options.requests)]
        await bounded(names, delete, self.options.concurrency)

    async def wait_for(self, milestone: str, since: float) -> float | None:
        """Seconds from `since` until every request reached `milestone`; None on timeout."""
        target = self.options.requests
        next_note = time.monotonic() + PROGRESS_EVERY

        async def reached() -> bool:
            nonlocal next_note
            if time.monotonic() >= next_note:
                next_note += PROGRESS_EVERY
                self.progress(since)
            if not self.operator.child or not self.operator.child.running:
                raise RuntimeError(f"the operator exited:\n{self.operator.log_tail()}")
            return self.tracker.count(milestone) >= target

        try:
            await wait_until(reached, self.options.timeout, f"{target} requests {milestone}", 0.1)
        except TimeoutError as err:
            self.errors.append(str(err))
            return None
        last = self.tracker.last(milestone)
        return None if last is None else last - since

    def progress(self, since: float) -> None:
        phases = Counter(
            (obj.get("status") or {}).get("phase") or "-"
            for obj in (self.informer.store.list() if self.informer else [])
        )
        counts = ", ".join(f"{k} {v}" for k, v in sorted(phases.items()))
        machines = len({p.machine for p in self.watch.procs})
        note(
            f"{time.monotonic() - since:6.1f} s: {counts or 'no requests'}; "
            f"{machines} machines, {len(self.nodes.ready_now)} Nodes Ready; "
            f"load {load_average()[0]}"
        )

    def machine_processes(self) -> int:
        """Processes of our machines: under the simulator's workdir or below the simulator."""
        pids = {p.pid for p in scan(self.watch.workdir)}
        if self.sim.child is not None and self.sim.child.running:
            pids.update(descendants(self.sim.pid))
        return len(pids)

    async def machines_gone(self, timeout: float) -> tuple[int, float | None]:  # noqa: ASYNC109
        """Machine processes now, and seconds until none is left (None: some stayed)."""
        started, left = time.monotonic(), self.machine_processes()

        async def none_left() -> bool:
            return self.machine_processes() == 0

        try:
            await wait_until(none_left, timeout, "every machine process to go", 0.1)
        except TimeoutError as err:
            self.errors.append(f"{err}: {self.machine_processes()} processes left")
            return left, None
        return left, time.monotonic() - started

    async def mark(self) -> Mark:
        return Mark(
            await self.operator.metrics(),
            len(await self.sim.ledger()),
            self.cpu(),
            self.tracker.status_changes.mark(),
        )

    async def work(self, seconds: float, before: Mark) -> tuple[Work, Mark]:
        """What happened since `before` (and the mark to measure the next phase from)."""
        metrics_before, cpu_before = before.metrics, before.cpu
        metrics = await self.operator.metrics()
        ledger = await self.sim.ledger(since=before.ledger_entries)
        cpu = self.cpu()
        ledger_by = Counter(f"{e['cloud']} {e['operation']}" for e in ledger)
        controller = {"controller": "gpunoderequest"}
        queue = {"name": "gpunoderequest"}
        waits = grown(
            metrics, metrics_before, "gpuctl_workqueue_queue_duration_seconds_sum", **queue
        )
        gets = grown(
            metrics, metrics_before, "gpuctl_workqueue_queue_duration_seconds_count", **queue
        )
        work = Work(
            seconds=seconds,
            status_writes=grown(metrics, metrics_before, "gpuctl_status_writes_total"),
            kube_calls=grown(metrics, metrics_before, "gpuctl_kube_api_requests_total"),
            kube_calls_by=grown_by(
                metrics, metrics_before, "gpuctl_kube_api_requests_total", "verb", "resource"
            ),
            provider_calls=grown(metrics, metrics_before, "gpuctl_provider_api_calls_total"),
            provider_seconds_by=grown_by(
                metrics,
                metrics_before,
                "gpuctl_provider_api_duration_seconds_sum",
                "cloud",
                "operation",
            ),
            ledger_calls=len(ledger),
            ledger_by=dict(sorted(ledger_by.items())),
            reconciles=grown(metrics, metrics_before, "gpuctl_reconcile_total", **controller),
            reconcile_errors=grown(
                metrics, metrics_before, "gpuctl_reconcile_errors_total", **controller
            ),
            reconcile_seconds=grown(
                metrics, metrics_before, "gpuctl_reconcile_duration_seconds_sum", **controller
            ),
            queue_wait_mean=per(waits, int(gets)),
            cpu_seconds={k: round(v - cpu_before.get(k, 0.0), 2) for k, v in cpu.items()},
            status_changes=self.tracker.status_changes.since(before.status_changes),
        )
        changes = self.tracker.status_changes.mark()
        return work, Mark(metrics, before.ledger_entries + len(ledger), cpu, changes)

    async def pacing(self, since: int) -> list[Pacing]:
        launches = [
            e
            for e in await self.sim.ledger(since=since)
            if e["operation"] in LAUNCH_OPERATIONS and 200 <= e["status"] < 300
        ]
        limit = LAUNCHES_PER_MINUTE / 60
        found = []
        for cloud in self.options.clouds:
            times = sorted(e["time"] for e in launches if e["cloud"] == cloud)
            span = times[-1] - times[0] if len(times) > 1 else 0.0
            gaps = [b - a for a, b in itertools.pairwise(times)]
            rate = (len(times) - 1) / span if span > 0 else 0.0
            found.append(Pacing(cloud, len(times), span, rate, limit, Summary.of(gaps)))
        return found

    async def leftovers(self) -> tuple[int, int, int, int]:
        """Instances not terminated, gpuctl Nodes, bootstrap tokens, spec violations."""
        instances = await self.sim.instances()
        live = [i for i in instances if i["phase"] != "terminated"]
        nodes = await self.api.list(NODES, label_selector="gpuctl.io/instance-name")
        tokens = await self.api.list(
            SECRETS, namespace="kube-system", label_selector="gpuctl.io/request"
        )
        violations = await self.sim.violations()
        return len(live), len(nodes["items"]), len(tokens["items"]), len(violations)

    async def ledger_bytes(self) -> int:
        """Bytes of data in the cost-ledger ConfigMaps (every deletion appends to them)."""
        maps = await self.api.list(
            CONFIGMAPS, namespace=OPERATOR_NAMESPACE, label_selector="gpuctl.io/ledger=cost"
        )
        data = (v for m in maps["items"] for v in (m.get("data") or {}).values())
        return sum(len(v.encode()) for v in data)


async def run(options: Options) -> LifecycleReport:
    preflight(options)
    machine, load_before = Machine.current(), load_average()
    host_before = host_memory_used()
    workdir = Path(tempfile.mkdtemp(prefix="gpuctl-bench-lifecycle-"))
    machines = workdir / "machines"
    note(f"{machine.describe()}; load {load_before}; logs in {workdir}")
    watch = MachineWatch(machines)
    async with contextlib.AsyncExitStack() as stack:
        cp = await stack.enter_async_context(ControlPlane())
        kube = await stack.enter_async_context(await api_client(cp.kubeconfig))
        await prepare_cluster(kube)
        await apply_join_rbac(cp)  # manifests/join, as a user installs it
        api = Client(kube)
        sim = SimProcess.for_benchmark(
            workdir,
            cp,
            capacity=options.requests + 10,
            machines=machines if options.agents else None,
        )
        stack.push_async_callback(sim.stop)
        await sim.start()
        if options.faults:
            await set_faults(sim, options.clouds)
        watch.start()
        stack.push_async_callback(watch.stop)
        for cloud in options.clouds:
            await api.create(SECRETS, secret_body(cloud, sim.api_key(cloud)))
            await api.create(GPUPROVIDERS, provider_body(cloud, sim, cp))
        operator = operator_process(options, cp, workdir)
        stack.push_async_callback(operator.stop)
        await operator.start()
        bench = Bench(options, workdir, cp, api, sim, operator, watch)
        try:
            report = await _measure(bench, machine, load_before, host_before, stack)
        except BaseException:
            note(f"operator log tail:\n{operator.log_tail()}")
            raise
    # The simulator has stopped (it kills and removes every machine it still has).
    left = len(scan(machines))
    if report.agents is not None:
        report = attrs.evolve(report, agents=attrs.evolve(report.agents, left_after_sim_stop=left))
    if left:
        report.errors.append(f"{left} machine processes outlived the simulator")
    return report


async def _measure(
    bench: Bench,
    machine: Machine,
    load_before: tuple[float, float, float],
    host_before: int,
    stack: contextlib.AsyncExitStack,
) -> LifecycleReport:
    options, operator, watch = bench.options, bench.operator, bench.watch
    startup = await operator.wait_ready(120)
    await bench.providers_ready()
    informer = Informer(bench.api, GPUNODEREQUESTS, name="bench")
    informer.add_handler(bench.tracker)
    bench.informer = informer
    node_informer = Informer(bench.api, NODES, label_selector=INSTANCE_LABEL, name="bench-nodes")
    node_informer.add_handler(bench.nodes)
    for each in (informer, node_informer):
        task = asyncio.create_task(each.run())
        stack.callback(task.cancel)
        stack.callback(each.stop)
        await each.wait_synced(60)

    start = await bench.mark()
    note(f"creating {options.requests} requests over {', '.join(options.clouds)}")
    t0 = time.monotonic()
    created_in = await bench.create_all()
    # Without agents no machine joins: the way up ends at launched (status.instance set).
    ready_in = await bench.wait_for("ready" if options.agents else "launched", t0)
    ready_objects = informer.store.list()
    up, after_up = await bench.work(time.monotonic() - t0, start)
    pacing = await bench.pacing(since=start.ledger_entries)
    rss_ready = operator.memory().rss
    nodes_ready = len(bench.nodes.ready_now)
    memory_ready = await asyncio.to_thread(watch.memory)
    host_ready = host_memory_used()
    instances = await bench.sim.instances()
    to_wall = time.time() - time.monotonic()
    request_ready = {
        name: t.ready + to_wall for name, t in bench.tracker.timelines.items() if t.ready
    }
    joins = join_latencies(instances, watch.snapshot(), bench.nodes.nodes, request_ready)
    milestone = "Ready" if options.agents else "launched"
    note(f"not all {milestone}" if ready_in is None else f"all {milestone} in {ready_in:.1f} s")

    memory_idle, idle_cpu = None, 0.0
    if options.hold > 0 and options.agents:
        note(f"{memory_ready.machines} machines, {nodes_ready} Nodes Ready; idle {options.hold} s")
        memory_idle, idle_cpu = await _hold(watch, options.hold)
        after_up = await bench.mark()  # the way down starts from here
    note("deleting")

    t1 = time.monotonic()
    await bench.delete_all()
    teardown_in = await bench.wait_for("gone", t1)
    down, _ = await bench.work(time.monotonic() - t1, after_up)
    left, gone_after = await bench.machines_gone(MACHINES_GONE_TIMEOUT)
    live, nodes, tokens, violations = await bench.leftovers()
    memory = operator.memory()
    await watch.stop()
    agents = Agents(
        machines=len(watch.times),
        nodes_registered=bench.nodes.registered,
        nodes_ever_ready=bench.nodes.ever_ready,
        nodes_ready_at_all_ready=nodes_ready,
        nodes_most_ready=bench.nodes.most_ready,
        joins=joins,
        memory_ready=memory_ready,
        memory_peak=watch.peak,
        memory_idle=memory_idle,
        hold_seconds=options.hold,
        idle_cpu_seconds=idle_cpu,
        host_used_before=host_before,
        host_used_ready=host_ready,
        host_used_peak=watch.host_peak_used,
        left_after_teardown=left,
        gone_after=gone_after,
    )

    timelines = list(bench.tracker.timelines.values())
    w_launch, w_ready, w_launch_ready = watch_latencies(timelines)
    s_launch, s_ready = status_latencies(ready_objects)
    return LifecycleReport(
        machine=machine,
        load_before=load_before,
        load_after=load_average(),
        options=options,
        operator_startup=startup,
        created_in=created_in,
        ready=bench.tracker.count("ready"),
        ready_in=ready_in if options.agents else None,
        launched=bench.tracker.count("launched"),
        launched_in=None if options.agents else ready_in,
        latencies=Latencies(
            Summary.of(w_launch),
            Summary.of(w_ready),
            Summary.of(w_launch_ready),
            Summary.of(s_launch),
            Summary.of(s_ready),
        ),
        up=up,
        pacing=pacing,
        gone=bench.tracker.count("gone"),
        teardown_in=teardown_in,
        down=down,
        live_instances=live,
        nodes_left=nodes,
        tokens_left=tokens,
        violations=violations,
        ledger_bytes=await bench.ledger_bytes(),
        operator_peak_rss=memory.hwm,
        operator_rss_ready=rss_ready,
        operator_rss_end=memory.rss,
        workdir=str(bench.workdir),
        workers=operator_workers(options, bench.sim, bench.cp),
        agents=agents if options.agents else None,
        errors=bench.errors,
    )


async def _hold(watch: MachineWatch, seconds: float) -> tuple[MachineMemory, float]:
    """Idle `seconds`: the machines' memory at the end and their CPU seconds over it."""
    cpu_before = watch.cpu_seconds()
    await asyncio.sleep(seconds)
    idle_cpu = watch.cpu_seconds() - cpu_before
    return await asyncio.to_thread(watch.memory), idle_cpu


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    if options.rate is not None:
        from bench import lifecycle_steady  # noqa: PLC0415 - it imports this module

        steady = asyncio.run(lifecycle_steady.run_steady(options, os.geteuid()))
        print(lifecycle_steady.render_steady(steady))
        if options.json_path is not None:
            text = json.dumps(to_json(steady), indent=2, default=str)
            options.json_path.write_text(text + "\n")
        return 0 if steady.ok else 1
    report = asyncio.run(run(options))
    print(render(report))
    if options.json_path is not None:
        options.json_path.write_text(json.dumps(to_json(report), indent=2, default=str) + "\n")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
