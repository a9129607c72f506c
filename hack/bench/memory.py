"""Memory benchmark: the operator's RSS holding 10,000 GPUNodeRequests and 10,000 Nodes.

    PYTHONPATH=hack .venv/bin/python -m bench.memory [--requests 10000] [--nodes 10000]

On a real local control plane (`gpuctl.dev.controlplane.ControlPlane`, etcd quota 8 GiB):
1. baseline: start the operator (`gpuctl run`, a child process) on the empty cluster,
   wait for /readyz, let it idle `--settle` seconds, read VmRSS and VmHWM; stop it;
2. create the requests and the Nodes directly in the API server as the admin, at most
   `--concurrency` calls in flight, and time both (objects per second). The requests
   need no cloud: there is no GPUProvider and their GPU type (`--gpu-type`, default
   NO-SUCH-GPU) is in no catalog, so each is marked Failed (UnknownGPUType) by one status
   write; a known type (e.g. H100-80GB) keeps them Pending with OfferAvailable False
   (NoOffer) instead. The Nodes look like the simulated kubelet's (labels including
   `gpuctl.io/instance-name` and `gpuctl.io/request` naming a request, provider ID,
   taint, capacity, conditions, addresses, node info, a few images, the labels a
   kubelet sets, beta ones included). No kubelet runs behind them, so the control
   plane runs with a node-monitor grace period of `NODE_MONITOR_GRACE` (1 h, longer
   than a run): they stay Ready as Nodes whose kubelets heartbeat do. With the tests'
   20 s, kube-controller-manager's node-lifecycle controller marks every one Unknown
   and taints it, a few Nodes a second, and each such change is a real one the request
   controller is told of (docs/benchmarks.md, "Issue 13, third pass"). The API
   server's TaintNodesByCondition admission gives every new Node the
   `node.kubernetes.io/not-ready` NoSchedule taint, which the node-lifecycle
   controller takes off a Ready Node once: about 9 Nodes a second at 10,000 Nodes (its
   client is throttled), 19 minutes in all. The bench takes it off itself
   (`untaint_nodes`, as that controller would) until no Node has it, so the operator
   starts on Nodes in their settled state;
3. loaded: start the operator again; read VmRSS at /readyz (the informers hold every
   object, nothing is reconciled yet), wait for the first pass (every request's first
   status write, from `gpuctl_status_writes_total`) and for the work it leaves to drain
   (queue empty, no reconcile for 3 s: the last writes' own watch events), then sample
   VmRSS every second for `--settle` seconds while counting reconciles, API calls and
   the operator's CPU time, and the Node updates the API server sent (a watch of its
   own): the idle figures.
4. where the bytes go (`--profile`, on by default): in this process, under
   tracemalloc, an informer per kind and per variant lists the loaded cluster into its
   store (with the operator's indexes): as decoded, managedFields dropped, and the
   operator's own transform (gpuctl/controllers/transforms.py). The bytes still traced
   once it synced, per cached object, and the peak while it listed.
Figures: baseline and loaded RSS (at /readyz; the window's highest VmRSS) and VmHWM,
their difference per cached object, the mean JSON size of a request and of a Node as
the API server sends them (with and without managedFields, which the informers keep),
creation rates, and the steady state (reconciles/s, API calls/s, CPU share, work-queue
depth).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import sys
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import attrs

from bench.cluster import bounded, create_quietly, prepare_cluster, retrying, wait_until
from bench.figures import Section, fmt_bytes, note, render_table, to_json
from bench.host import Machine, load_average, machine_rows
from bench.processes import OperatorProcess
from bench.promtext import Metrics, grown
from gpuctl.controllers import transforms
from gpuctl.controllers.garbagecollect import UID_INDEX, uid_index
from gpuctl.controllers.request.nodes import INSTANCE_INDEX, REQUEST_INDEX
from gpuctl.controllers.resources import GPUNODEREQUESTS
from gpuctl.dev.controlplane import ControlPlane
from gpuctl.dev.pki import ca_public_key_hash
from gpuctl.runtime.client import ApiError, Client, is_conflict, is_not_found
from gpuctl.runtime.informer import Informer, Transform
from gpuctl.runtime.kubeclient import api_client
from gpuctl.runtime.resources import NODES, Resource
from gpuctl.runtime.store import label_index
from gpuctl.runtime.transform import drop_managed_fields

JSON = dict[str, Any]
# Not in gpuctl's catalog: each request is marked Failed (UnknownGPUType) once, with no
# cloud and no API call afterwards. A known type with no GPUProvider stays Pending, and
# every re-reconcile of it patches its NoOffer Event (docs/benchmarks.md).
UNKNOWN_GPU = "NO-SUCH-GPU"
# No kubelet heartbeats the bench's Nodes: this grace period keeps kube-controller-manager
# from marking them Unknown (and tainting them) while the benchmark runs.
NODE_MONITOR_GRACE = "1h"
# What the TaintNodesByCondition admission puts on every new Node and the node-lifecycle
# controller takes off a Ready one.
NOT_READY_TAINT = "node.kubernetes.io/not-ready"
SIZE_SAMPLE = 200  # objects listed to measure the mean object size
IMAGES = (
    "registry.k8s.io/kube-proxy:v1.37.2",
    "registry.k8s.io/pause:3.10",
    "nvcr.io/nvidia/k8s-device-plugin:v0.17.0",
    "nvcr.io/nvidia/k8s/dcgm-exporter:4.1.1-4.0.4-ubuntu22.04",
    "nvcr.io/nvidia/cuda:12.8.0-base-ubuntu22.04",
    "ghcr.io/gpuctl/node:latest",
)


@attrs.frozen
class Options:
    requests: int = 10_000
    nodes: int = 10_000
    concurrency: int = 32
    gpu_type: str = UNKNOWN_GPU
    settle: float = 10.0
    workers: int = 4
    joining_poll: float | None = None  # None: gpuctl run's default (5 s)
    timeout: float = 1800.0
    log_level: str = "info"
    json_path: Path | None = None
    profile: bool = True
    node_monitor_grace: str = NODE_MONITOR_GRACE


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.memory",
        description="RSS of the operator (a child process) holding N GPUNodeRequests and "
        "N Nodes in its caches, against a baseline with empty caches. See "
        "docs/benchmarks.md.",
    )
    add = parser.add_argument
    add("--requests", type=_count, default=10_000, help="GPUNodeRequests to create (10000)")
    add("--nodes", type=_count, default=10_000, help="Nodes to create (10000)")
    add("--concurrency", type=_count, default=32, help="create calls in flight (32)")
    add(
        "--gpu-type",
        default=UNKNOWN_GPU,
        help=f"spec.gpu.type ({UNKNOWN_GPU}: the requests go Failed; a known type such as "
        "H100-80GB keeps them Pending with NoOffer)",
    )
    add("--settle", type=float, default=10.0, help="seconds of RSS sampling per operator (10)")
    add("--workers", type=_count, default=4, help="operator reconcile workers (4)")
    add(
        "--joining-poll",
        type=float,
        help="operator --joining-poll (default: gpuctl's, 5 s)",
    )
    add("--timeout", type=float, default=1800.0, help="bound in s of each wait (1800)")
    add("--log-level", default="info", help="operator log level (info)")
    add(
        "--node-monitor-grace",
        default=NODE_MONITOR_GRACE,
        help=f"kube-controller-manager's --node-monitor-grace-period ({NODE_MONITOR_GRACE}; "
        "20s, the tests' value, has the node-lifecycle controller mark every Node Unknown)",
    )
    add("--json", type=Path, dest="json_path", help="also write the report as JSON here")
    add(
        "--no-profile",
        dest="profile",
        action="store_false",
        help="skip the tracemalloc profile of the informer caches",
    )
    args = parser.parse_args(argv)
    return Options(
        requests=args.requests,
        nodes=args.nodes,
        concurrency=args.concurrency,
        gpu_type=args.gpu_type,
        settle=args.settle,
        workers=args.workers,
        joining_poll=args.joining_poll,
        timeout=args.timeout,
        log_level=args.log_level,
        json_path=args.json_path,
        profile=args.profile,
        node_monitor_grace=args.node_monitor_grace,
    )


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"want a non-negative integer, got {text}")
    return value


# -- the report ---------------------------------------------------------------------------


@attrs.frozen
class Creation:
    count: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0


@attrs.frozen
class Sizes:
    """Mean JSON size of one object as the API server sends it, in bytes."""

    request: float
    request_without_managed_fields: float
    node: float
    node_without_managed_fields: float


@attrs.frozen
class Steady:
    """The operator during the sampling window."""

    rss_synced: int  # VmRSS at /readyz: caches filled, nothing reconciled yet
    rss: int  # highest VmRSS sampled in the window
    hwm: int  # VmHWM at the end of the window
    startup: float  # start -> /readyz, seconds
    first_pass: float | None  # start -> every request's first status write; None: none
    reconciles_per_second: float
    kube_calls_per_second: float  # the operator's Kubernetes API calls
    cpu_share: float  # CPU seconds per second of the window (1.0 = one core)
    queue_depth: float  # gpunoderequest work-queue depth at the window's end
    node_updates_per_second: float = 0.0  # Node MODIFIED events the API server sent


@attrs.frozen
class CacheProfile:
    """One informer's store under tracemalloc: what it holds once synced."""

    kind: str
    variant: str
    objects: int
    held: int  # bytes still traced after the sync (store, indexes, informer)
    peak: int  # the highest traced bytes while listing, over the start

    @property
    def per_object(self) -> float:
        return self.held / self.objects if self.objects else 0.0


