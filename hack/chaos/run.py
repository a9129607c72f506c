"""The chaos suite: `make chaos`, or

    PYTHONPATH=hack .venv/bin/python -m chaos.run [--seed 1] [--requests 200] [--json FILE]

Needs root (every machine runs a real node agent) and `make controlplane`.

What runs, all on this machine and on 127.0.0.1:
- a real control plane in this process (`ControlPlane`: etcd, kube-apiserver,
  kube-controller-manager, kube-scheduler), which the schedule crashes and restarts
  (`restart_apiserver()`, `restart_etcd()`), with gpuctl's join RBAC;
- the simulated clouds as a child process (`gpuctl sim`) with fault rates on every
  call of every cloud (`/fault-rates`: 5xx, 429, timeouts; see `FAULT_MIX`), spot
  interruptions at a rate and on demand, and machines that run their join data with
  the real node agent (`execute_join_data`: kubeadm join's discovery and TLS bootstrap,
  the kubelet registering its Node), so joining is real Kubernetes;
- the operator as a child process (`gpuctl run`), SIGKILLed at the schedule's moments
  and started again 0-5 s later;
- this process: creates and deletes the requests as scheduled, watches them (gpuctl's
  informer) to know at every moment which machine each request owns, and reads the
  figures from the simulated clouds' records (`/billing`: every machine ever created,
  what it was billed) and gpuctl's cost ledger.

Figures (hack/chaos/measure.py defines them): duplicate machines, unowned
machine-seconds (and beyond one collection period), ledger vs the clouds' billing,
leftovers (live machines, Nodes, bootstrap tokens, requests still holding a
finalizer), create -> Ready percentiles. Exit status 0 when there is no duplicate, no
unowned second beyond one collection period, no request off by more than a cent and
nothing left over.

Why real agents for all machines: at most about 140 machines live at once here (a
third of the requests are deleted within 20 s), about 20 MiB PSS each
(docs/benchmarks.md: 100 agents fit a 2-core, 24 GiB machine with 4.6 GiB in use).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import attrs
from bench.cluster import OPERATOR_NAMESPACE, prepare_cluster
from bench.lifecycle import provider_body, provider_name, secret_body
from bench.processes import Child, SimProcess, gpuctl_argv

from chaos import measure, schedule
from chaos.report import render
from gpuctl.controllers.ledger import Ledger
from gpuctl.controllers.resources import GPUNODEREQUESTS, GPUPROVIDERS
from gpuctl.dev.controlplane import ControlPlane, free_port
from gpuctl.dev.manifests import apply_join_rbac
from gpuctl.runtime.client import ApiError, Client, TransportError, is_not_found
from gpuctl.runtime.informer import Informer
from gpuctl.runtime.kubeclient import api_client
from gpuctl.runtime.resources import NODES, SECRETS

JSON = dict[str, Any]
T = TypeVar("T")
CLUSTER = "chaos"
BOOT_SECONDS = 5.0
TERMINATE_SECONDS = 2.0
SPOT_INTERRUPTIONS_PER_HOUR = 6.0  # per spot machine: about one in ten preempted
CAPACITY = 60  # of every (region, type): capacity is not what this suite tests


def fault_mix(options: schedule.Options) -> dict[str, float]:
    """The share of every cloud call that fails, per kind. 5xx: half before the cloud
    acts (500, 502, 503, 504, a reset), half after it acted and the answer was lost
    (500-after, 502-after, 504-after, a dropped connection); timeouts likewise."""
    five = options.fault_5xx
    timeout = options.fault_timeout
    return {
        "500": five * 0.15,
        "502": five * 0.1,
        "503": five * 0.15,
        "504": five * 0.05,
        "reset": five * 0.05,
        "500-after": five * 0.2,
        "502-after": five * 0.1,
        "504-after": five * 0.1,
        "drop": five * 0.1,
        "429": options.fault_429,
        "timeout-before": timeout / 2,
        "timeout": timeout / 2,
    }


# -- the run's state ------------------------------------------------------------------------


@attrs.define
class Tracker:
    """Every request's observations over time (a ResourceEventHandler)."""

    histories: dict[str, list[measure.Observation]] = attrs.field(factory=lambda: defaultdict(list))

    def observe(self, obj: JSON, exists: bool) -> None:
        status = obj.get("status") or {}
        self.histories[obj["metadata"]["uid"]].append(
            measure.Observation(
                at=time.time(),
                exists=exists,
                attempt=int(status.get("attempt") or 0),
                provider=(status.get("offer") or {}).get("provider"),
                instance_id=(status.get("instance") or {}).get("id"),
                phase=status.get("phase"),
            )
        )

    def on_add(self, obj: JSON) -> None:
        self.observe(obj, True)

    def on_update(self, old: JSON, new: JSON) -> None:
        self.observe(new, True)

    def on_delete(self, obj: JSON) -> None:
        self.observe(obj, False)


