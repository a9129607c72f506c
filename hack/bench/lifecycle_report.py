"""The lifecycle benchmark's report: what was run, the figures, and their table.

`LifecycleReport` is what `bench.lifecycle` measures (see its docstring for how);
`render()` prints it as a Markdown table and `bench.figures.to_json` as JSON. Figures
"per request" are totals of the phase divided by the number of requests.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import attrs

from bench.figures import Row, Section, Summary, fmt_bytes, per, render_table
from bench.host import Machine, machine_rows
from bench.joins import JoinLatencies
from bench.machines import MachineMemory

# The most the GPUProvider CRD allows (its schema maxima); the benchmark uses them.
REQUESTS_PER_SECOND = 1000
LAUNCHES_PER_MINUTE = 600
# RunPod is left out by default: its API announces 60 requests a minute and the driver
# obeys (RateLimit-Policy), whatever the GPUProvider allows, so with it the run measures
# that quota (docs/benchmarks.md). `--clouds lambda,runpod,paperspace` includes it.
DEFAULT_CLOUDS = ("lambda", "paperspace")
# The pacing floor (see `pacing_floor`): the fewest cloud calls a request needs on the way
# up (look-up by name, create, one poll that sees it running; Paperspace also lists and
# creates the startup script) and down (terminate, one poll that sees it gone), and the
# calls per second and burst each simulated account takes: the GPUProviders' limit, but
# RunPod's API announces 60 a minute (RateLimit-Policy), which the driver follows.
MIN_CALLS_UP = {"lambda": 3, "runpod": 3, "paperspace": 5}
MIN_CALLS_DOWN = {"lambda": 2, "runpod": 2, "paperspace": 2}
ACCOUNT_CALLS = {"runpod": (1.0, 60)}  # cloud -> (calls/s, burst); others: the provider's
# Every request's machine runs a real node agent (about 20 MiB PSS and 0.4 % of a core
# idle each, docs/benchmarks.md): 100 fit this 2-core, 24 GiB machine, 1,000 do not.
DEFAULT_REQUESTS = 100
# The memory check before a run: this much per machine, plus the rest (control plane,
# operator, simulator, this process), must be available (--ignore-memory-check skips it).
MACHINE_BUDGET = 25 * 2**20
BASE_BUDGET = 2 * 2**30


@attrs.frozen
class Floor:
    """The least time the clouds' pacing allows for N requests (joins not counted)."""

    up: float  # seconds: every launch (and the calls around it) within the limits
    down: float  # seconds: every terminate and its confirmation within the limits
    by_cloud: dict[str, tuple[int, float, float]]  # cloud -> (requests, up, down)


def pacing_floor(requests: int, clouds: tuple[str, ...]) -> Floor:
    """Per cloud: its launches at the launch limit, and its fewest calls at its call limit
    (after the burst); the slowest cloud sets the floor."""
    launch_rate = LAUNCHES_PER_MINUTE / 60
    by_cloud: dict[str, tuple[int, float, float]] = {}
    for index, cloud in enumerate(clouds):
        n = len(range(index, requests, len(clouds)))  # round-robin share
        rate, burst = ACCOUNT_CALLS.get(cloud, (float(REQUESTS_PER_SECOND), REQUESTS_PER_SECOND))
        launches = max(0, n - 1) / launch_rate  # the launch bucket's burst is 1
        calls_up = max(0.0, n * MIN_CALLS_UP[cloud] - burst) / rate
        calls_down = max(0.0, n * MIN_CALLS_DOWN[cloud] - burst) / rate
        by_cloud[cloud] = (n, max(launches, calls_up), calls_down)
    up = max((v[1] for v in by_cloud.values()), default=0.0)
    down = max((v[2] for v in by_cloud.values()), default=0.0)
    return Floor(up=up, down=down, by_cloud=by_cloud)


