"""`CapacityCache`: offers that just failed for lack of capacity, skipped for a while.

Karpenter's "insufficient capacity" cache: when a launch fails with CapacityError, the
controller marks the offer and fails over; for `ttl` seconds (3 min by default) any offer
with the same key — (provider, native region, GPU type, capacity type), `Offer.key` — is
blocked, whatever its GPU count or price. Entries expire on their own; `entries()` lists
the live ones for status and the CLI.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable

import attrs
import cachetools

from gpuctl.providers.base import Offer

DEFAULT_TTL_SECONDS = 180.0

Key = tuple[str, str, str, str]


@attrs.frozen
class CapacityEntry:
    provider: str
    native_region: str
    gpu_type: str
    capacity_type: str
    reason: str
    marked_at: datetime.datetime  # wall clock, for display
    expires_in: float  # seconds left


@attrs.frozen
class _Mark:
    reason: str
    marked_at: datetime.datetime
    deadline: float  # on the cache's timer


class CapacityCache:
    def __init__(
        self,
        ttl: float = DEFAULT_TTL_SECONDS,
        *,
        maxsize: int = 4096,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self._timer = timer
        self._marks: cachetools.TTLCache[Key, _Mark] = cachetools.TTLCache(
            maxsize=maxsize, ttl=ttl, timer=timer
        )

    def mark(self, offer: Offer, reason: str) -> None:
        """Block `offer.key` for `ttl` seconds from now (a new mark restarts the clock)."""
        self._marks[offer.key] = _Mark(
            reason=reason,
            marked_at=datetime.datetime.now(datetime.UTC),
            deadline=self._timer() + self.ttl,
        )

    def blocked(self, offer: Offer) -> bool:
        return offer.key in self._marks

    def clear(self, offer: Offer | None = None) -> None:
        """Unblock one offer's key (a launch there succeeded) or everything."""
        if offer is None:
            self._marks.clear()
        else:
            self._marks.pop(offer.key, None)

    def entries(self) -> list[CapacityEntry]:
        """The live marks, soonest to expire first."""
        self._marks.expire()
        now = self._timer()
        found = [
            CapacityEntry(
                provider=key[0],
                native_region=key[1],
                gpu_type=key[2],
                capacity_type=key[3],
                reason=mark.reason,
                marked_at=mark.marked_at,
                expires_in=max(0.0, mark.deadline - now),
            )
            for key, mark in list(self._marks.items())
        ]
        return sorted(found, key=lambda e: e.expires_in)

    def __len__(self) -> int:
        self._marks.expire()
        return len(self._marks)