@attrs.define
class Operator:
    """`gpuctl run` as a child process that the schedule kills and restarts."""

    argv: list[str]
    log: Path
    port: int
    child: Child | None = None
    kills: int = 0
    ready: asyncio.Event = attrs.field(factory=asyncio.Event)
    ready_at: float = 0.0
    startups: list[float] = attrs.field(factory=list)  # start -> /readyz, seconds
    _watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.ready.clear()
        self.child = Child("operator", self.argv, self.log)
        await self.child.start()
        self._watch = asyncio.create_task(self._until_ready(self.child, time.monotonic()))

    async def _until_ready(self, child: Child, started: float) -> None:
        url = f"http://127.0.0.1:{self.port}/readyz"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while child.running:
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                    async with http.get(url) as response:
                        if response.status == 200:
                            self.ready_at = time.monotonic()
                            self.startups.append(self.ready_at - started)
                            self.ready.set()
                            return
                await asyncio.sleep(0.2)

    async def kill(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        if self.child is not None and self.child.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.child.process.kill()
            await self.child.process.wait()
            await self.child.stop()  # closes its log
            self.kills += 1

    async def stop(self) -> int | None:
        if self._watch is not None:
            self._watch.cancel()
        return None if self.child is None else await self.child.stop()


@attrs.define
class Run:
    options: schedule.Options
    plan: schedule.Schedule
    workdir: Path
    cp: ControlPlane
    api: Client
    sim: SimProcess
    operator: Operator
    providers: dict[str, str]  # cloud -> GPUProvider name
    tracker: Tracker = attrs.field(factory=Tracker)
    created: dict[str, float] = attrs.field(factory=dict)  # uid -> create sent
    uids: dict[str, str] = attrs.field(factory=dict)  # request name -> uid
    deleted: dict[str, float] = attrs.field(factory=dict)  # uid -> delete sent
    events: list[str] = attrs.field(factory=list)
    t0: float = 0.0
    load_before: tuple[float, ...] = attrs.field(factory=os.getloadavg)

    def log(self, message: str) -> None:
        line = f"[{time.time() - self.t0:7.1f} s] {message}"
        self.events.append(line)
        print(line, file=sys.stderr, flush=True)


# -- calls that outlive an API server restart ----------------------------------------------


async def patiently(call: Callable[[], Awaitable[T]], seconds: float = 60.0) -> T:
    """`call()`, retried through transport errors, 429 and 5xx for up to `seconds`
    (the schedule restarts kube-apiserver and etcd under it)."""
    deadline = time.monotonic() + seconds
    delay = 0.2
    while True:
        try:
            return await call()
        except (TransportError, ApiError, aiohttp.ClientError, OSError) as err:
            status = getattr(err, "status", 0) or 0
            transient = not isinstance(err, ApiError) or status == 429 or status >= 500
            if not transient or time.monotonic() > deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(2.0, delay * 2)


# -- setting up -----------------------------------------------------------------------------


def sim_config(options: schedule.Options, cp: ControlPlane, machines: Path) -> JSON:
    return {
        "seed": options.seed,
        "boot_seconds": BOOT_SECONDS,
        "terminate_seconds": TERMINATE_SECONDS,
        "interrupt_rate": SPOT_INTERRUPTIONS_PER_HOUR,
        "hang_seconds": options.timeout_seconds,
        "kubeconfig": str(cp.kubeconfig),
        "ca_file": str(cp.ca_file),
        "execute_join_data": True,
        "workdir": str(machines),
        **{c: {"default_capacity": CAPACITY, "capacity": {}} for c in schedule.CLOUDS},
    }


def operator_argv(options: schedule.Options, cp: ControlPlane, port: int) -> list[str]:
    return gpuctl_argv(
        "run",
        f"--kubeconfig={cp.kubeconfig}",
        f"--cluster-name={CLUSTER}",
        f"--namespace={OPERATOR_NAMESPACE}",
        "--health-host=127.0.0.1",
        f"--health-port={port}",
        f"--gc-interval={options.gc_interval:g}",
        f"--gc-grace={options.gc_grace:g}",
        "--log-level=info",
    )


async def create_providers(api: Client, sim: SimProcess, cp: ControlPlane) -> dict[str, str]:
    """One GPUProvider per cloud, as the lifecycle benchmark makes them (the simulator does
    not enforce Lambda's documented 1 request/s; RunPod announces 60/min in its
    RateLimit-Policy and the driver obeys it), with a registration timeout that a join
    on a loaded 2-core machine meets."""
    for cloud in schedule.CLOUDS:
        await api.create(
            SECRETS, secret_body(cloud, sim.api_key(cloud)), namespace=OPERATOR_NAMESPACE
        )
        body = provider_body(cloud, sim, cp)
        body["spec"]["registrationTimeout"] = "5m"
        await api.create(GPUPROVIDERS, body)
    return {cloud: provider_name(cloud) for cloud in schedule.CLOUDS}


async def control(sim: SimProcess, method: str, path: str, body: JSON | None = None) -> Any:
    url = sim.info["control_url"] + path
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http,
        http.request(method, url, json=body) as response,
    ):
        response.raise_for_status()
        return await response.json()


