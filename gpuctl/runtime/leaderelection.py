"""Leader election on a `coordination.k8s.io/v1` Lease, as client-go's `tools/leaderelection`.

Only the replica holding the Lease runs the leader's work. The algorithm is
client-go's `tryAcquireOrRenew`:

- Read the Lease (create it, held by us, if it does not exist). If its record
  (holder, duration, times, transitions) differs from the one last observed,
  remember it together with the *local monotonic* time of the observation. A
  candidate never compares the remote `renewTime` with its own clock: the lease
  is expired only when `leaseDurationSeconds` pass locally without the record
  changing, so clock skew between machines does not matter (only skew *rate*).
- A Lease held by someone else and not expired is left alone. Otherwise (empty
  holder, expired, or ours) write it with us as holder through `replace`, which
  carries the resourceVersion read: of several candidates racing for an expired
  Lease, the API server lets exactly one write win (409 Conflict for the rest).
  Taking over increments `leaseTransitions` and sets `acquireTime`.
- The leader renews with a fast path (replace using the Lease it wrote last,
  no read) and falls back to the full read-modify-write when that fails.

`run(on_started_leading, on_stopped_leading)`:

1. tries to acquire every `retry_period * (1 + U[0, 1.2))` seconds (client-go's jitter);
2. once leading, runs `on_started_leading()` as a task and renews every
   `retry_period`; each renewal retries every `retry_period` for at most
   `renew_deadline` seconds;
3. leadership ends when
   - a renewal fails for `renew_deadline`: the leader task is cancelled (and
     awaited), then `LeaderElectionLost` is raised — the process should exit,
     as controller-runtime's does, and restart clean;
   - the leader task finishes: `run()` returns, or re-raises its exception;
   - `run()` is cancelled: the leader task is cancelled and awaited, then
     `CancelledError` propagates;
4. in every case, once the leader task has finished, the Lease is released if
   `release_on_cancel` (client-go's `ReleaseOnCancel`): holder cleared,
   `leaseDurationSeconds=1`, so a standby takes over at its next retry instead of
   after a full lease duration. `on_stopped_leading()` is called last, and only
   if leadership was acquired (client-go calls it even when it never led).

`lease_duration > renew_deadline > 1.2 * retry_period` is enforced (client-go's
validation) so a leader gives up before any standby may consider the Lease
expired. `lease_duration` must be whole seconds: the Lease stores an integer.
The Lease is read and written as raw JSON through `gpuctl.runtime.client.Client`, whose
every call carries a timeout (`request_timeout`, default `renew_deadline / 2`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import attrs

from gpuctl.runtime import metrics
from gpuctl.runtime.client import ApiError, Client, is_not_found
from gpuctl.runtime.resources import LEASES
from gpuctl.runtime.transport import Transport

log = logging.getLogger(__name__)

JITTER_FACTOR = 1.2  # client-go's leaderelection.JitterFactor


class LeaderElectionLost(RuntimeError):  # noqa: N818 - it is an event, not a bug
    """The leader could not renew its Lease within the renew deadline."""


@attrs.frozen
class _Record:
    """The election record of a Lease's spec (client-go's LeaderElectionRecord)."""

    holder: str
    duration_seconds: int
    acquire_time: Any
    renew_time: Any
    transitions: int

    @classmethod
    def of(cls, lease: dict[str, Any]) -> _Record:
        spec = lease.get("spec") or {}
        return cls(
            holder=spec.get("holderIdentity") or "",
            duration_seconds=spec.get("leaseDurationSeconds") or 0,
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=spec.get("leaseTransitions") or 0,
        )


def _micro_time(moment: datetime) -> str:
    """metav1.MicroTime's wire format (RFC 3339, exactly six fractional digits, UTC)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _wire_time(value: Any) -> str | None:
    if isinstance(value, datetime):
        return _micro_time(value)
    return value if isinstance(value, str) else None


