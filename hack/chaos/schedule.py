"""The seeded chaos schedule: what happens when, decided before anything runs.

One `random.Random(seed)` draws everything, in a fixed order, so a seed names one
schedule: the requests (cloud mix, GPU, capacity type, providers, when each is created
and deleted), when the operator is SIGKILLed and how long it stays down, when
kube-apiserver and etcd are restarted and when a spot machine is interrupted.

Requests, spread evenly over the clouds:
- single-provider Lambda (A10-24GB, on-demand: Lambda sells no spot), Paperspace
  (RTX-A4000, on-demand: no spot either) and RunPod (RTX-4090, on-demand, spot or
  spot-or-on-demand: RunPod is the one of the three that sells spot, as interruptible
  pods);
- multi-provider A6000-48GB (all three sell it) over two or three providers,
  on-demand or spot-or-on-demand, or spot when RunPod is among them.
`delete_early` of them (a third) are deleted while they provision (1-20 s after their
create); the rest at the end of the window.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import attrs

CLOUDS = ("lambda", "runpod", "paperspace")
SINGLE = {"lambda": "A10-24GB", "runpod": "RTX-4090", "paperspace": "RTX-A4000"}
MULTI_GPU = "A6000-48GB"
SPOT_CLOUDS = frozenset({"runpod"})  # of the three, only RunPod sells spot


@attrs.frozen
class Options:
    seed: int = 1
    requests: int = 200
    window: float = 300.0  # seconds over which requests are created
    hold: float = 60.0  # after the window, before the rest are deleted
    kills: int = 24  # SIGKILLs of `gpuctl run`
    max_down: float = 5.0  # a killed operator is restarted 0..max_down s later
    apiserver_restarts: int = 2
    etcd_restarts: int = 2
    interrupts: int = 10  # explicit spot interruptions (besides the configured rate)
    outages: int = 3  # a cloud's API refuses connections for 5-20 s
    delete_early: float = 1 / 3  # share of requests deleted while provisioning
    fault_5xx: float = 0.10
    fault_429: float = 0.05
    fault_timeout: float = 0.02
    timeout_seconds: float = 31.0  # a "timeout" hangs this long (gpuctl's client: 30 s)
    teardown_timeout: float = 600.0
    gc_interval: float = 10.0
    gc_grace: float = 30.0


@attrs.frozen
class RequestPlan:
    index: int
    name: str
    clouds: tuple[str, ...]
    gpu: str
    capacity_type: str
    create_at: float
    delete_at: float
    early: bool  # deleted while provisioning


@attrs.frozen
class Kill:
    at: float
    down: float  # seconds until the operator is started again
    # A kill never comes sooner than this after the operator got ready (its /readyz):
    # on a loaded machine a restart alone can take longer than the gap between two kills,
    # and an operator killed before it ever ran tests nothing.
    min_up: float = 0.0


@attrs.frozen
class Schedule:
    options: Options
    requests: tuple[RequestPlan, ...]
    kills: tuple[Kill, ...]
    apiserver_restarts: tuple[float, ...]
    etcd_restarts: tuple[float, ...]
    interrupts: tuple[float, ...]
    outages: tuple[tuple[float, str, float], ...] = ()  # (when, cloud, seconds)

    @property
    def end_of_window(self) -> float:
        return self.options.window + self.options.hold


def build(options: Options) -> Schedule:
    rng = random.Random(options.seed)
    window = options.window
    requests = tuple(_request(rng, i, options) for i in range(options.requests))
    # Kills over the whole run, teardown included (the rest are deleted at window+hold).
    kills = _kills(rng, options.kills, window + options.hold + 60.0, options.max_down)
    return Schedule(
        options=options,
        requests=requests,
        kills=kills,
        apiserver_restarts=_times(rng, options.apiserver_restarts, 15.0, window + options.hold),
        etcd_restarts=_times(rng, options.etcd_restarts, 15.0, window + options.hold),
        interrupts=_times(rng, options.interrupts, 20.0, window + options.hold),
        outages=tuple(
            (t, rng.choice(CLOUDS), rng.uniform(5.0, 20.0))
            for t in _times(rng, options.outages, 10.0, window + options.hold)
        ),
    )


def _request(rng: random.Random, index: int, options: Options) -> RequestPlan:
    kind = index % 4  # Lambda, RunPod, Paperspace, multi-provider: evenly
    if kind < 3:
        cloud = CLOUDS[kind]
        clouds: tuple[str, ...] = (cloud,)
        gpu = SINGLE[cloud]
        choices: tuple[str, ...] = ("on-demand",)
        if cloud in SPOT_CLOUDS:
            choices = ("on-demand", "spot", "spot-or-on-demand")
    else:
        clouds = tuple(sorted(rng.sample(CLOUDS, rng.choice((2, 3)))))
        gpu = MULTI_GPU
        choices = ("on-demand", "spot-or-on-demand")
        if SPOT_CLOUDS & set(clouds):
            choices += ("spot",)
    capacity_type = rng.choice(choices)
    create_at = rng.uniform(0.0, options.window)
    early = rng.random() < options.delete_early
    delete_at = create_at + rng.uniform(1.0, 20.0) if early else options.window + options.hold
    return RequestPlan(
        index=index,
        name=f"chaos-{options.seed}-{index:03d}",
        clouds=clouds,
        gpu=gpu,
        capacity_type=capacity_type,
        create_at=create_at,
        delete_at=delete_at,
        early=early,
    )


def _times(rng: random.Random, count: int, start: float, end: float) -> tuple[float, ...]:
    return tuple(sorted(rng.uniform(start, end) for _ in range(count)))


def _kills(rng: random.Random, count: int, end: float, max_down: float) -> tuple[Kill, ...]:
    """`count` kills at random moments in [5, end], each after the previous restart
    (at least 3 s of running in between), and each `min_up` (1-8 s) after the operator
    got ready at the soonest."""
    if count == 0:
        return ()
    slot = (end - 5.0) / count
    kills = []
    for i in range(count):
        down = rng.uniform(0.0, max_down)
        # One kill per slot, at a random moment of it that leaves the restart inside it.
        at = 5.0 + i * slot + rng.uniform(0.0, max(0.0, slot - down - 3.0))
        kills.append(Kill(at, down, min_up=rng.uniform(1.0, 8.0)))
    return tuple(kills)


def describe(schedule: Schedule) -> Sequence[str]:
    """One line per kind of event, for the report's head."""
    reqs = schedule.requests
    by_cloud = {c: sum(1 for r in reqs if r.clouds == (c,)) for c in CLOUDS}
    multi = sum(1 for r in reqs if len(r.clouds) > 1)
    kinds = {k: sum(1 for r in reqs if r.capacity_type == k) for k in
             ("on-demand", "spot", "spot-or-on-demand")}  # fmt: skip
    return [
        f"requests: {len(reqs)} (single-provider {by_cloud}, multi-provider {multi}; "
        f"capacity types {kinds}; {sum(r.early for r in reqs)} deleted while provisioning)",
        f"operator SIGKILLs: {len(schedule.kills)}, restarted 0-{schedule.options.max_down:g} s "
        "later",
        f"kube-apiserver restarts: {len(schedule.apiserver_restarts)}, etcd restarts: "
        f"{len(schedule.etcd_restarts)}, explicit spot interruptions: "
        f"{len(schedule.interrupts)}, cloud API outages (connections refused): "
        + (", ".join(f"{c} {s:.0f} s" for _, c, s in schedule.outages) or "none"),
    ]