async def set_faults(run: Run) -> None:
    for cloud in schedule.CLOUDS:
        await control(
            run.sim,
            "POST",
            "/fault-rates",
            {
                "cloud": cloud,
                "rates": fault_mix(run.options),
                "seconds": run.options.timeout_seconds,
                "retry_after": 2,
                "seed": run.options.seed,
            },
        )


# -- the schedule's events ------------------------------------------------------------------


async def at(run: Run, moment: float) -> None:
    await asyncio.sleep(max(0.0, run.t0 + moment - time.time()))


async def create_request(run: Run, plan: schedule.RequestPlan) -> None:
    await at(run, plan.create_at)
    body = {
        "apiVersion": "gpuctl.io/v1alpha1",
        "kind": "GPUNodeRequest",
        "metadata": {"name": plan.name},
        "spec": {
            "gpu": {"type": plan.gpu, "count": 1},
            "capacityType": plan.capacity_type,
            "providers": [run.providers[c] for c in plan.clouds],
        },
    }
    sent = time.time()
    try:
        created = await patiently(lambda: run.api.create(GPUNODEREQUESTS, body))
    except ApiError as err:
        if "AlreadyExists" not in str(err):  # a create retried after a lost answer
            raise
        created = await patiently(lambda: run.api.get(GPUNODEREQUESTS, plan.name))
    uid = str(created["metadata"]["uid"])
    run.uids[plan.name], run.created[uid] = uid, sent
    await at(run, plan.delete_at)
    run.deleted[uid] = time.time()
    try:
        await patiently(lambda: run.api.delete(GPUNODEREQUESTS, plan.name))
    except ApiError as err:
        if not is_not_found(err):
            raise


