"""The reconciler contract, as controller-runtime's `pkg/reconcile`.

A `Reconciler` is handed a key (`name` for cluster-scoped objects,
`namespace/name` otherwise) and drives the world towards the desired state of
the object it names. It must be level-based and idempotent: it may run any
number of times for the same state, is never told *what* changed, and never
runs concurrently for the same key (the work queue guarantees that).

How the controller treats the outcome (controller-runtime's `reconcileHandler`):

- raises `TerminalError`: logged and counted, never retried; the key's backoff is
  reset (controller-runtime keeps it; resetting means a later change starts
  from the shortest backoff again);
- raises anything else: retried with the rate limiter's backoff;
- returns `Result(requeue_after=s)` with `s > 0`: backoff reset, key added again after
  `s` seconds (this wins over `requeue`);
- returns `Result(requeue=True)`: retried with the rate limiter's backoff;
- returns `Result()`: success, backoff reset.

`merge_results` combines the results of sub-reconcilers (Karpenter's `result.Min`):
the soonest requeue wins. A bare `requeue=True` (retry now, rate-limited) is
sooner than any `requeue_after`; otherwise the smallest positive `requeue_after`
wins; with neither, the merge is `Result()`.
"""

from __future__ import annotations

from typing import Protocol

import attrs


@attrs.frozen
class Result:
    """What to do with a key after a reconcile that did not raise."""

    requeue: bool = False
    requeue_after: float | None = None

    @property
    def is_zero(self) -> bool:
        return not self.requeue and not self.delay

    @property
    def delay(self) -> float:
        """The positive `requeue_after`, or 0.0 when there is none."""
        return self.requeue_after if self.requeue_after and self.requeue_after > 0 else 0.0


class Reconciler(Protocol):
    async def reconcile(self, key: str) -> Result:
        """Bring the object named by `key` to its desired state; raise to retry."""
        ...


class TerminalError(Exception):
    """A failure that retrying cannot fix (e.g. an invalid spec): not requeued.

    The reconciler should record why on the object (status condition, event): the
    key will only be reconciled again when something about it changes.
    """


def merge_results(*results: Result) -> Result:
    """The soonest requeue among `results` (see the module docstring)."""
    if any(r.requeue and not r.delay for r in results):
        return Result(requeue=True)
    delays = [r.delay for r in results if r.delay]
    return Result(requeue_after=min(delays)) if delays else Result()