@attrs.frozen
class MemoryReport:
    machine: Machine
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    options: Options
    baseline: Steady
    requests_created: Creation
    nodes_created: Creation
    sizes: Sizes
    loaded: Steady
    workdir: str
    errors: list[str] = attrs.field(factory=list)
    profile: list[CacheProfile] = attrs.field(factory=list)
    untainted: Creation | None = None  # Nodes whose not-ready taint the bench removed

    @property
    def objects(self) -> int:
        return self.options.requests + self.options.nodes

    @property
    def bytes_per_object(self) -> float:
        """RSS growth over the baseline after the first pass, per cached object."""
        return self.per_object(self.loaded.rss)

    def per_object(self, rss: int) -> float:
        return (rss - self.baseline.rss) / self.objects if self.objects else 0.0


def render(report: MemoryReport) -> str:
    o, base, loaded = report.options, report.baseline, report.loaded
    sections: list[Section] = [
        ("machine", machine_rows(report.machine, report.load_before, report.load_after)),
        ("objects", [
            ("GPUNodeRequests created", _creation(report.requests_created)),
            ("Nodes created", _creation(report.nodes_created)),
            ("Nodes' not-ready taint removed (as the node-lifecycle controller does)",
             "-" if report.untainted is None else _creation(report.untainted)),
            ("request spec.gpu.type / GPUProviders", f"{o.gpu_type} / none"),
            ("operator workers / joining poll",
             f"{o.workers} / {o.joining_poll or 'default'}"),
            ("node-monitor grace period (no kubelet heartbeats)", o.node_monitor_grace),
            ("mean request size (without managedFields)",
             _size(report.sizes.request, report.sizes.request_without_managed_fields)),
            ("mean Node size (without managedFields)",
             _size(report.sizes.node, report.sizes.node_without_managed_fields)),
        ]),
        ("operator, empty caches", _steady_rows(base)),
        (f"operator, {report.objects:,} objects cached", _steady_rows(loaded)),
        ("result", [
            ("RSS growth at /readyz, per cached object",
             f"{fmt_bytes(loaded.rss_synced - base.rss)}, "
             f"{report.per_object(loaded.rss_synced) / 1024:.1f} KiB"),
            ("RSS growth after the first pass, per cached object",
             f"{fmt_bytes(loaded.rss - base.rss)}, {report.bytes_per_object / 1024:.1f} KiB"),
        ]),
    ]  # fmt: skip
    if report.profile:
        sections.append(("where the bytes go: one informer, tracemalloc", [
            (f"{p.kind}, {p.variant}",
             f"{p.per_object / 1024:.1f} KiB per object, {fmt_bytes(p.held)} for "
             f"{p.objects:,}; peak while listing {fmt_bytes(p.peak)}")
            for p in report.profile
        ]))  # fmt: skip
    if report.errors:
        sections.append(("errors", [(str(i + 1), e) for i, e in enumerate(report.errors)]))
    return render_table(sections)


