"""Leader election against the real API server: one leader, failover, release, loss.

Timings are scaled down from the defaults (15 s / 10 s / 2 s) to keep the file
fast; the relations client-go requires still hold (lease > renew > 1.2 * retry).

How fast a standby can take over after a crash: the standby measures the
lease from the moment it *observed* the last renewal (its own clock), and it
looks every `retry * (1 + U[0, 1.2))`. The last renewal happened at most one
retry period before the crash; the standby sees it at most one poll later and
acts at most one poll after the lease ran out. So the takeover comes between
`lease - retry` and `lease + 2 * 2.2 * retry` after the crash — at the defaults,
between 13 s and 23.8 s; never before the lease could have expired.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from kubernetes_asyncio import client

from gpuctl.runtime import metrics
from gpuctl.runtime.leaderelection import JITTER_FACTOR, LeaderElectionLost, LeaderElector

LEASE = 3.0
RENEW = 2.0
RETRY = 0.5
MAX_POLL = RETRY * (1 + JITTER_FACTOR)
SLACK = 1.0  # scheduling noise on a loaded 2-core machine


class Candidate:
    """A LeaderElector running in a task, recording when it led."""

    def __init__(self, elector: LeaderElector) -> None:
        self.elector = elector
        self.started = asyncio.Event()
        self.stopped = asyncio.Event()
        self.work_cancelled = False
        self.task: asyncio.Task[None] | None = None

    async def lead(self) -> None:
        self.started.set()
        try:
            await asyncio.Event().wait()  # the leader's work: until cancelled
        except asyncio.CancelledError:
            self.work_cancelled = True
            raise

    def start(self) -> Candidate:
        self.task = asyncio.create_task(self.elector.run(self.lead, self.stopped.set))
        return self

    async def cancel(self) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.wait({self.task})


@pytest.fixture
async def candidates(
    kube: client.ApiClient, namespace: str
) -> AsyncIterator[Callable[..., Candidate]]:
    lease_name = f"lease-{secrets.token_hex(3)}"
    made: list[Candidate] = []

    def make(identity: str, **overrides: Any) -> Candidate:
        settings: dict[str, Any] = {
            "lease_duration": LEASE,
            "renew_deadline": RENEW,
            "retry_period": RETRY,
            **overrides,
        }
        elector = LeaderElector(
            kube, namespace=namespace, name=lease_name, identity=identity, **settings
        )
        candidate = Candidate(elector)
        made.append(candidate)
        return candidate

    yield make
    for candidate in made:
        if candidate.task is not None and not candidate.task.done():
            await candidate.cancel()


async def read_lease(kube: client.ApiClient, elector: LeaderElector) -> Any:
    return await client.CoordinationV1Api(kube).read_namespaced_lease(
        elector.name, elector.namespace, _request_timeout=10
    )


async def first_leader(*candidates: Candidate, within: float) -> Candidate:
    waits = {asyncio.ensure_future(c.started.wait()): c for c in candidates}
    done, pending = await asyncio.wait(waits, timeout=within, return_when="FIRST_COMPLETED")
    for fut in pending:
        fut.cancel()
    assert done, "nobody became leader"
    return waits[done.pop()]


async def test_exactly_one_of_two_leads(
    kube: client.ApiClient, candidates: Callable[..., Candidate]
) -> None:
    a = candidates("replica-a").start()
    b = candidates("replica-b").start()
    leader = await first_leader(a, b, within=LEASE + SLACK)
    standby = b if leader is a else a
    # Watch for longer than a lease: renewals keep the standby out.
    for _ in range(int((LEASE + MAX_POLL) / 0.1)):
        assert leader.elector.is_leader
        assert not standby.elector.is_leader and not standby.started.is_set()
        await asyncio.sleep(0.1)
    lease = await read_lease(kube, leader.elector)
    assert lease.spec.holder_identity == leader.elector.identity
    assert lease.spec.lease_duration_seconds == int(LEASE)
    assert standby.elector.leader == leader.elector.identity
    status = metrics.REGISTRY.get_sample_value(
        "gpuctl_leader_election_master_status", {"name": leader.elector.name}
    )
    assert status is not None


async def test_standby_takes_over_after_a_crash_once_the_lease_expires(
    kube: client.ApiClient, candidates: Callable[..., Candidate]
) -> None:
    # release_on_cancel=False: cancelling is then a crash, the Lease is left as it was.
    a = candidates("crashing", release_on_cancel=False).start()
    await asyncio.wait_for(a.started.wait(), LEASE + SLACK)
    b = candidates("standby").start()
    await asyncio.sleep(3 * RETRY)  # b has observed a's renewals by now
    assert not b.started.is_set()

    loop = asyncio.get_running_loop()
    crashed_at = loop.time()
    await a.cancel()
    lease = await read_lease(kube, a.elector)
    assert lease.spec.holder_identity == "crashing", "a crash releases nothing"

    await asyncio.wait_for(b.started.wait(), LEASE + 2 * MAX_POLL + SLACK)
    elapsed = loop.time() - crashed_at
    assert elapsed >= LEASE - RETRY - 0.2, "took over before the lease could have expired"
    assert elapsed < LEASE + 2 * MAX_POLL + SLACK
    lease = await read_lease(kube, b.elector)
    assert lease.spec.holder_identity == "standby"
    assert lease.spec.lease_transitions == 1


async def test_graceful_release_hands_over_fast(
    kube: client.ApiClient, candidates: Callable[..., Candidate]
) -> None:
    long_lease = {"lease_duration": 20.0}  # a takeover by expiry would take 20 s
    a = candidates("leaving", **long_lease).start()
    await asyncio.wait_for(a.started.wait(), LEASE + SLACK)
    b = candidates("successor", **long_lease).start()
    await asyncio.sleep(2 * RETRY)
    assert not b.started.is_set()

    loop = asyncio.get_running_loop()
    released_at = loop.time()
    await a.cancel()
    assert a.work_cancelled and a.stopped.is_set()
    await asyncio.wait_for(b.started.wait(), MAX_POLL + SLACK)
    assert loop.time() - released_at < MAX_POLL + SLACK
    lease = await read_lease(kube, b.elector)
    assert lease.spec.holder_identity == "successor"
    assert lease.spec.lease_duration_seconds == 20


async def test_release_clears_the_holder(
    kube: client.ApiClient, candidates: Callable[..., Candidate]
) -> None:
    a = candidates("alone").start()
    await asyncio.wait_for(a.started.wait(), LEASE + SLACK)
    await a.cancel()
    lease = await read_lease(kube, a.elector)
    assert lease.spec.holder_identity in ("", None)
    assert lease.spec.lease_duration_seconds == 1
    assert not a.elector.is_leader


async def test_losing_the_lease_cancels_the_work_and_raises(
    kube: client.ApiClient, candidates: Callable[..., Candidate]
) -> None:
    a = candidates("usurped").start()
    await asyncio.wait_for(a.started.wait(), LEASE + SLACK)
    # Someone else writes the Lease (as after a long partition): a's renewals now
    # conflict or find a valid foreign holder until the renew deadline passes.
    api = client.CoordinationV1Api(kube)
    lease = await read_lease(kube, a.elector)
    lease.spec.holder_identity = "usurper"
    await api.replace_namespaced_lease(
        a.elector.name, a.elector.namespace, lease, _request_timeout=10
    )
    loop = asyncio.get_running_loop()
    stolen_at = loop.time()
    assert a.task is not None
    with pytest.raises(LeaderElectionLost):
        await asyncio.wait_for(a.task, RENEW + 2 * RETRY + SLACK)
    assert loop.time() - stolen_at >= RENEW - 0.1
    assert a.work_cancelled and a.stopped.is_set()
    assert not a.elector.is_leader
    lease = await read_lease(kube, a.elector)
    assert lease.spec.holder_identity == "usurper", "the loser must not release someone else's"


async def test_the_leaders_own_failure_ends_leadership(
    kube: client.ApiClient, namespace: str
) -> None:
    elector = LeaderElector(
        kube,
        namespace=namespace,
        name=f"lease-{secrets.token_hex(3)}",
        identity="fragile",
        lease_duration=LEASE,
        renew_deadline=RENEW,
        retry_period=RETRY,
    )

    async def work() -> None:
        raise ValueError("leader work failed")

    with pytest.raises(ValueError, match="leader work failed"):
        await asyncio.wait_for(elector.run(work), LEASE + SLACK)
    lease = await read_lease(kube, elector)
    assert lease.spec.holder_identity in ("", None), "released after the work ended"


@pytest.mark.parametrize(
    ("lease", "renew", "retry"),
    [(10.0, 10.0, 2.0), (15.0, 2.0, 2.0), (15.5, 10.0, 2.0), (15.0, 10.0, 0.0)],
)
async def test_invalid_timings_are_refused(
    kube: client.ApiClient, lease: float, renew: float, retry: float
) -> None:
    with pytest.raises(ValueError):
        LeaderElector(
            kube,
            namespace="default",
            name="x",
            identity="me",
            lease_duration=lease,
            renew_deadline=renew,
            retry_period=retry,
        )
