"""Steady-rate lifecycle: requests created at a fixed rate, each deleted once it got there.

    PYTHONPATH=hack .venv/bin/python -m bench.lifecycle --rate 100 --duration 60 --no-agents
    PYTHONPATH=hack .venv/bin/python -m bench.lifecycle --rate 5 --duration 60

Creates `--rate` GPUNodeRequests a second for `--duration` seconds (each create sent at
its own moment, i / rate after the start, however long earlier ones take), over
`--providers-per-cloud` GPUProviders of each cloud in `--clouds`, so that the providers'
launch limits together exceed the rate (by default enough of them for 1.2 x the rate at
10 launches/s each; each has its own client-side account: gpuctl shares a rate limiter
between GPUProviders of the same cloud, endpoint, key and limits, so their limits differ
by one request/s). Every request is deleted as soon as it reached its milestone: Ready
(with real node agents, the default; needs root) or, with `--no-agents` (the simulator
does not run the join data, so no machine ever joins), launched. The cluster therefore
holds about rate x (time to the milestone + teardown) requests and machines at once,
which is what lets a 2-core machine sustain the rate at all.

Figures:
- create -> launch call: the bench's wall clock when it sent the create, to the
  simulator's wall clock when the launch call (the first of the request's attempts)
  reached the cloud (its ledger; the launch body names the instance, whose name carries
  the request's UID): p50 / p90 / p99 / max. Goal: p99 <= 100 ms.
- create -> launched (the watch saw `status.instance`) and create -> Ready (the watch saw
  phase Ready; with agents): p50 / p90 / p99 / max;
- the rate achieved (creates sent and answered per second), launches per second per
  cloud, reconciles, mean queue wait and workers busy, CPU seconds per process, load.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from bench.cluster import create_quietly, prepare_cluster, retrying, wait_until
from bench.figures import Row, Summary, note, render_table
from bench.host import Machine, cpu_seconds_of, load_average, machine_rows
from bench.lifecycle import (
    LAUNCH_OPERATIONS,
    PROGRESS_EVERY,
    Timeline,
    Tracker,
    operator_process,
    provider_body,
    provider_name,
    request_body,
    secret_body,
)
from bench.lifecycle_report import LAUNCHES_PER_MINUTE, MACHINE_BUDGET, Options
from bench.machines import meminfo
from bench.processes import OperatorProcess, SimProcess
from bench.promtext import Metrics, grown
from gpuctl.controllers import naming
from gpuctl.controllers.concurrency import provider_limits, workers_for
from gpuctl.controllers.resources import GPUNODEREQUESTS, GPUPROVIDERS
from gpuctl.dev.controlplane import ControlPlane
from gpuctl.dev.manifests import apply_join_rbac
from gpuctl.runtime.client import Client, is_not_found
from gpuctl.runtime.informer import Informer
from gpuctl.runtime.kubeclient import api_client
from gpuctl.runtime.resources import SECRETS

JSON = dict[str, Any]
CLUSTER = "bench"  # OperatorProcess's --cluster-name, which names the instances
IN_FLIGHT = 512  # create calls in flight at most (the rate is kept by start times)
HEADROOM = 1.2  # the providers' launch limits together: this times the rate
SETTLE_TIMEOUT = 300.0  # after the last create: how long to wait for the rest


def providers_needed(rate: float, clouds: int) -> int:
    """GPUProviders per cloud whose launch limits together give HEADROOM x `rate`."""
    per_provider = LAUNCHES_PER_MINUTE / 60
    return max(1, math.ceil(HEADROOM * rate / (per_provider * clouds)))


def steady_provider(cloud: str, k: int, sim: SimProcess, cp: ControlPlane) -> JSON:
    """The k-th GPUProvider of `cloud`: its own name, and limits one request/s lower than
    the (k-1)-th, so gpuctl gives it its own rate limiter (an account of its own)."""
    body = provider_body(cloud, sim, cp)
    body["metadata"]["name"] = f"{provider_name(cloud)}-{k}"
    body["spec"]["rateLimit"]["requestsPerSecond"] -= k
    return body


@attrs.frozen
class SteadyReport:
    machine: Machine
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    options: Options
    providers: int  # GPUProviders in all
    workers: int
    sent: int
    send_seconds: float  # first create sent -> last create sent
    late: Summary | None  # how late each create was sent against its planned moment
    create_answer: Summary | None  # create sent -> answered
    to_launch_call: Summary | None
    to_launched: Summary | None
    to_ready: Summary | None
    reached: int  # requests that got to the milestone
    gone: int
    launch_rates: dict[str, float]  # cloud -> launch calls per second over the sending span
    reconciles: float
    reconcile_seconds: float
    queue_wait_mean: float
    seconds: float  # first create sent -> last request gone
    cpu_seconds: dict[str, float]
    live_instances: int
    errors: list[str] = attrs.field(factory=list)

    @property
    def ok(self) -> bool:
        done = self.reached == self.sent and self.gone == self.sent
        return done and not self.live_instances and not self.errors


def render_steady(r: SteadyReport) -> str:
    o = r.options
    milestone = "Ready" if o.agents else "launched"
    busy = r.reconcile_seconds / (r.seconds * r.workers) if r.seconds and r.workers else 0.0
    rows: list[Row] = [
        ("rate x duration", f"{o.rate:g}/s x {o.duration:g} s = {r.sent} requests sent"),
        ("clouds / GPUProviders",
         f"{', '.join(o.clouds)} / {r.providers} ({LAUNCHES_PER_MINUTE // 60} launches/s each)"),
        ("machines", "real node agents (kubeadm join, kubelet)" if o.agents
         else "none join (--no-agents): requests deleted once launched"),
        ("operator request workers", f"{r.workers}" + ("" if o.workers else " (sized default)")),
        ("creates sent over", f"{r.send_seconds:.1f} s = {r.sent / max(r.send_seconds, 1e-9):.1f}"
         "/s"),
        ("create sent late vs plan (p50 / p90 / p99 / max)", _s(r.late, 3)),
        ("create sent -> answered", _s(r.create_answer, 3)),
        ("**create -> launch call (sim ledger)**", _s(r.to_launch_call, 3)),
        ("create -> launched (watch)", _s(r.to_launched)),
        ("create -> Ready (watch)", _s(r.to_ready) if o.agents else "- (no agents)"),
        (f"reached {milestone} / gone", f"{r.reached} / {r.gone} of {r.sent}"),
        ("launch calls per second, by cloud",
         ", ".join(f"{c} {v:.1f}" for c, v in r.launch_rates.items()) or "-"),
        ("reconciles / request", f"{r.reconciles / max(r.sent, 1):.2f}"),
        ("reconcile workers busy / mean queue wait",
         f"{100 * busy:.0f} % / {1000 * r.queue_wait_mean:.0f} ms"),
        ("first create -> last gone", f"{r.seconds:.1f} s"),
        ("CPU seconds by process", ", ".join(f"{k} {v:.1f}" for k, v in _by_size(r.cpu_seconds))),
        ("instances not terminated at the clouds", str(r.live_instances)),
    ]  # fmt: skip
    sections = [
        ("machine", machine_rows(r.machine, r.load_before, r.load_after)),
        ("steady rate", rows),
    ]
    if r.errors:
        sections.append(("errors", [(str(i + 1), e) for i, e in enumerate(r.errors)]))
    return render_table(sections)


def _by_size(values: dict[str, float]) -> list[tuple[str, float]]:
    return sorted(values.items(), key=lambda kv: -kv[1])


def _s(summary: Summary | None, digits: int = 2) -> str:
    return "-" if summary is None else summary.describe("s", digits)


class Churn(Tracker):
    """The lifecycle tracker, also noting each request's UID and deleting a request once it
    reached the milestone (Ready, or launched)."""

    def __init__(self, milestone: str) -> None:
        super().__init__()
        self.milestone = milestone
        self.uids: dict[str, str] = {}  # uid part -> request name
        self.to_delete: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()

    def _see(self, obj: JSON) -> None:
        super()._see(obj)
        name = obj["metadata"]["name"]
        uid = obj["metadata"].get("uid")
        if uid:
            self.uids[naming.uid_part(uid)] = name
        if getattr(self.timelines[name], self.milestone) is not None and name not in self._queued:
            self._queued.add(name)
            self.to_delete.put_nowait(name)


def launch_calls(ledger: Sequence[JSON], uids: dict[str, str]) -> dict[str, float]:
    """Request name -> wall time of its first launch call at the simulated cloud."""
    first: dict[str, float] = {}
    for entry in ledger:
        if entry.get("operation") not in LAUNCH_OPERATIONS:
            continue
        body = entry.get("body")
        name = body.get("name") if isinstance(body, dict) else None
        parsed = naming.parse(CLUSTER, name) if isinstance(name, str) else None
        request = uids.get(parsed.uid_part) if parsed else None
        if request is not None and request not in first:
            first[request] = float(entry["time"])
    return first


def preflight_steady(options: Options, euid: int, available: int | None = None) -> None:
    if options.agents and euid != 0:
        raise SystemExit("with node agents (the default) the run needs root; or --no-agents")
    at_once = min(options.rate * options.duration, options.rate * 40)  # ~40 s each
    need = int(at_once) * MACHINE_BUDGET + 2 * 2**30 if options.agents else 2 * 2**30
    have = meminfo().get("MemAvailable", 0) if available is None else available
    if need > have and not options.ignore_memory_check:
        raise SystemExit(
            f"about {at_once:.0f} machines at once want {need / 2**30:.1f} GiB available, "
            f"MemAvailable is {have / 2**30:.1f} GiB: a lower --rate, --no-agents, or "
            "--ignore-memory-check"
        )


async def run_steady(options: Options, euid: int) -> SteadyReport:
    preflight_steady(options, euid)
    machine, load_before = Machine.current(), load_average()
    workdir = Path(tempfile.mkdtemp(prefix="gpuctl-bench-steady-"))
    total = int(options.rate * options.duration)
    k = options.providers_per_cloud or providers_needed(options.rate, len(options.clouds))
    note(f"{machine.describe()}; load {load_before}; {total} requests; logs in {workdir}")
    async with contextlib.AsyncExitStack() as stack:
        cp = await stack.enter_async_context(ControlPlane())
        kube = await stack.enter_async_context(await api_client(cp.kubeconfig))
        await prepare_cluster(kube)
        await apply_join_rbac(cp)
        api = Client(kube)
        machines = workdir / "machines" if options.agents else None
        sim = SimProcess.for_benchmark(workdir, cp, capacity=total + 10, machines=machines)
        stack.push_async_callback(sim.stop)
        await sim.start()
        bodies = [steady_provider(c, i, sim, cp) for c in options.clouds for i in range(k)]
        for cloud in options.clouds:
            await api.create(SECRETS, secret_body(cloud, sim.api_key(cloud)))
        for body in bodies:
            await api.create(GPUPROVIDERS, body)
        operator = operator_process(options, cp, workdir)
        stack.push_async_callback(operator.stop)
        await operator.start()
        await operator.wait_ready(120)
        names = [b["metadata"]["name"] for b in bodies]

        async def providers_ready() -> bool:
            states = (await operator.metrics()).by("gpuctl_provider_ready", "provider")
            return all(states.get(n) == 1.0 for n in names)

        await wait_until(providers_ready, 120, "every GPUProvider Ready", interval=0.5)
        run = SteadyRun(
            options=options,
            api=api,
            sim=sim,
            operator=operator,
            machine=machine,
            load_before=load_before,
            providers=names,
            workers=options.workers or workers_for(provider_limits(bodies)),
            pids={"operator": operator.pid, "sim": sim.pid, "kube-apiserver": cp.pids[1]},
            churn=Churn("ready" if options.agents else "launched"),
        )
        await run.watch(stack)
        return await run.measure()


@attrs.define
class SteadyRun:
    """One steady-rate run: creating on schedule, churning, then the figures."""

    options: Options
    api: Client
    sim: SimProcess
    operator: OperatorProcess
    machine: Machine
    load_before: tuple[float, float, float]
    providers: list[str]
    workers: int
    pids: dict[str, int]
    churn: Churn
    sent_wall: dict[str, float] = attrs.field(factory=dict)
    late: list[float] = attrs.field(factory=list)
    answered: list[float] = attrs.field(factory=list)
    errors: list[str] = attrs.field(factory=list)
    _t0: float = 0.0
    _next_note: float = 0.0

    @property
    def total(self) -> int:
        return int(self.options.rate * self.options.duration) if self.options.rate else 0

    async def watch(self, stack: contextlib.AsyncExitStack) -> None:
        informer = Informer(self.api, GPUNODEREQUESTS, name="bench")
        informer.add_handler(self.churn)
        task = asyncio.create_task(informer.run())
        stack.callback(task.cancel)
        stack.callback(informer.stop)
        await informer.wait_synced(60)

    async def measure(self) -> SteadyReport:
        before: Metrics = await self.operator.metrics()
        ledger_start = len(await self.sim.ledger())
        cpu_before = {k: cpu_seconds_of(p) for k, p in self.pids.items()}
        deleters = [asyncio.create_task(_deleter(self.api, self.churn)) for _ in range(16)]
        t0 = self._t0 = time.monotonic()
        send_seconds = await self.create_all(t0)
        try:
            await wait_until(self.settled, SETTLE_TIMEOUT, f"{self.total} requests through", 0.2)
        except TimeoutError as err:
            self.errors.append(str(err))
        seconds = time.monotonic() - t0
        for each in deleters:
            each.cancel()
        after = await self.operator.metrics()
        ledger = await self.sim.ledger(since=ledger_start)
        cpu = {k: cpu_seconds_of(p) - cpu_before[k] for k, p in self.pids.items()}
        report = self.report(ledger, before, after, cpu, send_seconds, seconds)
        live = [i for i in await self.sim.instances() if i["phase"] != "terminated"]
        return attrs.evolve(report, live_instances=len(live))

    async def settled(self) -> bool:
        now = time.monotonic()
        if now >= self._next_note:
            self._next_note = now + PROGRESS_EVERY
            self.progress(self._t0, self.total)
        return self.churn.count("gone") >= self.total - len(self.errors)

    async def create_all(self, t0: float) -> float:
        """Send every create at its planned moment; seconds from the first to the last."""
        rate = self.options.rate or 1.0
        note(
            f"creating {rate:g}/s for {self.options.duration:g} s, {len(self.providers)} providers"
        )
        in_flight = asyncio.Semaphore(IN_FLIGHT)
        creates = []
        next_note = t0 + PROGRESS_EVERY
        for index in range(self.total):
            planned = t0 + index / rate
            await asyncio.sleep(max(0.0, planned - time.monotonic()))
            if time.monotonic() >= next_note:
                next_note += PROGRESS_EVERY
                self.progress(t0, index)
            await in_flight.acquire()
            self.late.append(time.monotonic() - planned)
            creates.append(asyncio.create_task(self.create(index, in_flight)))
        sent_over = time.monotonic() - t0
        await asyncio.gather(*creates)
        return sent_over

    def progress(self, t0: float, sent: int) -> None:
        churn = self.churn
        note(
            f"{time.monotonic() - t0:6.1f} s: {sent} sent, {churn.count('launched')} launched, "
            f"{churn.count('ready')} Ready, {churn.count('gone')} gone; load {load_average()[0]}"
        )

    async def create(self, index: int, in_flight: asyncio.Semaphore) -> None:
        provider = self.providers[index % len(self.providers)]
        body = request_body(index, provider.split("-")[1])  # bench-<cloud>-<k>
        body["spec"]["providers"] = [provider]
        name = body["metadata"]["name"]
        timeline: Timeline = self.churn.timelines[name]
        try:
            self.sent_wall[name] = time.time()
            timeline.sent = time.monotonic()
            await create_quietly(self.api, GPUNODEREQUESTS, body)
            self.answered.append(time.monotonic() - timeline.sent)
        except Exception as err:  # counted, not fatal: the run reports it
            self.errors.append(f"create {name}: {err}")
        finally:
            in_flight.release()

    def report(  # noqa: PLR0917 - the phase's readings
        self,
        ledger: list[JSON],
        before: Metrics,
        after: Metrics,
        cpu: dict[str, float],
        send_seconds: float,
        seconds: float,
    ) -> SteadyReport:
        calls = launch_calls(ledger, self.churn.uids)
        to_call = [calls[n] - self.sent_wall[n] for n in calls if n in self.sent_wall]
        timelines = self.churn.timelines.values()
        to_launched = [t.launched - t.sent for t in timelines if t.launched and t.sent]
        to_ready = [t.ready - t.sent for t in timelines if t.ready and t.sent]
        launches = Counter(e["cloud"] for e in ledger if e.get("operation") in LAUNCH_OPERATIONS)
        span = max(send_seconds, 1e-9)
        controller, queue = {"controller": "gpunoderequest"}, {"name": "gpunoderequest"}
        waits = grown(after, before, "gpuctl_workqueue_queue_duration_seconds_sum", **queue)
        gets = grown(after, before, "gpuctl_workqueue_queue_duration_seconds_count", **queue)
        return SteadyReport(
            machine=self.machine,
            load_before=self.load_before,
            load_after=load_average(),
            options=self.options,
            providers=len(self.providers),
            workers=self.workers,
            sent=self.total,
            send_seconds=send_seconds,
            late=Summary.of(self.late),
            create_answer=Summary.of(self.answered),
            to_launch_call=Summary.of(to_call),
            to_launched=Summary.of(to_launched),
            to_ready=Summary.of(to_ready),
            reached=self.churn.count(self.churn.milestone),
            gone=self.churn.count("gone"),
            launch_rates={c: n / span for c, n in sorted(launches.items())},
            reconciles=grown(after, before, "gpuctl_reconcile_total", **controller),
            reconcile_seconds=grown(
                after, before, "gpuctl_reconcile_duration_seconds_sum", **controller
            ),
            queue_wait_mean=waits / gets if gets else 0.0,
            seconds=seconds,
            cpu_seconds=cpu,
            live_instances=0,
            errors=self.errors,
        )


async def _deleter(api: Client, churn: Churn) -> None:
    """Delete what reached the milestone; a failed delete is retried later, never fatal."""
    while True:
        name = await churn.to_delete.get()
        churn.timelines[name].delete_sent = time.monotonic()
        try:
            await retrying(lambda n=name: api.delete(GPUNODEREQUESTS, n))  # type: ignore[misc]
        except Exception as err:
            if not is_not_found(err):
                note(f"delete {name} failed ({err}); again later")
                churn.to_delete.put_nowait(name)