@attrs.frozen
class Options:
    requests: int = DEFAULT_REQUESTS
    concurrency: int = 32
    workers: int = 0  # 0: gpuctl's default, sized from the providers' limits
    clouds: tuple[str, ...] = DEFAULT_CLOUDS
    timeout: float = 900.0
    ready_poll: float | None = None
    joining_poll: float | None = None
    termination_poll: float | None = None
    status_coalesce: float | None = None  # operator --status-coalesce (None: gpuctl's)
    log_level: str = "info"
    json_path: Path | None = None
    hold: float = 30.0  # seconds idle after all Ready, to measure idle agents
    ignore_memory_check: bool = False
    rate: float | None = None  # steady-rate mode (bench.lifecycle_steady): requests/s
    duration: float = 60.0  # ... for this many seconds
    agents: bool = True  # machines run real node agents (False: none joins)
    providers_per_cloud: int | None = None  # None: enough for 1.2 x the rate
    faults: bool = False  # every cloud call fails at the chaos suite's rates (issue 12)


@attrs.frozen
class Work:
    """What one phase (the way up or down) cost, summed over all requests."""

    seconds: float
    status_writes: float
    kube_calls: float
    kube_calls_by: dict[str, float]  # "verb resource" -> calls
    provider_calls: float  # the operator's count (gpuctl_provider_api_calls_total)
    provider_seconds_by: dict[str, float]  # "cloud operation" -> summed call seconds
    ledger_calls: int  # the simulator's count of exchanges it answered
    ledger_by: dict[str, int]  # "cloud operation" -> calls
    reconciles: float
    reconcile_errors: float
    reconcile_seconds: float  # summed time inside reconcile()
    queue_wait_mean: float  # mean add-to-get time of the request work queue
    cpu_seconds: dict[str, float]  # process -> CPU seconds used in the phase
    # "phase: changed fields" -> status writes the watch saw (bench.statusdiff)
    status_changes: dict[str, float] = attrs.field(factory=dict)


@attrs.frozen
class Pacing:
    cloud: str
    launches: int
    seconds: float  # first launch call -> last launch call, at the simulator
    rate: float  # launches per second over that span
    limit: float  # launches per second the GPUProvider allows
    interval: Summary | None  # gaps between consecutive launch calls


@attrs.frozen
class Latencies:
    watch_create_to_launch: Summary | None
    watch_create_to_ready: Summary | None
    watch_launch_to_ready: Summary | None
    status_create_to_launch: Summary | None
    status_create_to_ready: Summary | None


@attrs.frozen
class Agents:
    """The machines: real node agents joining through kubeadm's path (bench.machines)."""

    machines: int  # machines that booted (had a process)
    nodes_registered: int
    nodes_ever_ready: int
    nodes_ready_at_all_ready: int  # Ready when the last request was seen Ready
    nodes_most_ready: int  # most Nodes Ready at once
    joins: JoinLatencies
    memory_ready: MachineMemory  # at all Ready
    memory_peak: MachineMemory | None  # the highest-PSS sample (every few seconds)
    memory_idle: MachineMemory | None  # at the end of the idle hold
    hold_seconds: float  # idle hold after all Ready (0: none)
    idle_cpu_seconds: float  # CPU of every machine process over the hold
    host_used_before: int  # MemTotal - MemAvailable before the control plane started
    host_used_ready: int  # ... at all Ready
    host_used_peak: int  # ... highest sample (every 0.5 s) over the run
    left_after_teardown: int  # machine processes left once every request was gone ...
    gone_after: float | None  # ... and seconds after that until none was left
    left_after_sim_stop: int | None = None  # after the simulator stopped (None: not checked)

    @property
    def clean(self) -> bool:
        return self.gone_after is not None and not self.left_after_sim_stop


@attrs.frozen
class LifecycleReport:
    machine: Machine
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    options: Options
    operator_startup: float  # operator start -> /readyz
    created_in: float  # first create sent -> last create answered
    ready: int
    ready_in: float | None  # first create sent -> last Ready; None if not all got there
    latencies: Latencies
    up: Work
    pacing: list[Pacing]
    gone: int
    teardown_in: float | None
    down: Work
    live_instances: int  # not terminated at the clouds after teardown
    nodes_left: int
    tokens_left: int
    violations: int
    ledger_bytes: int  # the cost-ledger ConfigMaps' data after teardown
    operator_peak_rss: int
    operator_rss_ready: int
    operator_rss_end: int
    workdir: str
    agents: Agents | None = None
    errors: list[str] = attrs.field(factory=list)
    workers: int = 0  # the operator's request workers (its --workers, or the sized default)
    launched: int = 0  # requests the watch saw with status.instance set
    # Without agents (--no-agents) the way up ends at launched: first create sent -> last
    # request seen launched; None with agents, or if not every request got there.
    launched_in: float | None = None

    @property
    def ok(self) -> bool:
        if self.options.agents:
            all_ready = self.ready == self.options.requests and self.ready_in is not None
        else:
            all_ready = self.launched == self.options.requests and self.launched_in is not None
        clean = not (self.live_instances or self.nodes_left or self.tokens_left)
        machines_gone = self.agents is None or self.agents.clean
        done = self.teardown_in is not None and machines_gone
        return all_ready and done and clean and not self.errors


