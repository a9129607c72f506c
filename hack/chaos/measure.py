"""The chaos suite's figures, from the simulated clouds' records and what the run saw.

Pure functions of:
- `Machine`s: every instance the simulated clouds ever created (their `/billing`
  answer: name, id, price, creation, termination, what the cloud billed);
- `Observation`s of each request, as the run's watch saw them over time (exists, its
  current attempt, the provider of its offer, the instance id its status records,
  its phase);
- the cost ledger's entries (gpuctl's record of what each finished request cost).

Definitions:
- duplicate: a second (third, ...) machine under one deterministic name, i.e. two
  machines for one attempt of one request;
- owned, at a moment: the machine's request exists, its status names this machine's
  attempt on this machine's provider, and records this machine's id or none yet (a
  launch in flight): the leak collector's own definition (controllers/garbagecollect.py).
  Unowned seconds run from then until the machine is terminated (the terminate the
  cloud accepted, i.e. its terminating phase began); "beyond one collection period"
  is what exceeds `--gc-interval` + `--gc-grace` per machine;
- cost difference, per request: gpuctl's ledger entry minus what the clouds billed
  for every machine of the request (price x seconds from creation to terminated);
- seeing a machine gone: gpuctl bills a recorded machine until it sees it gone (it
  cannot know when the cloud stopped billing, and never bills less), so the ledger is
  above the clouds by price x (the moment its status stopped naming the machine - the
  machine's termination) for every machine of the request, when that is positive: the
  time gpuctl took to see it gone (termination polls, rate-limit turns, operator
  restarts). The cost difference beyond that is what the billing rules themselves
  leave (found machines billed from the create that can have made them, clocks read in
  whole seconds, accruals rounded to $0.0001, a preempted machine's terminating time).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import attrs

from gpuctl.controllers import naming


@attrs.frozen
class Machine:
    cloud: str
    id: str
    name: str
    created_at: float
    end: float | None  # terminate accepted (terminating began); None: still live
    billed_usd: float
    price_per_hour: float = 0.0
    terminated_at: float | None = None  # the cloud's billing ended

    @classmethod
    def from_billing(cls, row: Mapping[str, Any], terminate_seconds: float) -> Machine:
        terminated = row.get("terminated_at")
        end = None if terminated is None else float(terminated) - terminate_seconds
        return cls(
            cloud=str(row["cloud"]),
            id=str(row["id"]),
            name=str(row["name"]),
            created_at=float(row["created_at"]),
            end=end,
            billed_usd=float(row["billed_usd"]),
            price_per_hour=float(row.get("price_per_hour") or 0.0),
            terminated_at=None if terminated is None else float(terminated),
        )


@attrs.frozen
class Observation:
    at: float
    exists: bool
    attempt: int = 0
    provider: str | None = None
    instance_id: str | None = None
    phase: str | None = None


@attrs.frozen
class Unowned:
    machine: Machine
    seconds: float
    beyond: float  # seconds beyond one collection period


@attrs.frozen
class Figures:
    machines: int
    duplicates: int
    duplicate_names: tuple[str, ...]
    unowned: tuple[Unowned, ...]
    unowned_seconds: float
    unowned_beyond_seconds: float
    cloud_usd: Decimal
    ledger_usd: Decimal
    cost_abs_difference_usd: Decimal
    cost_max_difference_usd: Decimal
    requests_off_by_more_than_a_cent: tuple[str, ...]
    # ledger - cloud - price x (time to see its machines gone): off by more than a cent
    requests_off_beyond_seeing_gone: tuple[str, ...]
    seeing_gone_usd: Decimal  # sum over requests of price x time to see machines gone
    seeing_gone_seconds: tuple[float, ...]  # per machine, sorted
    unrecorded_requests: tuple[str, ...]  # billed by a cloud, absent from the ledger
    ready_latencies: tuple[float, ...]
    ready_before_delete: int
    never_ready: int


def duplicates(machines: Iterable[Machine]) -> dict[str, list[Machine]]:
    by_name: dict[str, list[Machine]] = defaultdict(list)
    for machine in machines:
        by_name[machine.name].append(machine)
    return {name: ms for name, ms in by_name.items() if len(ms) > 1}


def owned_by(obs: Observation, machine: Machine, provider: str, attempt: int) -> bool:
    return (
        obs.exists
        and obs.attempt == attempt
        and obs.provider == provider
        and obs.instance_id in (None, "", machine.id)
    )


def unowned_seconds(
    machine: Machine,
    history: Sequence[Observation],
    provider: str,
    attempt: int,
    now: float,
) -> float:
    """Seconds of the machine's life in which no request owned it."""
    start, end = machine.created_at, machine.end if machine.end is not None else now
    if end <= start:
        return 0.0
    moments = [o for o in history if o.at < end]
    bounds = [-math.inf, *(o.at for o in moments), end]
    states: list[Observation | None] = [None, *moments]  # None: no request seen yet
    total = 0.0
    for state, since, until in zip(states, bounds, bounds[1:], strict=False):
        lo, hi = max(since, start), min(until, end)
        if hi > lo and not (state is not None and owned_by(state, machine, provider, attempt)):
            total += hi - lo
    return total