class LeaderElector:
    """One candidate for one Lease; see the module docstring."""

    def __init__(
        self,
        api_client: Transport,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        release_on_cancel: bool = True,
        request_timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not identity:
            raise ValueError("identity must not be empty")
        if retry_period <= 0:
            raise ValueError("retry_period must be positive")
        if lease_duration != int(lease_duration) or lease_duration < 1:
            raise ValueError("lease_duration must be a whole number of seconds, at least 1")
        if lease_duration <= renew_deadline:
            raise ValueError("lease_duration must be greater than renew_deadline")
        if renew_deadline <= JITTER_FACTOR * retry_period:
            raise ValueError(f"renew_deadline must be greater than {JITTER_FACTOR} * retry_period")
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.release_on_cancel = release_on_cancel
        self.request_timeout = request_timeout or renew_deadline / 2
        self._client = Client(api_client, request_timeout=self.request_timeout)
        self._clock = clock
        self._lease: dict[str, Any] = {}  # the Lease last read or written (its resourceVersion)
        self._observed: _Record | None = None
        self._observed_at = 0.0
        self._leading = False
        self._status = metrics.LEADER_STATUS.labels(name)
        self._status.set(0)

    @property
    def is_leader(self) -> bool:
        """True from acquiring the Lease until leadership ends (lost, released or cancelled)."""
        return self._leading

    @property
    def leader(self) -> str:
        """The holder last observed ("" if none yet): informational only."""
        return self._observed.holder if self._observed else ""

    async def run(
        self,
        on_started_leading: Callable[[], Awaitable[None]],
        on_stopped_leading: Callable[[], None] | None = None,
    ) -> None:
        """Campaign, then lead while `on_started_leading()` runs; see the module docstring."""
        await self._acquire()
        self._set_leading(True)
        log.info("lease %s: %s became leader", self._describe(), self.identity)
        work = asyncio.ensure_future(on_started_leading())
        renewing = asyncio.ensure_future(self._renew_until_failure())
        try:
            await asyncio.wait({work, renewing}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():
                renewing.result()  # a bug in the renew loop surfaces as itself
                log.error(
                    "lease %s: %s could not renew for %.1fs, stopping leading",
                    self._describe(),
                    self.identity,
                    self.renew_deadline,
                )
                raise LeaderElectionLost(f"lost lease {self._describe()}")
            work.result()  # the leader's own failure, if any
        finally:
            # On every path, cancellation included: stop the leader's work first, then
            # let go of the Lease, so that two leaders never act at once.
            await _cancel_and_wait(work)
            await _cancel_and_wait(renewing)
            self._set_leading(False)
            if self.release_on_cancel:
                await self._release()
            log.info("lease %s: %s stopped leading", self._describe(), self.identity)
            if on_stopped_leading is not None:
                on_stopped_leading()

    def _describe(self) -> str:
        return f"{self.namespace}/{self.name}"

    async def _acquire(self) -> None:
        log.info("lease %s: %s campaigning", self._describe(), self.identity)
        while True:
            if await self._try_acquire_or_renew():
                return
            await asyncio.sleep(self.retry_period * (1 + random.random() * JITTER_FACTOR))

    async def _renew_until_failure(self) -> None:
        """Renew every retry period; return when a renewal failed for renew_deadline."""
        while True:
            await asyncio.sleep(self.retry_period)
            try:
                async with asyncio.timeout(self.renew_deadline):
                    await self._renew_once()
            except TimeoutError:
                return

    async def _renew_once(self) -> None:
        """Try every retry period until the Lease is renewed (the caller bounds the time)."""
        while True:
            if await self._try_acquire_or_renew():
                return
            await asyncio.sleep(self.retry_period)

    async def _try_acquire_or_renew(self) -> bool:
        """One round of client-go's tryAcquireOrRenew; True if we hold the Lease now."""
        now = datetime.now(UTC)
        # 1. Fast path: the leader writes over the Lease it wrote last.
        if self._holds_observed() and self._lease_valid() and self._observed is not None:
            try:
                await self._write(self._lease, self._spec(now, self._observed))
                return True
            except Exception as err:
                log.info("lease %s: optimistic renew failed (%s)", self._describe(), err)
        # 2. Read, or create when missing.
        try:
            lease = await self._client.get(LEASES, self.name, namespace=self.namespace)
        except ApiError as err:
            if not is_not_found(err):
                log.warning("lease %s: read failed: %s", self._describe(), _reason(err))
                return False
            return await self._create(now)
        except Exception as err:
            log.warning("lease %s: read failed: %s", self._describe(), _reason(err))
            return False
        # 3. Note a changed record and when we saw it; leave a valid foreign Lease alone.
        record = _Record.of(lease)
        if record != self._observed:
            self._observe(lease, record)
        if record.holder and self._lease_valid() and not self._holds_observed():
            return False
        # 4. Take over or renew.
        try:
            await self._write(lease, self._spec(now, record))
        except Exception as err:
            log.info("lease %s: update failed: %s", self._describe(), _reason(err))
            return False
        return True

    def _spec(self, now: datetime, base: _Record | None) -> dict[str, Any]:
        """Our record: renewing keeps `base`'s acquire time and count, taking over bumps it."""
        renewing = base is not None and base.holder == self.identity
        acquired: str | None
        if base is None:
            acquired, transitions = _micro_time(now), 0  # a new Lease
        elif renewing:
            acquired, transitions = _wire_time(base.acquire_time), base.transitions
        else:
            acquired, transitions = _micro_time(now), base.transitions + 1
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.lease_duration),
            "acquireTime": acquired,
            "renewTime": _micro_time(now),
            "leaseTransitions": transitions,
        }

    async def _create(self, now: datetime) -> bool:
        body: dict[str, Any] = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": self._spec(now, None),
        }
        try:
            lease = await self._client.create(LEASES, body, namespace=self.namespace)
        except Exception as err:
            log.info("lease %s: create failed: %s", self._describe(), _reason(err))
            return False
        self._observe(lease, _Record.of(lease))
        return True

    async def _write(self, lease: dict[str, Any], spec: dict[str, Any]) -> None:
        """Replace `lease` (at its resourceVersion) with `spec`; observe the result."""
        metadata = {k: v for k, v in lease["metadata"].items() if k != "managedFields"}
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": spec,
        }
        written = await self._client.replace(LEASES, body)
        self._observe(written, _Record.of(written))

    async def _release(self) -> None:
        """Clear the holder if we still hold the Lease (client-go's release)."""
        if not self._holds_observed() or self._observed is None:
            return
        stamp = _micro_time(datetime.now(UTC))
        spec = {
            "holderIdentity": "",
            "leaseDurationSeconds": 1,
            "acquireTime": stamp,
            "renewTime": stamp,
            "leaseTransitions": self._observed.transitions,
        }
        try:
            await self._write(self._lease, spec)
            log.info("lease %s: released by %s", self._describe(), self.identity)
        except Exception as err:
            log.warning("lease %s: release failed: %s", self._describe(), _reason(err))

    def _observe(self, lease: dict[str, Any], record: _Record) -> None:
        self._lease = lease
        self._observed = record
        self._observed_at = self._clock()

    def _holds_observed(self) -> bool:
        """client-go's IsLeader: the last observed record names us."""
        return self._observed is not None and self._observed.holder == self.identity

    def _lease_valid(self) -> bool:
        duration = self._observed.duration_seconds if self._observed else 0
        return self._observed_at + duration > self._clock()

    def _set_leading(self, leading: bool) -> None:
        self._leading = leading
        self._status.set(1 if leading else 0)


def _reason(err: Exception) -> str:
    if isinstance(err, ApiError):
        return f"{err.status} {err.reason}"
    return repr(err)


async def _cancel_and_wait(task: asyncio.Future[Any]) -> None:
    """Cancel `task` and wait until it has finished; its outcome is left in it.

    A cancellation of the caller still propagates (asyncio.wait never raises the
    task's own exception).
    """
    if not task.done():
        task.cancel()
        await asyncio.wait({task})