def render(report: LifecycleReport) -> str:
    sections: list[Section] = [
        ("machine", machine_rows(report.machine, report.load_before, report.load_after)),
        ("run", _run_rows(report)),
        ("way up", _up_rows(report) + _work_rows(report.up, report.options, report.workers)),
        *([("machines: real node agents (kubeadm join, kubelet)",
            _agent_rows(report.agents, report))] if report.agents else []),
        (f"launch pacing (limit {LAUNCHES_PER_MINUTE // 60} launches/s per provider)",
         [_pacing_row(p) for p in report.pacing]),
        ("way down", _down_rows(report) + _work_rows(report.down, report.options, report.workers)),
        ("money safety", [
            ("instances not terminated at the clouds", str(report.live_instances)),
            ("gpuctl Nodes left", str(report.nodes_left)),
            ("bootstrap-token Secrets left", str(report.tokens_left)),
            ("provider spec violations", str(report.violations)),
            ("cost-ledger ConfigMaps (data)", fmt_bytes(report.ledger_bytes)),
        ]),
        ("operator process", [
            ("peak RSS (VmHWM)", fmt_bytes(report.operator_peak_rss)),
            ("RSS at all Ready", fmt_bytes(report.operator_rss_ready)),
            ("RSS at the end", fmt_bytes(report.operator_rss_end)),
        ]),
    ]  # fmt: skip
    if report.errors:
        sections.append(("errors", [(str(i + 1), e) for i, e in enumerate(report.errors)]))
    return render_table(sections)


def _run_rows(report: LifecycleReport) -> list[Row]:
    o = report.options
    polls = (
        ("ready", o.ready_poll),
        ("joining", o.joining_poll),
        ("termination", o.termination_poll),
        ("status coalesce", o.status_coalesce),
    )
    return [
        ("requests / clouds", f"{o.requests} / {', '.join(o.clouds)}"),
        (
            "operator workers",
            str(o.workers) if o.workers else "gpuctl's default (sized from the limits)",
        ),
        (
            "operator polls, status coalesce (s)",
            ", ".join(f"{k} {'default' if v is None else v}" for k, v in polls),
        ),
        ("create and delete calls in flight", str(o.concurrency)),
        ("cloud faults", _faults_text() if o.faults else "none"),
        ("provider limits", f"{REQUESTS_PER_SECOND} req/s, {LAUNCHES_PER_MINUTE} launches/min"),
        ("operator start -> /readyz", f"{report.operator_startup:.2f} s"),
    ]


def _faults_text() -> str:
    from bench.faults import fault_rates  # noqa: PLC0415 - only for runs with faults

    shares = ", ".join(f"{k} {100 * v:.1f} %" for k, v in fault_rates()[0].items())
    return f"every call of every cloud, seeded: {shares}"


