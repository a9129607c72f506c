"""The simulator's notion of time: wall-clock seconds since the epoch, as a float.

Every timestamp the simulated clouds report and every delay they apply (boot,
termination, spot interruption) is read from one `Clock`. `SystemClock` follows
real time; `ManualClock` only moves when a test calls `advance`, which makes
state transitions with delays testable without sleeping.
"""

from __future__ import annotations

import datetime
import time
from typing import Protocol

# 2026-06-01T00:00:00Z: where a ManualClock starts unless told otherwise.
MANUAL_EPOCH = 1_780_272_000.0


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the Unix epoch."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()


class ManualClock:
    """A clock that stands still until `advance` is called."""

    def __init__(self, start: float = MANUAL_EPOCH) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self._now += seconds


def iso8601(timestamp: float) -> str:
    """RFC 3339 UTC with milliseconds, e.g. 2026-06-01T00:00:00.000Z."""
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