def seeing_gone_seconds(machine: Machine, history: Sequence[Observation]) -> float:
    """From the machine's termination to the moment its request's status stopped naming
    it (0 if that came first, as for a preempted machine replaced at once, or if no
    status ever named it)."""
    if machine.terminated_at is None:
        return 0.0
    named = [i for i, o in enumerate(history) if o.exists and o.instance_id == machine.id]
    if not named:
        return 0.0
    after = history[named[-1] + 1 :]
    stopped = after[0].at if after else machine.terminated_at
    return max(0.0, stopped - machine.terminated_at)


def figures(  # noqa: PLR0917 - one call site, all inputs named there
    machines: Sequence[Machine],
    histories: Mapping[str, Sequence[Observation]],  # request uid -> observations
    created: Mapping[str, float],  # request uid -> when its create was sent
    ledger: Mapping[str, Decimal],  # request uid -> accrued USD in gpuctl's ledger
    providers: Mapping[str, str],  # cloud -> GPUProvider name
    cluster: str,
    period: float,  # one collection period: gc interval + gc grace
    now: float,
) -> Figures:
    uids = {naming.uid_part(uid): uid for uid in histories}
    unowned: list[Unowned] = []
    billed: dict[str, float] = defaultdict(float)
    lag_usd: dict[str, float] = defaultdict(float)
    lags: list[float] = []
    for machine in machines:
        parsed = naming.parse(cluster, machine.name)
        if parsed is None:
            continue
        uid = uids.get(parsed.uid_part, "")
        billed[uid] += machine.billed_usd
        lag = seeing_gone_seconds(machine, histories.get(uid, ()))
        lags.append(lag)
        lag_usd[uid] += machine.price_per_hour * lag / 3600
        seconds = unowned_seconds(
            machine, histories.get(uid, ()), providers[machine.cloud], parsed.attempt, now
        )
        if seconds > 0.05:  # not the moment between a status write and its watch event
            unowned.append(Unowned(machine, seconds, max(0.0, seconds - period)))
    twins = duplicates(machines)
    cloud_usd = Decimal(0)
    ledger_usd = Decimal(0)
    differences: dict[str, Decimal] = {}
    for uid in set(billed) | set(ledger):
        cloud = Decimal(str(round(billed.get(uid, 0.0), 6)))
        mine = ledger.get(uid, Decimal(0))
        cloud_usd += cloud
        ledger_usd += mine
        differences[uid] = mine - cloud
    latencies, ready_before, never = _convergence(histories, created)
    cent = Decimal("0.01")
    return Figures(
        machines=len(machines),
        duplicates=sum(len(ms) - 1 for ms in twins.values()),
        duplicate_names=tuple(sorted(twins)),
        unowned=tuple(sorted(unowned, key=lambda u: -u.seconds)),
        unowned_seconds=sum(u.seconds for u in unowned),
        unowned_beyond_seconds=sum(u.beyond for u in unowned),
        cloud_usd=cloud_usd,
        ledger_usd=ledger_usd,
        cost_abs_difference_usd=sum((abs(d) for d in differences.values()), Decimal(0)),
        cost_max_difference_usd=max((abs(d) for d in differences.values()), default=Decimal(0)),
        requests_off_by_more_than_a_cent=tuple(
            sorted(uid for uid, d in differences.items() if abs(d) > cent)
        ),
        requests_off_beyond_seeing_gone=tuple(
            sorted(
                uid
                for uid, d in differences.items()
                if abs(d - Decimal(str(round(lag_usd.get(uid, 0.0), 6)))) > cent
            )
        ),
        seeing_gone_usd=Decimal(str(round(sum(lag_usd.values()), 6))),
        seeing_gone_seconds=tuple(sorted(lags)),
        unrecorded_requests=tuple(
            sorted(uid for uid in billed if uid not in ledger and billed[uid] > 0.005)
        ),
        ready_latencies=tuple(sorted(latencies)),
        ready_before_delete=ready_before,
        never_ready=never,
    )


def _convergence(
    histories: Mapping[str, Sequence[Observation]], created: Mapping[str, float]
) -> tuple[list[float], int, int]:
    """create -> first seen Ready, per request that got there; and how many never did."""
    latencies: list[float] = []
    for uid, start in created.items():
        ready = next((o.at for o in histories.get(uid, ()) if o.phase == "Ready"), None)
        if ready is not None:
            latencies.append(ready - start)
    return latencies, len(latencies), len(created) - len(latencies)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted `values` (None when empty)."""
    if not values:
        return None
    rank = max(1, math.ceil(q / 100 * len(values)))
    return values[rank - 1]