def _up_rows(report: LifecycleReport) -> list[Row]:
    n, lat = report.options.requests, report.latencies
    rate = n / report.created_in if report.created_in > 0 else 0.0
    floor = pacing_floor(n, report.options.clouds)
    if not report.options.agents:
        return [
            ("all created in", f"{report.created_in:.1f} s ({rate:.0f}/s)"),
            ("machines", "none join (--no-agents): the way up ends at launched"),
            ("launched", f"{report.launched} / {n}"),
            ("pacing floor of the way up", _floor_text(floor, up=True)),
            ("time to all launched", _seconds(report.launched_in)),
            ("time to all launched / pacing floor (goal <= 1.15)",
             _ratio(report.launched_in, floor.up)),
            ("create -> launched p50 / time to all launched (watch; goal <= 0.55)",
             _share(lat.watch_create_to_launch, report.launched_in)),
            ("create -> launched, watch (p50 / p90 / p99 / max)",
             _summary(lat.watch_create_to_launch)),
            ("create -> launchedAt, status (1 s resolution)",
             _summary(lat.status_create_to_launch, 0)),
        ]  # fmt: skip
    return [
        ("all created in", f"{report.created_in:.1f} s ({rate:.0f}/s)"),
        ("Ready", f"{report.ready} / {n}"),
        ("pacing floor of the way up (joins not counted)", _floor_text(floor, up=True)),
        ("time to all Ready", _seconds(report.ready_in)),
        ("time to all Ready / pacing floor", _ratio(report.ready_in, floor.up)),
        (
            "create -> Ready p50 / time to all Ready (watch; goal <= 0.55)",
            _share(lat.watch_create_to_ready, report.ready_in),
        ),
        ("create -> launched, watch (p50 / p90 / p99 / max)", _summary(lat.watch_create_to_launch)),
        ("create -> Ready, watch", _summary(lat.watch_create_to_ready)),
        ("launched -> Ready, watch", _summary(lat.watch_launch_to_ready)),
        ("create -> launchedAt, status (1 s resolution)", _summary(lat.status_create_to_launch, 0)),
        ("create -> readyAt, status (1 s resolution)", _summary(lat.status_create_to_ready, 0)),
    ]


def _agent_rows(a: Agents, report: LifecycleReport) -> list[Row]:
    n, j, total = report.options.requests, a.joins, report.machine.memory_bytes
    ready = a.memory_ready
    rows: list[Row] = [
        ("machines booted / Nodes registered", f"{a.machines} / {a.nodes_registered}"),
        ("Nodes Ready: at all Ready / ever / most at once",
         f"{a.nodes_ready_at_all_ready} / {a.nodes_ever_ready} / {a.nodes_most_ready} (of {n})"),
        ("RUNNING -> agent start (kubeadm join)", _summary(j.running_to_agent)),
        ("agent start -> Node registered", _summary(j.agent_to_registered)),
        ("agent start -> Node Ready", _summary(j.agent_to_ready)),
        ("RUNNING -> Node Ready", _summary(j.running_to_ready)),
        ("Node Ready -> its GPUs allocatable (device plugin)", _summary(j.ready_to_usable)),
        ("GPUs allocatable -> request Ready (operator)", _summary(j.usable_to_request_ready)),
        ("machine processes at all Ready (node agents)",
         f"{ready.processes} ({ready.agents}) in {ready.machines} machines"),
        ("PSS / RSS of machine processes at all Ready", _pss_rss(ready.pss, ready.rss, ready)),
        ("  of which node agents", _pss_rss(ready.agent_pss, ready.agent_rss, ready)),
    ]  # fmt: skip
    if a.memory_peak is not None:
        peak = a.memory_peak
        rows.append(("peak PSS / RSS of machine processes (sampled)",
                     _pss_rss(peak.pss, peak.rss, peak)))  # fmt: skip
    if a.hold_seconds and a.memory_idle is not None:
        idle, machines = a.memory_idle, max(1, a.memory_idle.machines)
        share = 100 * a.idle_cpu_seconds / a.hold_seconds
        rows += [
            (f"idle {a.hold_seconds:.0f} s after all Ready: CPU of machine processes",
             f"{share:.1f} % of a core ({share / machines:.2f} % per machine)"),
            ("  PSS / RSS then", _pss_rss(idle.pss, idle.rss, idle)),
        ]  # fmt: skip
    rows += [
        ("host memory in use (MemTotal - MemAvailable): before / at all Ready / peak",
         f"{fmt_bytes(a.host_used_before)} / {fmt_bytes(a.host_used_ready)} / "
         f"{fmt_bytes(a.host_used_peak)} ({100 * a.host_used_peak / total if total else 0:.0f} %"
         f" of {fmt_bytes(total)})"),
        ("machine processes left after teardown",
         f"{a.left_after_teardown} when the last request was gone; "
         + ("none left after " + f"{a.gone_after:.1f} s" if a.gone_after is not None
            else "some still there at the end")),
        ("machine processes left after the simulator stopped",
         "not checked" if a.left_after_sim_stop is None else str(a.left_after_sim_stop)),
    ]  # fmt: skip
    return rows