async def kill_operator(run: Run, kills: Sequence[schedule.Kill]) -> None:
    """The kills, one after the other: each at its moment, but no sooner than `min_up`
    after the operator got ready."""
    for kill in kills:
        await at(run, kill.at)
        await asyncio.wait_for(run.operator.ready.wait(), 300)
        await asyncio.sleep(max(0.0, run.operator.ready_at + kill.min_up - time.monotonic()))
        await run.operator.kill()
        run.log(f"SIGKILL gpuctl run ({run.operator.kills}); restart in {kill.down:.1f} s")
        await asyncio.sleep(kill.down)
        await run.operator.start()


async def restart(run: Run, restarts: Sequence[tuple[float, str]]) -> None:
    """kube-apiserver and etcd restarts, one after the other (a restart waits until what
    it restarted is ready; two at once would each see the other's stop as a failure)."""
    for moment, what in sorted(restarts):
        await at(run, moment)
        started = time.monotonic()
        if what == "etcd":
            await run.cp.restart_etcd()
        else:
            await run.cp.restart_apiserver()
        run.log(f"{what} restarted ({time.monotonic() - started:.1f} s)")


async def interrupt(run: Run, moment: float, rng: random.Random) -> None:
    await at(run, moment)
    instances = await control(run.sim, "GET", "/instances?cloud=runpod")
    spot = [i for i in instances if i["spot"] and i["phase"] in ("booting", "running")]
    if not spot:
        run.log("spot interruption: no spot machine running")
        return
    victim = rng.choice(sorted(spot, key=lambda i: str(i["id"])))
    with contextlib.suppress(aiohttp.ClientResponseError):  # gone in the meantime
        await control(
            run.sim, "POST", "/interrupt", {"cloud": "runpod", "instance_id": victim["id"]}
        )
        run.log(f"spot interruption: {victim['name']}")


async def outage(run: Run, moment: float, cloud: str, seconds: float) -> None:
    await at(run, moment)
    await control(run.sim, "POST", "/outage", {"cloud": cloud, "seconds": seconds})
    run.log(f"{cloud} API down (connections refused) for {seconds:.1f} s")


# -- the end: teardown, leftovers, figures ---------------------------------------------------


async def wait_all_gone(run: Run) -> bool:
    deadline = time.monotonic() + run.options.teardown_timeout
    while time.monotonic() < deadline:
        listed = await patiently(lambda: run.api.list(GPUNODEREQUESTS))
        left = len(listed["items"])
        if left == 0:
            return True
        run.log(f"teardown: {left} requests left")
        await asyncio.sleep(10.0)
    return False


@attrs.frozen
class Leftovers:
    machines: int
    nodes: int
    tokens: int
    requests: int  # still there, holding gpuctl's finalizer

    @property
    def total(self) -> int:
        return self.machines + self.nodes + self.tokens + self.requests


async def leftovers(run: Run, billing: Sequence[JSON]) -> Leftovers:
    live = [b for b in billing if b["terminated_at"] is None]
    nodes = await patiently(lambda: run.api.list(NODES))
    tokens = await patiently(
        lambda: run.api.list(SECRETS, namespace="kube-system", label_selector="gpuctl.io/request")
    )
    requests = await patiently(lambda: run.api.list(GPUNODEREQUESTS))
    return Leftovers(len(live), len(nodes["items"]), len(tokens["items"]), len(requests["items"]))


@attrs.frozen
class Result:
    schedule: schedule.Schedule
    figures: measure.Figures
    leftovers: Leftovers
    torn_down: bool
    kills: int
    fault_stats: list[JSON]
    calls: int
    violations: int
    seconds: float
    operator_startups: tuple[float, ...]  # start -> /readyz, seconds
    load: tuple[tuple[float, ...], tuple[float, ...]]  # load average before, after

    @property
    def ok(self) -> bool:
        f = self.figures
        return (
            self.torn_down
            and f.duplicates == 0
            and f.unowned_beyond_seconds == 0
            and not f.unrecorded_requests
            and not f.requests_off_by_more_than_a_cent
            and self.leftovers.total == 0
        )