def _steady_rows(steady: Steady) -> list[tuple[str, str]]:
    first = "-" if steady.first_pass is None else f"{steady.first_pass:.1f} s"
    return [
        ("RSS at /readyz (caches synced, nothing reconciled)", fmt_bytes(steady.rss_synced)),
        ("RSS after the first pass (VmRSS, highest sample)", fmt_bytes(steady.rss)),
        ("peak RSS (VmHWM)", fmt_bytes(steady.hwm)),
        ("start -> /readyz (caches synced)", f"{steady.startup:.1f} s"),
        ("start -> every request's first status write", first),
        ("then: reconciles/s, API calls/s", f"{steady.reconciles_per_second:.1f}/s, "
                                             f"{steady.kube_calls_per_second:.1f}/s"),
        ("then: Node updates/s (any writer)", f"{steady.node_updates_per_second:.1f}/s"),
        ("then: CPU share, work-queue depth",
         f"{100 * steady.cpu_share:.0f} % of a core, {steady.queue_depth:.0f}"),
    ]  # fmt: skip


def _creation(creation: Creation) -> str:
    return f"{creation.count:,} in {creation.seconds:.1f} s ({creation.rate:.0f}/s)"


def _size(raw: float, trimmed: float) -> str:
    return f"{fmt_bytes(raw)} ({fmt_bytes(trimmed)})"