def _pss_rss(pss: int, rss: int, memory: MachineMemory) -> str:
    machines = max(1, memory.machines)
    return (
        f"{fmt_bytes(pss)} / {fmt_bytes(rss)} "
        f"({fmt_bytes(pss / machines)} / {fmt_bytes(rss / machines)} per machine)"
    )


def _down_rows(report: LifecycleReport) -> list[Row]:
    floor = pacing_floor(report.options.requests, report.options.clouds)
    return [
        ("gone", f"{report.gone} / {report.options.requests}"),
        ("pacing floor of teardown", _floor_text(floor, up=False)),
        ("teardown (first delete -> last gone)", _seconds(report.teardown_in)),
        ("teardown / pacing floor", _ratio(report.teardown_in, floor.down)),
    ]


def _floor_text(floor: Floor, *, up: bool) -> str:
    total = floor.up if up else floor.down
    parts = ", ".join(
        f"{cloud} {n} requests {(u if up else d):.1f} s"
        for cloud, (n, u, d) in floor.by_cloud.items()
    )
    return f"{total:.1f} s ({parts})"


def _share(latency: Summary | None, total: float | None) -> str:
    """p50 of `latency` over `total`: how early the median request got there."""
    if latency is None or not total:
        return "- (not every request got there)"
    return f"{latency.p50 / total:.2f}"


def _ratio(value: float | None, floor: float) -> str:
    """`value / floor`; a floor under a second says nothing (the clouds set no pace)."""
    if value is None:
        return "-"
    if floor < 1.0:
        return f"- (floor {floor:.1f} s: the clouds' limits set no pace here)"
    return f"{value / floor:.2f}"


def _pacing_row(p: Pacing) -> Row:
    share = 100 * p.rate / p.limit if p.limit else 0.0
    gap = p.interval.p50 if p.interval else 0.0
    return (
        p.cloud,
        f"{p.launches} launches in {p.seconds:.1f} s = {p.rate:.1f}/s "
        f"({share:.0f} % of the limit); median gap {gap:.3f} s",
    )


def _work_rows(work: Work, options: Options, workers: int) -> list[Row]:
    n = options.requests
    busy = work.reconcile_seconds / (work.seconds * workers) if work.seconds and workers else 0.0
    return [
        ("status writes / request", f"{per(work.status_writes, n):.2f}"),
        ("  by what they changed (phase: fields)", _top(work.status_changes, n, most=12)),
        ("Kubernetes API calls / request", f"{per(work.kube_calls, n):.2f}"),
        ("  by verb and resource", _top(work.kube_calls_by, n)),
        ("provider calls / request (operator / sim ledger)",
         f"{per(work.provider_calls, n):.2f} / {per(work.ledger_calls, n):.2f}"),
        ("  by cloud and operation", _top(work.ledger_by, n)),
        ("  mean seconds per call", _mean_seconds(work.provider_seconds_by, work.ledger_by)),
        ("reconciles / request (errors)",
         f"{per(work.reconciles, n):.2f} ({per(work.reconcile_errors, n):.2f})"),
        (f"reconcile workers ({workers}) busy / mean queue wait",
         f"{100 * busy:.0f} % / {work.queue_wait_mean * 1000:.0f} ms"),
        ("CPU seconds by process", _top(work.cpu_seconds, 1, digits=1)),
    ]  # fmt: skip


def _top(counts: Mapping[str, float], n: int, *, digits: int = 2, most: int = 8) -> str:
    """The `most` biggest entries, each divided by `n`, biggest first."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:most]
    return ", ".join(f"{k} {per(v, n):.{digits}f}" for k, v in ranked) or "-"


def _mean_seconds(seconds: Mapping[str, float], calls: Mapping[str, int]) -> str:
    """Mean duration of each operation, slowest first."""
    means = {k: v / calls[k] for k, v in seconds.items() if calls.get(k)}
    ranked = sorted(means.items(), key=lambda kv: -kv[1])[:8]
    return ", ".join(f"{k} {v:.3f}" for k, v in ranked) or "-"


def _summary(summary: Summary | None, digits: int = 2) -> str:
    return "-" if summary is None else summary.describe("s", digits)


def _seconds(value: float | None) -> str:
    return "did not finish" if value is None else f"{value:.1f} s"
