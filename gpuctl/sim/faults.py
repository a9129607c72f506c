"""Injected faults: the failures a client of a GPU cloud must survive.

`Faults.add(cloud, operation=None, path=None, kind=..., count=1)` arms a fault
for the next `count` matching requests (`count=None`: until `clear`). A request
matches when the cloud is the same, `operation` (the spec's operationId) is
None or equal, and `path` is None or an fnmatch pattern of the request path.
The oldest armed fault that matches fires first.

Kinds, and whether the operation itself runs:
- "500": the cloud's internal-error answer; the operation does not run.
- "429": the cloud's rate-limit answer with `Retry-After` (whole seconds,
  rounded up from `retry_after`); the operation does not run.
- "slow": the answer comes `seconds` (default SimConfig.slow_seconds) late.
- "timeout": the operation RUNS, then the server hangs `seconds` (default
  SimConfig.hang_seconds, bounded; cut short by stop) and drops the connection:
  the worst case for a client, which cannot know whether a launch happened.
- "drop": the operation RUNS, then the connection is dropped at once, nothing
  answered (a reset after the request went out): the client cannot know whether,
  e.g., a launch happened, and does not wait for a timeout to find out.
- "500-after": the operation RUNS, then the cloud answers its internal error, as a
  cloud that failed after acting (the client sees a plain 5xx).
- "malformed": the operation runs; the body is cut in half ("truncated", the
  default `variant`) or every JSON leaf gets the wrong type ("wrong-types").
"""

from __future__ import annotations

import fnmatch
from typing import Any

import attrs

KINDS = ("500", "429", "slow", "timeout", "drop", "500-after", "malformed")
# Kinds whose operation runs before the fault strikes: the cloud acted, the client
# does not learn of it.
ACT_THEN_FAIL = frozenset({"timeout", "drop", "500-after"})
VARIANTS = ("truncated", "wrong-types")


@attrs.define
class Fault:
    cloud: str
    kind: str
    operation: str | None = None
    path: str | None = None
    count: int | None = 1  # remaining firings; None = unlimited
    retry_after: float = 1.0
    seconds: float | None = None
    variant: str = "truncated"
    fired: int = 0

    def matches(self, cloud: str, operation: str | None, path: str) -> bool:
        if cloud != self.cloud or (self.count is not None and self.count <= 0):
            return False
        if self.operation is not None and self.operation != operation:
            return False
        return self.path is None or fnmatch.fnmatchcase(path, self.path)

    def as_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


class Faults:
    def __init__(self) -> None:
        self._armed: list[Fault] = []

    def add(  # noqa: PLR0917 - the documented positional signature
        self,
        cloud: str,
        operation: str | None = None,
        path: str | None = None,
        kind: str = "500",
        count: int | None = 1,
        retry_after: float = 1.0,
        *,
        seconds: float | None = None,
        variant: str = "truncated",
    ) -> Fault:
        if kind not in KINDS:
            raise ValueError(f"fault kind must be one of {KINDS}, not {kind!r}")
        if variant not in VARIANTS:
            raise ValueError(f"malformed variant must be one of {VARIANTS}")
        fault = Fault(cloud, kind, operation, path, count, retry_after, seconds, variant)
        self._armed.append(fault)
        return fault

    def take(self, cloud: str, operation: str | None, path: str) -> Fault | None:
        """The fault to apply to this request, consuming one firing."""
        for fault in self._armed:
            if fault.matches(cloud, operation, path):
                fault.fired += 1
                if fault.count is not None:
                    fault.count -= 1
                return fault
        return None

    def clear(self) -> None:
        self._armed.clear()

    def pending(self) -> list[Fault]:
        return [f for f in self._armed if f.count is None or f.count > 0]