# -- objects ------------------------------------------------------------------------------


def request_name(index: int) -> str:
    return f"mem-{index:05d}"


def request_body(index: int, gpu_type: str) -> JSON:
    return {
        "apiVersion": "gpuctl.io/v1alpha1",
        "kind": "GPUNodeRequest",
        "metadata": {"name": request_name(index)},
        "spec": {
            "gpu": {"type": gpu_type, "count": 8},
            "capacityType": "spot-or-on-demand",
            "maxPricePerHour": "25",
            "regions": ["us-east", "us-west"],
            "node": {
                "labels": {"team": "ml", "workload": "training"},
                "taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}],
            },
            "lifetime": {"maxLifetime": "24h"},
        },
    }


def node_body(index: int) -> JSON:
    """A Node as the simulated kubelet registers it, for the request of the same index."""
    name = f"gpuctl-mem-{index:012x}-1"
    resources = {"cpu": "208", "memory": "1800Gi", "pods": "110", "nvidia.com/gpu": "8"}
    now = "2026-06-01T00:00:00Z"
    conditions = [
        {"type": kind, "status": "False", "reason": f"KubeletHas{reason}",
         "message": f"kubelet has {reason.lower()}", "lastHeartbeatTime": now,
         "lastTransitionTime": now}
        for kind, reason in (("MemoryPressure", "SufficientMemory"),
                             ("DiskPressure", "NoDiskPressure"),
                             ("PIDPressure", "SufficientPID"))
    ] + [{"type": "Ready", "status": "True", "reason": "KubeletReady",
          "message": "kubelet is posting ready status", "lastHeartbeatTime": now,
          "lastTransitionTime": now}]  # fmt: skip
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "gpuctl.io/request": request_name(index),
                "gpuctl.io/instance-name": name,
                "gpuctl.io/provider": "lambda",
                "gpuctl.io/capacity-type": "on-demand",
                "gpuctl.io/gpu-type": "H100-80GB",
                "node.kubernetes.io/instance-type": "gpu_8x_h100_sxm5",
                "topology.kubernetes.io/region": "us-east-1",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/os": "linux",  # a kubelet sets both
                "beta.kubernetes.io/arch": "amd64",
                "team": "ml",
            },
        },
        "spec": {
            "providerID": f"gpuctl://lambda/us-east-1/{index:032x}",
            "taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}],
        },
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": conditions,
            "addresses": [
                {"type": "Hostname", "address": name},
                {
                    "type": "InternalIP",
                    "address": f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}",
                },
                {"type": "ExternalIP", "address": f"198.51.{index >> 8 & 255}.{index & 255}"},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": f"{index:032x}",
                "systemUUID": f"{index:032x}",
                "bootID": f"{index:032x}-boot",
                "kernelVersion": "6.8.0-gpuctl-sim",
                "osImage": "Ubuntu 22.04 LTS (simulated)",
                "containerRuntimeVersion": "containerd://2.0.0",
                "kubeletVersion": "v1.37.2",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
            "images": [
                {"names": [image], "sizeBytes": 50_000_000 + 1_000_000 * i}
                for i, image in enumerate(IMAGES)
            ],
        },
    }


