"""Batching pending pods into one provisioning decision, as Karpenter's Batcher.

Pods of one Deployment or Job arrive within moments of each other; deciding for each
alone would buy one machine per pod. `trigger(key)` opens a window (or extends the
open one); `wait()` returns once no new key arrived for `idle` seconds, or `longest`
seconds after the window opened, whichever comes first. A key already in the window
does not extend it (the same pod updated twice is one arrival). `wait()` returns False
when nothing arrived within `poll` seconds, so the caller can do periodic work.

Karpenter's defaults are 1 s idle and 10 s max (BATCH_IDLE_DURATION, BATCH_MAX_DURATION).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable

DEFAULT_IDLE = 1.0
DEFAULT_MAX = 10.0


class Batcher:
    def __init__(
        self,
        idle: float = DEFAULT_IDLE,
        longest: float = DEFAULT_MAX,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if idle <= 0 or longest < idle:
            raise ValueError(f"need 0 < idle <= longest, got idle={idle} longest={longest}")
        self.idle = idle
        self.longest = longest
        self._clock = clock
        self._keys: set[Hashable] = set()
        self._arrived = asyncio.Event()

    def trigger(self, key: Hashable) -> None:
        """One arrival; a key already in the open window is not a new arrival."""
        if key in self._keys:
            return
        self._keys.add(key)
        self._arrived.set()

    def __len__(self) -> int:
        return len(self._keys)

    async def wait(self, poll: float = 1.0) -> bool:
        """Until the window closes (True), or `poll` seconds without any arrival (False)."""
        try:
            if not await self._next_arrival(poll):
                return False
            deadline = self._clock() + self.longest
            while True:
                left = deadline - self._clock()
                if left <= 0 or not await self._next_arrival(min(self.idle, left)):
                    return True
        finally:
            self._keys.clear()

    async def _next_arrival(self, within: float) -> bool:
        try:
            async with asyncio.timeout(within):
                await self._arrived.wait()
        except TimeoutError:
            return False
        self._arrived.clear()
        return True
