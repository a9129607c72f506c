"""Which machines to buy for a batch of pending pods: fewest and cheapest, within limits.

Input: the batch's pods; the pools (candidates cheapest first, template taints, usage
and limits); the machines that exist or are launching (their labels, taints and free
GPUs). Output: the pods that fit existing or launching machines (nothing is bought for
them: that is what stops a second machine for the same pods, also after a restart),
the new machines with their pods, and for each pod left why.

The packing, as Karpenter's scheduler does it, with money in place of instance types:
1. Pods go largest first (GPUs), then oldest first.
2. A pod that fits a machine that exists or is launching (labels, taints, free GPUs)
   goes there, onto the fullest one: no new capacity.
3. Otherwise pools are tried by weight, highest first. Within the first weight that
   can serve the pod, every way to place it is priced: joining a machine already
   planned this round (its offer may have to grow to the cheapest one holding
   everything) or a new machine (the cheapest offer the pod accepts); the cheapest
   increase wins, a tie goes to joining (fewer machines). Each choice must keep the
   pool within its limits (GPUs, machines, USD/h, counting what it already has).
4. Last, planned machines of one pool are merged when one offer holding all their
   pods is cheaper than theirs together (four 2-GPU pods: one 8-GPU machine if it
   costs less than four 2-GPU ones), again within limits.

The CPU and memory of an offer are not known for every cloud, so only GPUs are packed;
the kube-scheduler still has the last word (a pod that does not fit after all stays
pending and the next round sees it).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import attrs

from gpuctl.api import Limits
from gpuctl.controllers.pool import pods as podinfo
from gpuctl.controllers.pool.limits import Usage, exceeded
from gpuctl.controllers.pool.offers import Candidate
from gpuctl.controllers.pool.requirements import rejects, untolerated

Obj = dict[str, Any]


@attrs.define(eq=False)
class PoolView:
    """A pool as the planner sees it."""

    name: str
    weight: int
    candidates: Sequence[Candidate]  # cheapest first
    taints: Sequence[Obj]  # the template's taints (startup taints left out)
    limits: Limits | None
    used: Usage  # its machines now, launching ones included
    why_no_candidates: str = "no offer matches the pool's requirements"


@attrs.define(eq=False)
class Existing:
    """A machine of some pool that exists or is launching."""

    name: str  # its GPUNodeRequest
    pool: str
    labels: dict[str, str]
    taints: list[Obj]
    free: int  # GPUs not requested by pods bound to it (or planned onto it this round)


@attrs.define(eq=False)
class NewMachine:
    pool: PoolView
    options: list[Candidate]  # offers that hold all its pods, cheapest first
    pods: list[Obj]
    used: int  # GPUs its pods request

    @property
    def choice(self) -> Candidate:
        return self.options[0]


@attrs.frozen
class Plan:
    new: list[NewMachine]
    onto_existing: dict[str, str]  # pod key -> GPUNodeRequest name
    unserved: dict[str, str]  # pod key -> why no pool can serve it


@attrs.define(eq=False)
class _Option:
    delta: Decimal
    joins: NewMachine | None
    pool: PoolView
    options: list[Candidate]


def _order(pod: Obj) -> tuple[int, str, str]:
    meta = pod["metadata"]
    return (-podinfo.gpus(pod), str(meta.get("creationTimestamp") or ""), podinfo.key(pod))


class _Planner:
    def __init__(self, pools: Sequence[PoolView], existing: Sequence[Existing]) -> None:
        self.pools = list(pools)
        self.existing = list(existing)
        self.new: list[NewMachine] = []
        self.totals = {p.name: p.used for p in self.pools}

    def total_with(self, pool: PoolView, add: Candidate, remove: Candidate | None = None) -> Usage:
        total = self.totals[pool.name].plus(add.gpus, add.price)
        if remove is not None:
            total = total.plus(-remove.gpus, -remove.price, machines=-1)
        return total

    def within(self, pool: PoolView, add: Candidate, remove: Candidate | None = None) -> bool:
        return exceeded(pool.limits, self.total_with(pool, add, remove)) is None

    def onto_existing(self, pod: Obj, gpus: int) -> Existing | None:
        fits = [
            e for e in self.existing if e.free >= gpus and rejects(pod, e.labels, e.taints) is None
        ]
        if not fits:
            return None
        fullest = min(fits, key=lambda e: (e.free, e.name))
        fullest.free -= gpus
        return fullest

    def options(self, pod: Obj, gpus: int, pool: PoolView) -> tuple[list[_Option], str | None]:
        """Every way `pool` can take the pod, or why it cannot."""
        if not pool.candidates:
            return [], pool.why_no_candidates
        taint = untolerated(pod, pool.taints)
        if taint:
            return [], taint
        accepted = [c for c in pool.candidates if rejects(pod, c.labels, []) is None]
        if not accepted:
            return [], str(rejects(pod, pool.candidates[0].labels, []))
        big = [c for c in accepted if c.gpus >= gpus]
        if not big:
            most = max(c.gpus for c in accepted)
            return [], f"needs {gpus} GPUs; the largest machine it accepts has {most}"
        found: list[_Option] = []
        ok = {id(c) for c in accepted}
        for machine in self.new:
            if machine.pool is not pool:
                continue
            need = machine.used + gpus
            grown = [
                c
                for c in machine.options
                if id(c) in ok and c.gpus >= need and self.within(pool, c, machine.choice)
            ]
            if grown:
                delta = grown[0].price - machine.choice.price
                found.append(_Option(delta, machine, pool, grown))
        fresh = [c for c in big if self.within(pool, c)]
        if fresh:
            found.append(_Option(fresh[0].price, None, pool, fresh))
        if not found:
            over = exceeded(pool.limits, self.total_with(pool, big[0]))
            return [], f"limit reached ({over})"
        return found, None

    def place(self, pod: Obj, gpus: int) -> str | None:
        """Place one pod on a new or planned machine; why not, if no pool can take it."""
        reasons: list[str] = []
        for weight in sorted({p.weight for p in self.pools}, reverse=True):
            found: list[_Option] = []
            for pool in (p for p in self.pools if p.weight == weight):
                options, why = self.options(pod, gpus, pool)
                found += options
                if why:
                    reasons.append(f"pool {pool.name}: {why}")
            if found:
                self.apply(pod, gpus, min(found, key=lambda o: (o.delta, o.joins is None)))
                return None
        return "; ".join(reasons) or "no GPUNodePool"

    def apply(self, pod: Obj, gpus: int, option: _Option) -> None:
        pool = option.pool
        machine = option.joins
        if machine is None:
            machine = NewMachine(pool=pool, options=option.options, pods=[pod], used=gpus)
            self.new.append(machine)
            self.totals[pool.name] = self.total_with(pool, machine.choice)
            return
        before = machine.choice
        machine.options, machine.used = option.options, machine.used + gpus
        machine.pods.append(pod)
        self.totals[pool.name] = self.total_with(pool, machine.choice, before)

    def merge(self) -> None:
        """Step 4: fold planned machines of a pool into fewer when that is cheaper."""
        merged = True
        while merged:
            merged = False
            for first in list(self.new):
                if self._absorb(first):
                    merged = True
                    break

    def _absorb(self, first: NewMachine) -> bool:
        """Grow `first` over the next machines of its pool; keep the prefix saving most."""
        pool = first.pool
        others = [m for m in self.new if m.pool is pool and m is not first]
        options, used, cost = first.options, first.used, first.choice.price
        taken: list[NewMachine] = []
        best: tuple[Decimal, list[NewMachine], list[Candidate], int] | None = None
        for other in sorted(others, key=lambda m: -m.used):
            ids = {id(c) for c in other.options}
            options = [c for c in options if id(c) in ids and c.gpus >= used + other.used]
            if not options:
                break
            used, cost = used + other.used, cost + other.choice.price
            taken.append(other)
            saving = cost - options[0].price
            if saving > 0 and (best is None or saving > best[0]):
                best = (saving, list(taken), options, used)
        if best is None:
            return False
        _, absorbed, options, used = best
        before = Usage(1 + len(absorbed), first.choice.gpus, first.choice.price)
        for other in absorbed:
            before = before.plus(other.choice.gpus, other.choice.price, machines=0)
        total = self.totals[pool.name]
        after = Usage(
            total.machines - before.machines + 1,
            total.gpus - before.gpus + options[0].gpus,
            total.price - before.price + options[0].price,
        )
        if exceeded(pool.limits, after) is not None:
            return False
        first.options, first.used = options, used
        for other in absorbed:
            first.pods += other.pods
            self.new.remove(other)
        self.totals[pool.name] = after
        return True


def plan(pending: Sequence[Obj], pools: Sequence[PoolView], existing: Sequence[Existing]) -> Plan:
    planner = _Planner(pools, existing)
    onto: dict[str, str] = {}
    unserved: dict[str, str] = {}
    for pod in sorted(pending, key=_order):
        gpus = podinfo.gpus(pod)
        spot = planner.onto_existing(pod, gpus)
        if spot is not None:
            onto[podinfo.key(pod)] = spot.name
            continue
        why = planner.place(pod, gpus)
        if why is not None:
            unserved[podinfo.key(pod)] = why
    planner.merge()
    return Plan(new=planner.new, onto_existing=onto, unserved=unserved)