async def create_many(api: Client, resource: Resource, bodies: Sequence[JSON],
                      concurrency: int) -> Creation:  # fmt: skip
    async def create(body: JSON) -> None:
        await create_quietly(api, resource, body)

    started = time.monotonic()
    await bounded(bodies, create, concurrency)
    return Creation(len(bodies), time.monotonic() - started)


async def untaint_nodes(api: Client, concurrency: int, timeout: float) -> Creation:  # noqa: ASYNC109
    """Remove the not-ready taint from every Node that has it (each patch guarded by its
    resourceVersion: one kube-controller-manager changed meanwhile is looked at again),
    until a list shows none: the Nodes as the node-lifecycle controller leaves Ready ones."""
    started, patched = time.monotonic(), 0

    async def untaint(node: JSON) -> None:
        nonlocal patched
        taints = [t for t in node["spec"].get("taints") or () if t.get("key") != NOT_READY_TAINT]
        meta = node["metadata"]
        body = {
            "metadata": {"resourceVersion": meta["resourceVersion"]},
            "spec": {"taints": taints},
        }
        try:
            await retrying(lambda: api.patch(NODES, meta["name"], body))
            patched += 1
        except ApiError as err:
            if not (is_conflict(err) or is_not_found(err)):
                raise

    while tainted := [n for n in (await api.list(NODES))["items"] if _not_ready(n)]:
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{len(tainted)} Nodes still have {NOT_READY_TAINT}")
        await bounded(tainted, untaint, concurrency)
    return Creation(patched, time.monotonic() - started)


def _not_ready(node: JSON) -> bool:
    return any(t.get("key") == NOT_READY_TAINT for t in node.get("spec", {}).get("taints") or ())


async def mean_sizes(api: Client) -> Sizes:
    requests = (await api.list(GPUNODEREQUESTS, limit=SIZE_SAMPLE))["items"]
    nodes = (await api.list(NODES, limit=SIZE_SAMPLE))["items"]
    return Sizes(
        request=_mean_size(requests),
        request_without_managed_fields=_mean_size(requests, trim=True),
        node=_mean_size(nodes),
        node_without_managed_fields=_mean_size(nodes, trim=True),
    )


def _mean_size(objects: Sequence[JSON], *, trim: bool = False) -> float:
    if not objects:
        return 0.0
    shown = [_without_managed_fields(obj) if trim else obj for obj in objects]
    return sum(len(json.dumps(obj, separators=(",", ":"))) for obj in shown) / len(shown)


def _without_managed_fields(obj: JSON) -> JSON:
    metadata = {k: v for k, v in obj["metadata"].items() if k != "managedFields"}
    return {**obj, "metadata": metadata}


# -- the operator, measured ----------------------------------------------------------------


async def measure_operator(
    cp: ControlPlane,
    api: Client,
    options: Options,
    log_path: Path,
    *,
    requests: int,
    errors: list[str],
) -> Steady:
    """Start the operator, wait for /readyz and the first pass, sample, stop it.

    A first pass that does not finish within the timeout is noted in `errors`; the
    memory is sampled anyway."""
    operator = OperatorProcess(
        kubeconfig=cp.kubeconfig,
        ca_cert_hash=ca_public_key_hash(cp.ca_file.read_bytes()),
        log_path=log_path,
        workers=options.workers,
        joining_poll=options.joining_poll,
        log_level=options.log_level,
    )
    started = time.monotonic()
    await operator.start()
    try:
        startup = await operator.wait_ready(options.timeout)
        rss_synced = operator.memory().rss
        first_pass = None
        if requests:
            try:
                await _first_pass(operator, requests, options.timeout)
                first_pass = time.monotonic() - started
                await _quiet(operator, QUIET_TIMEOUT)
            except TimeoutError as err:
                errors.append(str(err))
        async with NodeUpdates.watching(api) as updates:
            steady = await _sample(operator, options.settle, startup, rss_synced, first_pass)
        return attrs.evolve(steady, node_updates_per_second=updates.rate())
    except BaseException:
        note(f"operator log tail:\n{operator.log_tail()}")
        raise
    finally:
        await operator.stop()


