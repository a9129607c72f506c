"""Pool benchmark: N GPU pods from created to Running, through a GPUNodePool.

    PYTHONPATH=hack .venv/bin/python -m bench.pods [--pods 100] [--gpus 1] [--json FILE]

Needs root: every machine the pool buys runs a real node agent.

What runs, on this machine and 127.0.0.1: the real cluster (`ControlPlane`: etcd,
kube-apiserver, kube-controller-manager with the Deployment and ReplicaSet controllers,
kube-scheduler) with gpuctl's join RBAC; the simulated clouds (`gpuctl sim`, zero boot
delay, each instance a machine running its join data: real `kubeadm join` and kubelet
code); the operator (`gpuctl run`, gpuctl's default batch window: 1 s idle, 10 s max);
one GPUNodePool allowing RunPod's RTX 4090 (priced per GPU, up to 8 per machine); one
Deployment of `--pods` pods of `--gpus` GPUs each, tolerating the pool's taint.

Figures (docs/benchmarks.md):
- time to all Running: the Deployment's create call -> the last pod seen Running;
- per pod, created -> Running two ways: this process's watch (ADDED -> first seen with
  phase Running) and the objects (creationTimestamp -> the Ready condition's
  lastTransitionTime, whole seconds);
- what was bought: machines, GPUs, USD per hour, against the fewest 8-GPU machines the
  pods need; provisioning rounds and machines created (operator metrics);
- teardown: the Deployment and the pool deleted -> no GPUNodeRequest left, and no
  instance left at the simulated cloud.
Exit status: 0 when every pod ran and everything was torn down, else 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs

from bench.cluster import prepare_cluster, wait_until
from bench.figures import Summary, note, parse_time, render_table, to_json
from bench.host import Machine, load_average
from bench.lifecycle import provider_body, provider_name, secret_body
from bench.processes import OperatorProcess, SimProcess
from gpuctl.controllers.resources import GPUNODEPOOLS, GPUNODEREQUESTS, GPUPROVIDERS
from gpuctl.dev.controlplane import ControlPlane
from gpuctl.dev.manifests import apply_join_rbac
from gpuctl.dev.pki import ca_public_key_hash
from gpuctl.runtime.client import Client
from gpuctl.runtime.informer import Informer
from gpuctl.runtime.kubeclient import api_client
from gpuctl.runtime.resources import PODS, SECRETS, Resource

JSON = dict[str, Any]
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment", namespaced=True)
NAME = "bench-pods"
NAMESPACE = "default"
POOL = "bench-pool"
GPU_TYPE = "RTX-4090"
MACHINE_GPUS = 8  # RunPod rents up to 8 GPUs of a type in one pod


@attrs.frozen
class Options:
    pods: int = 100
    gpus: int = 1
    timeout: float = 600.0
    json_path: Path | None = None


@attrs.frozen
class Report:
    pods: int
    gpus_per_pod: int
    all_running_seconds: float | None
    watch: Summary | None  # created -> Running, this process's watch
    objects: Summary | None  # creationTimestamp -> Ready, whole seconds
    machines: int
    gpus: int
    price_per_hour: str
    fewest_machines: int
    rounds: dict[str, float]
    created_machines: float
    teardown_seconds: float | None
    left_requests: int
    left_instances: int
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    machine: str
    errors: list[str] = attrs.field(factory=list)


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.pods", description=__doc__)
    parser.add_argument("--pods", type=int, default=100, help="pods in the Deployment (100)")
    parser.add_argument("--gpus", type=int, default=1, help="GPUs per pod, 1 to 8 (1)")
    parser.add_argument("--timeout", type=float, default=600.0, help="bound of each phase, s")
    parser.add_argument("--json", type=Path, dest="json_path", help="also write JSON here")
    args = parser.parse_args(argv)
    if args.pods < 1 or not 1 <= args.gpus <= MACHINE_GPUS:
        parser.error("--pods must be positive and --gpus 1 to 8")
    return Options(args.pods, args.gpus, args.timeout, args.json_path)


def pool_body() -> JSON:
    return {
        "apiVersion": "gpuctl.io/v1alpha1",
        "kind": "GPUNodePool",
        "metadata": {"name": POOL},
        "spec": {
            "template": {
                "taints": [{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}],
                "requirements": [
                    {"key": "gpuctl.io/gpu-type", "operator": "In", "values": [GPU_TYPE]},
                    {
                        "key": "gpuctl.io/provider",
                        "operator": "In",
                        "values": [provider_name("runpod")],
                    },
                ],
            },
        },
    }


def deployment_body(options: Options) -> JSON:
    labels = {"app": NAME}
    container = {
        "name": "train",
        "image": "registry.example/train:1",
        "resources": {"limits": {"nvidia.com/gpu": str(options.gpus)}},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": {
            "replicas": options.pods,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
                    "terminationGracePeriodSeconds": 0,
                    "containers": [container],
                },
            },
        },
    }


class PodClock:
    """Informer handler: monotonic time each pod was first seen, and first seen Running."""

    def __init__(self) -> None:
        self.added: dict[str, float] = {}
        self.running: dict[str, float] = {}

    def on_add(self, obj: JSON) -> None:
        self.added.setdefault(obj["metadata"]["name"], time.monotonic())
        self._see(obj)

    def on_update(self, old: JSON, new: JSON) -> None:
        self._see(new)

    def on_delete(self, obj: JSON) -> None:
        pass

    def _see(self, obj: JSON) -> None:
        if (obj.get("status") or {}).get("phase") == "Running":
            self.running.setdefault(obj["metadata"]["name"], time.monotonic())


def object_latencies(pods: Sequence[JSON]) -> list[float]:
    found = []
    for pod in pods:
        created = parse_time(pod["metadata"].get("creationTimestamp"))
        for condition in (pod.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "Ready" and condition.get("status") == "True":
                ready = parse_time(condition.get("lastTransitionTime"))
                if created and ready:
                    found.append((ready - created).total_seconds())
    return found


def spend(requests: Sequence[JSON]) -> tuple[int, Decimal]:
    gpus = sum(int(r["spec"]["gpu"]["count"]) for r in requests)
    price = sum(
        (
            Decimal(
                str(((r.get("status") or {}).get("offer") or {}).get("pricePerHour")
                    or r["spec"].get("maxPricePerHour") or 0)
            )
            for r in requests
        ),
        Decimal(0),
    )  # fmt: skip
    return gpus, price


@attrs.define
class Run:
    """The processes and watch of one run."""

    options: Options
    api: Client
    sim: SimProcess
    operator: OperatorProcess
    clock: PodClock = attrs.field(factory=PodClock)
    informer: Informer | None = None
    errors: list[str] = attrs.field(factory=list)

    async def burst(self) -> float | None:
        """Create the pool and the Deployment; seconds until every pod was seen Running."""
        options = self.options
        await self.api.create(GPUNODEPOOLS, pool_body())
        note(f"creating a Deployment of {options.pods} pods x {options.gpus} GPU")
        t0 = time.monotonic()
        await self.api.create(DEPLOYMENTS, deployment_body(options), namespace=NAMESPACE)

        async def all_running() -> bool:
            return len(self.clock.running) >= options.pods

        try:
            await wait_until(all_running, options.timeout, f"{options.pods} pods Running")
        except TimeoutError as err:
            self.errors.append(str(err))
            return None
        return max(self.clock.running.values()) - t0

    async def bought(self) -> tuple[list[JSON], dict[str, float], float]:
        listed = await self.api.list(GPUNODEREQUESTS, label_selector=f"gpuctl.io/pool={POOL}")
        metrics = await self.operator.metrics()
        rounds = metrics.by("gpuctl_pool_provisioning_rounds_total", "result")
        return list(listed["items"]), rounds, metrics.total("gpuctl_pool_machines_created_total")

    async def teardown(self) -> tuple[float | None, int, int]:
        """Delete the Deployment and the pool: seconds until no request is left, and leftovers."""
        t1 = time.monotonic()
        await self.api.delete(DEPLOYMENTS, NAME, namespace=NAMESPACE)
        await self.api.delete(GPUNODEPOOLS, POOL)

        async def no_requests() -> bool:
            listed = await self.api.list(GPUNODEREQUESTS)
            return not listed["items"]

        seconds: float | None = None
        with contextlib.suppress(TimeoutError):
            await wait_until(no_requests, self.options.timeout, "the pool's requests gone")
            seconds = time.monotonic() - t1
        left = len((await self.api.list(GPUNODEREQUESTS))["items"])
        live = [i for i in await self.sim.instances() if i.get("phase") != "terminated"]
        if seconds is None or left or live:
            self.errors.append(f"teardown left {left} requests, {len(live)} instances")
        return seconds, left, len(live)


async def start(stack: contextlib.AsyncExitStack, options: Options, workdir: Path) -> Run:
    """The cluster, the simulated RunPod, the operator, and a watch on the pods."""
    cp = await stack.enter_async_context(ControlPlane())
    kube = await stack.enter_async_context(await api_client(cp.kubeconfig))
    await prepare_cluster(kube)
    await apply_join_rbac(cp)
    api = Client(kube)
    capacity = options.pods * options.gpus + 16
    sim = SimProcess.for_benchmark(workdir, cp, capacity=capacity, machines=workdir / "machines")
    stack.push_async_callback(sim.stop)
    await sim.start()
    await api.create(SECRETS, secret_body("runpod", sim.api_key("runpod")))
    await api.create(GPUPROVIDERS, provider_body("runpod", sim, cp))
    operator = OperatorProcess(
        kubeconfig=cp.kubeconfig,
        ca_cert_hash=ca_public_key_hash(cp.ca_file.read_bytes()),
        log_path=workdir / "operator.log",
    )
    stack.push_async_callback(operator.stop)
    await operator.start()
    await operator.wait_ready(120)
    run = Run(options, api, sim, operator)
    run.informer = Informer(api, PODS, namespace=NAMESPACE, label_selector=f"app={NAME}")
    run.informer.add_handler(run.clock)
    task = asyncio.create_task(run.informer.run())
    stack.callback(task.cancel)
    await run.informer.wait_synced(60)
    return run


async def measure(options: Options) -> Report:
    machine, load_before = Machine.current(), load_average()
    workdir = Path(tempfile.mkdtemp(prefix="gpuctl-bench-pods-"))
    note(f"{machine.describe()}; load {load_before}; logs in {workdir}")
    async with contextlib.AsyncExitStack() as stack:
        run = await start(stack, options, workdir)
        all_in = await run.burst()
        clock = run.clock
        watch = [clock.running[n] - clock.added[n] for n in clock.running if n in clock.added]
        assert run.informer is not None
        pods = run.informer.store.list()
        requests, rounds, created = await run.bought()
        gpus, price = spend(requests)
        note(f"{len(clock.running)} Running on {len(requests)} machines; tearing down")
        teardown, left_requests, left_instances = await run.teardown()
    return Report(
        pods=options.pods,
        gpus_per_pod=options.gpus,
        all_running_seconds=all_in,
        watch=Summary.of(watch),
        objects=Summary.of(object_latencies(pods)),
        machines=len(requests),
        gpus=gpus,
        price_per_hour=str(price),
        fewest_machines=math.ceil(options.pods / (MACHINE_GPUS // options.gpus)),
        rounds=rounds,
        created_machines=created,
        teardown_seconds=teardown,
        left_requests=left_requests,
        left_instances=left_instances,
        load_before=load_before,
        load_after=load_average(),
        machine=machine.describe(),
        errors=run.errors,
    )


def render(report: Report) -> str:
    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f} s"

    sections = [
        (
            f"{report.pods} pods x {report.gpus_per_pod} GPU through a GPUNodePool",
            [
                ("machine", report.machine),
                ("load before / after", f"{report.load_before} / {report.load_after}"),
                ("time to all Running", seconds(report.all_running_seconds)),
                (
                    "created -> Running, watch (p50 / p90 / p99 / max)",
                    report.watch.describe() if report.watch else "-",
                ),
                (
                    "created -> Ready, objects (whole s)",
                    report.objects.describe(digits=0) if report.objects else "-",
                ),
            ],
        ),
        (
            "what was bought",
            [
                ("machines (fewest possible)", f"{report.machines} ({report.fewest_machines})"),
                ("GPUs", str(report.gpus)),
                ("USD per hour", report.price_per_hour),
                ("provisioning rounds", json.dumps(report.rounds, sort_keys=True)),
                ("requests created by the provisioner", f"{report.created_machines:.0f}"),
            ],
        ),
        (
            "teardown",
            [
                (
                    "Deployment and pool deleted -> no request left",
                    seconds(report.teardown_seconds),
                ),
                ("requests / instances left", f"{report.left_requests} / {report.left_instances}"),
            ],
        ),
    ]
    text = render_table(sections)
    if report.errors:
        text += "\n\nerrors:\n" + "\n".join(f"- {e}" for e in report.errors)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    report = asyncio.run(measure(options))
    print(render(report))
    if options.json_path is not None:
        options.json_path.write_text(json.dumps(to_json(report), indent=2))
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