async def measure_run(run: Run, torn_down: bool) -> Result:
    billing = await control(run.sim, "GET", "/billing")
    machines = [measure.Machine.from_billing(b, TERMINATE_SECONDS) for b in billing]
    entries = await patiently(lambda: Ledger(run.api, OPERATOR_NAMESPACE).read())
    ledger = {e.uid: Decimal(e.accrued_usd) for e in entries}
    figures = measure.figures(
        machines,
        run.tracker.histories,
        run.created,
        ledger,
        run.providers,
        CLUSTER,
        run.options.gc_interval + run.options.gc_grace,
        time.time(),
    )
    left = await leftovers(run, billing)
    stats = await control(run.sim, "GET", "/fault-stats")
    calls_made = await control(run.sim, "GET", "/ledger")
    calls = len(calls_made)
    _dump(run, billing, entries, calls_made)
    violations = await control(run.sim, "GET", "/violations")
    return Result(
        schedule=run.plan,
        figures=figures,
        leftovers=left,
        torn_down=torn_down,
        kills=run.operator.kills,
        fault_stats=stats,
        calls=calls,
        violations=len(violations),
        seconds=time.time() - run.t0,
        operator_startups=tuple(run.operator.startups),
        load=(run.load_before, os.getloadavg()),
    )


def _dump(run: Run, billing: Sequence[JSON], entries: Sequence[Any], calls: Sequence[JSON]) -> None:
    """Per request, everything behind the figures (workdir/requests.json): its ledger
    entry, the machines the clouds billed for it, its observed states, and the cloud
    calls that named its machines; and every cloud call (workdir/calls.json)."""
    by_uid = {e.uid: e.to_json() for e in entries}
    requests = []
    for name, uid in sorted(run.uids.items()):
        part = f"{CLUSTER}-{uid.replace('-', '')[:12]}-"
        mine = [b for b in billing if part in str(b["name"])]
        ids = {str(b["id"]) for b in mine}
        seen = [attrs.asdict(o) for o in run.tracker.histories.get(uid, ())]
        requests.append(
            {
                "name": name,
                "uid": uid,
                "created": run.created.get(uid),
                "deleted": run.deleted.get(uid),
                "ledger": by_uid.get(uid),
                "machines": mine,
                "observed": [o for i, o in enumerate(seen) if i == 0 or _moved(seen[i - 1], o)],
                "calls": [
                    {k: c.get(k) for k in ("cloud", "method", "path", "status", "fault", "time")}
                    for c in calls
                    if part in json.dumps(c.get("body")) or any(i in str(c["path"]) for i in ids)
                ],
            }
        )
    (run.workdir / "requests.json").write_text(json.dumps(requests, default=str, indent=1))
    # Every cloud call, also those naming no machine (lists, catalogs): what spent a
    # rate-limited cloud's budget, minute by minute.
    every = [
        {k: c.get(k) for k in ("cloud", "method", "path", "status", "fault", "time")} for c in calls
    ]
    (run.workdir / "calls.json").write_text(json.dumps(every, default=str))


def _moved(before: JSON, after: JSON) -> bool:
    return {k: v for k, v in before.items() if k != "at"} != {
        k: v for k, v in after.items() if k != "at"
    }


# -- the whole run --------------------------------------------------------------------------