async def _first_pass(operator: OperatorProcess, requests: int, timeout: float) -> None:  # noqa: ASYNC109
    """Until every request got its first status write (the operator counts them)."""
    next_note = time.monotonic() + 10

    async def done() -> bool:
        nonlocal next_note
        writes = (await operator.metrics()).total("gpuctl_status_writes_total")
        if time.monotonic() >= next_note:
            next_note += 10
            note(f"first pass: {writes:.0f} / {requests} status writes; "
                 f"RSS {fmt_bytes(operator.memory().rss)}; load {load_average()[0]}")  # fmt: skip
        return writes >= requests

    await wait_until(done, timeout, f"{requests} first status writes", interval=1.0)


QUIET_TIMEOUT = 120.0  # seconds the work left by the first pass may take to drain
QUIET_FOR = 3.0  # seconds without a reconcile that count as quiet


async def _quiet(operator: OperatorProcess, timeout: float) -> None:  # noqa: ASYNC109
    """Until the first pass's last work is done: the request queue empty and no reconcile
    for `QUIET_FOR` s (the watch events of the last writes bring each request back once,
    which is work, not idling). The idle window is sampled after that."""
    last, since = -1.0, time.monotonic()

    async def quiet() -> bool:
        nonlocal last, since
        metrics = await operator.metrics()
        count = _reconciles(metrics)
        if count != last or metrics.total("gpuctl_workqueue_depth", name="gpunoderequest"):
            last, since = count, time.monotonic()
        return time.monotonic() - since >= QUIET_FOR

    await wait_until(quiet, timeout, "the operator to go quiet after the first pass", 0.5)


async def _sample(
    operator: OperatorProcess,
    settle: float,
    startup: float,
    rss_synced: int,
    first_pass: float | None,
) -> Steady:
    before, cpu_before, t0 = await operator.metrics(), operator.cpu_seconds(), time.monotonic()
    rss = operator.memory().rss
    while time.monotonic() - t0 < settle:
        await asyncio.sleep(1.0)
        rss = max(rss, operator.memory().rss)
    after, cpu_after, elapsed = (
        await operator.metrics(),
        operator.cpu_seconds(),
        time.monotonic() - t0,
    )
    reconciles = _reconciles(after) - _reconciles(before)
    return Steady(
        rss_synced=rss_synced,
        rss=rss,
        hwm=operator.memory().hwm,
        startup=startup,
        first_pass=first_pass,
        reconciles_per_second=reconciles / elapsed,
        kube_calls_per_second=grown(after, before, "gpuctl_kube_api_requests_total") / elapsed,
        cpu_share=(cpu_after - cpu_before) / elapsed,
        queue_depth=after.total("gpuctl_workqueue_depth", name="gpunoderequest"),
    )


class NodeUpdates:
    """Counts the Node MODIFIED events the API server sends, whoever wrote them (the
    node-lifecycle controller of kube-controller-manager, for one): over the idle window,
    what the operator's Node informer was told."""

    def __init__(self) -> None:
        self.count = 0
        self._started = time.monotonic()
        self._ended: float | None = None

    def rate(self) -> float:
        elapsed = (self._ended or time.monotonic()) - self._started
        return self.count / elapsed if elapsed > 0 else 0.0

    @classmethod
    @contextlib.asynccontextmanager
    async def watching(cls, api: Client) -> AsyncIterator[NodeUpdates]:
        updates = cls()
        version = str((await api.list(NODES, limit=1))["metadata"]["resourceVersion"])
        task = asyncio.create_task(updates._watch(api, version))
        try:
            yield updates
        finally:
            updates._ended = time.monotonic()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch(self, api: Client, version: str) -> None:
        while True:  # a watch the server ends is resumed from the last version seen
            stream = api.watch(NODES, resource_version=version, timeout_seconds=600)
            async for kind, obj in stream:
                version = str(obj["metadata"].get("resourceVersion") or version)
                self.count += kind == "MODIFIED"


def _reconciles(metrics: Metrics) -> float:
    return metrics.total("gpuctl_reconcile_total", controller="gpunoderequest")


# -- where the bytes go --------------------------------------------------------------------


@attrs.frozen
class Variant:
    kind: str
    resource: Resource
    selector: str | None  # the operator's label selector
    name: str
    transform: Transform | None


def _variants() -> list[Variant]:
    """Each kind as decoded, without managedFields, and as the operator caches it."""
    found = []
    for kind, resource, selector, slim in (
        ("GPUNodeRequest", GPUNODEREQUESTS, None, transforms.custom_resource),
        ("Node", NODES, "gpuctl.io/instance-name", transforms.node),
    ):
        for name, transform in (
            ("as decoded", None),
            ("managedFields dropped", drop_managed_fields),
            ("operator's transform", slim),
        ):
            found.append(Variant(kind, resource, selector, name, transform))
    return found


async def profile_caches(api: Client, timeout: float) -> list[CacheProfile]:  # noqa: ASYNC109
    """Each variant's informer, synced under tracemalloc (one at a time)."""
    found = []
    for variant in _variants():
        found.append(await _profile(api, variant, timeout))
        note(f"profile: {variant.kind}, {variant.name}: {found[-1].per_object / 1024:.1f} KiB")
    return found


async def _profile(api: Client, variant: Variant, timeout: float) -> CacheProfile:  # noqa: ASYNC109
    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        informer = Informer(
            api, variant.resource, label_selector=variant.selector, transform=variant.transform
        )
        if variant.resource is NODES:  # the operator's indexes
            informer.store.add_indexer(INSTANCE_INDEX, label_index("gpuctl.io/instance-name"))
            informer.store.add_indexer(REQUEST_INDEX, label_index("gpuctl.io/request"))
        else:
            informer.store.add_indexer(UID_INDEX, uid_index)
        task = asyncio.create_task(informer.run())
        try:
            if not await informer.wait_synced(timeout):
                raise TimeoutError(f"{variant.kind} informer not synced in {timeout} s")
        finally:
            informer.stop()
            await task
        gc.collect()
        held, peak = tracemalloc.get_traced_memory()
        objects = len(informer.store)
        del informer, task
        return CacheProfile(variant.kind, variant.name, objects, held - start, peak - start)
    finally:
        tracemalloc.stop()


# -- the run -----------------------------------------------------------------------------


async def run(options: Options) -> MemoryReport:
    machine, load_before = Machine.current(), load_average()
    workdir = Path(tempfile.mkdtemp(prefix="gpuctl-bench-memory-"))
    note(f"{machine.describe()}; load {load_before}; logs in {workdir}")
    async with contextlib.AsyncExitStack() as stack:
        cp = await stack.enter_async_context(
            ControlPlane(node_monitor_grace=options.node_monitor_grace)
        )
        kube = await stack.enter_async_context(await api_client(cp.kubeconfig))
        await prepare_cluster(kube)
        api = Client(kube)
        note("baseline: the operator on an empty cluster")
        errors: list[str] = []
        baseline = await measure_operator(
            cp, api, options, workdir / "operator-baseline.log", requests=0, errors=errors
        )
        note(f"creating {options.requests} GPUNodeRequests")
        bodies = [request_body(i, options.gpu_type) for i in range(options.requests)]
        requests = await create_many(api, GPUNODEREQUESTS, bodies, options.concurrency)
        note(f"creating {options.nodes} Nodes ({requests.rate:.0f} requests/s)")
        nodes = await create_many(
            api, NODES, [node_body(i) for i in range(options.nodes)], options.concurrency
        )
        untainted = await untaint_nodes(api, options.concurrency, options.timeout)
        note(f"not-ready taint removed from {untainted.count} Nodes in {untainted.seconds:.1f} s")
        sizes = await mean_sizes(api)
        note(f"loaded: the operator with {options.requests + options.nodes} objects")
        loaded = await measure_operator(
            cp,
            api,
            options,
            workdir / "operator-loaded.log",
            requests=options.requests,
            errors=errors,
        )
        profile = await profile_caches(api, options.timeout) if options.profile else []
        return MemoryReport(
            machine=machine,
            load_before=load_before,
            load_after=load_average(),
            options=options,
            baseline=baseline,
            requests_created=requests,
            nodes_created=nodes,
            sizes=sizes,
            loaded=loaded,
            workdir=str(workdir),
            errors=errors,
            profile=profile,
            untainted=untainted,
        )
    raise AssertionError("unreachable")


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    report = asyncio.run(run(options))
    print(render(report))
    if options.json_path is not None:
        options.json_path.write_text(json.dumps(to_json(report), indent=2, default=str) + "\n")
    return 0 if not report.errors else 1


if __name__ == "__main__":
    sys.exit(main())