async def run_chaos(options: schedule.Options, workdir: Path) -> Result:
    plan = schedule.build(options)
    async with contextlib.AsyncExitStack() as stack:
        cp = ControlPlane(workdir=workdir / "cp")
        await cp.start()
        stack.push_async_callback(cp.stop)
        kube = await stack.enter_async_context(await api_client(cp.kubeconfig))
        api = Client(kube)
        await prepare_cluster(kube)
        await apply_join_rbac(cp)
        sim = SimProcess(workdir, sim_config(options, cp, workdir / "machines"))
        await sim.start()
        stack.push_async_callback(sim.stop)
        providers = await create_providers(api, sim, cp)
        port = free_port()
        operator = Operator(operator_argv(options, cp, port), workdir / "operator.log", port)
        await operator.start()
        stack.push_async_callback(operator.stop)
        run = Run(options, plan, workdir, cp, api, sim, operator, providers)
        informer = Informer(api, GPUNODEREQUESTS, name="chaos")
        informer.add_handler(run.tracker)
        task = asyncio.create_task(informer.run())
        stack.callback(task.cancel)
        stack.callback(informer.stop)
        await informer.wait_synced(60)
        for line in schedule.describe(plan):
            print(line, file=sys.stderr)
        await set_faults(run)
        run.t0 = time.time()
        rng = random.Random(f"{options.seed}/interrupts")
        jobs = [create_request(run, p) for p in plan.requests]
        jobs.append(kill_operator(run, plan.kills))
        restarts = [(t, "kube-apiserver") for t in plan.apiserver_restarts]
        jobs.append(restart(run, restarts + [(t, "etcd") for t in plan.etcd_restarts]))
        jobs += [interrupt(run, t, rng) for t in plan.interrupts]
        jobs += [outage(run, t, cloud, seconds) for t, cloud, seconds in plan.outages]
        progress = asyncio.create_task(_progress(run))
        stack.callback(progress.cancel)
        await _sequenced(run, jobs)
        torn_down = await wait_all_gone(run)
        # One more collection period with the faults on, so the leak collector can take
        # what no request owns; then the clouds heal and one more period passes.
        await asyncio.sleep(options.gc_interval + options.gc_grace)
        await control(sim, "DELETE", "/faults")
        await asyncio.sleep(options.gc_interval * 2)
        result = await measure_run(run, torn_down)
        (workdir / "events.log").write_text("\n".join(run.events) + "\n")
        return result
    raise AssertionError("unreachable")


async def _sequenced(run: Run, jobs: Sequence[Awaitable[None]]) -> None:
    """Run every scheduled job; the first failure cancels the rest and propagates."""
    tasks = [asyncio.ensure_future(job) for job in jobs]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()


async def _progress(run: Run) -> None:
    while True:
        await asyncio.sleep(20.0)
        ready = sum(1 for h in run.tracker.histories.values() if h and h[-1].phase == "Ready")
        live = sum(1 for h in run.tracker.histories.values() if h and h[-1].exists)
        run.log(f"progress: {len(run.created)} created, {live} exist, {ready} Ready")


# -- command line ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> tuple[schedule.Options, Path | None, bool]:
    parser = argparse.ArgumentParser(prog="python -m chaos.run", description=__doc__.split("\n")[0])
    defaults = schedule.Options()
    add = parser.add_argument
    add("--seed", type=int, default=defaults.seed)
    add("--requests", type=int, default=defaults.requests)
    add("--window", type=float, default=defaults.window, help="seconds of request creation")
    add("--kills", type=int, default=defaults.kills)
    add("--apiserver-restarts", type=int, default=defaults.apiserver_restarts)
    add("--etcd-restarts", type=int, default=defaults.etcd_restarts)
    add("--interrupts", type=int, default=defaults.interrupts)
    add("--outages", type=int, default=defaults.outages)
    add("--timeout-seconds", type=float, default=defaults.timeout_seconds)
    add("--json", type=Path, default=None, help="also write the figures here")
    add("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args(argv)
    options = schedule.Options(
        seed=args.seed,
        requests=args.requests,
        window=args.window,
        kills=args.kills,
        apiserver_restarts=args.apiserver_restarts,
        etcd_restarts=args.etcd_restarts,
        interrupts=args.interrupts,
        outages=args.outages,
        timeout_seconds=args.timeout_seconds,
    )
    return options, args.json, args.keep


def main(argv: Sequence[str] | None = None) -> int:
    options, json_path, keep = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix=f"gpuctl-chaos-{options.seed}-"))
    print(f"chaos: seed {options.seed}, work directory {workdir}", file=sys.stderr)
    result = asyncio.run(run_chaos(options, workdir))
    text = render(result)
    print(text)
    if json_path is not None:
        json_path.write_text(json.dumps(attrs.asdict(result), default=str, indent=1))
    if not keep and result.ok:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
