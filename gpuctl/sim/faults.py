"""Injected faults: the failures a client of a GPU cloud must survive.

Two ways to inject them, both per cloud:

- Armed faults: `Faults.add(cloud, operation=None, path=None, kind=..., count=1)` arms
  a fault for the next `count` matching requests (`count=None`: until `clear`). A
  request matches when the cloud is the same, `operation` (the spec's operationId) is
  None or equal, and `path` is None or an fnmatch pattern of the request path. The
  oldest armed fault that matches fires first.
- Fault rates: `Faults.set_rates(cloud, {"503": 0.05, "timeout": 0.02, ...},
  operations="*")` makes every request of that cloud's operation class (see
  `operation_class`: "read", "create", "delete", "other", or "*" for all) fail with
  each kind at that probability, drawn from an RNG seeded by (seed, cloud, class), so
  one seed gives one sequence of draws. An armed fault that matches wins over a rate.
  `rates()` lists them, `stats()` counts what fired.

Kinds, and whether the operation itself runs:
- "500": the cloud's internal-error answer; the operation does not run.
- "502", "504": a gateway's answer (an HTML page from the load balancer in front of
  the API, not the API's error format); the operation does not run.
- "503": the API's own "unavailable" answer in its error format; it does not run.
- "429": the cloud's rate-limit answer; the operation does not run. Armed faults carry
  `Retry-After` (whole seconds, rounded up from `retry_after`); rated ones carry it
  where the cloud documents one (`CloudApi.retry_after_documented`), else none.
- "reset": the connection is reset before the operation runs (a proxy that dropped
  the request; to the client indistinguishable from "drop").
- "timeout-before": the server hangs `seconds`, then drops the connection; the
  operation never ran.
- "slow": the answer comes `seconds` (default SimConfig.slow_seconds) late.
- "timeout": the operation RUNS, then the server hangs `seconds` (default
  SimConfig.hang_seconds, bounded; cut short by stop) and drops the connection:
  the worst case for a client, which cannot know whether a launch happened.
- "drop": the operation RUNS, then the connection is dropped at once, nothing
  answered (a reset after the request went out): the client cannot know whether,
  e.g., a launch happened, and does not wait for a timeout to find out.
- "500-after": the operation RUNS, then the cloud answers its internal error, as a
  cloud that failed after acting (the client sees a plain 5xx).
- "502-after", "504-after": the operation RUNS, then the gateway answers 502/504 (the
  backend acted, its answer was lost behind the load balancer).
- "malformed": the operation runs; the body is cut in half ("truncated", the
  default `variant`) or every JSON leaf gets the wrong type ("wrong-types").
"""

from __future__ import annotations

import fnmatch
import random
from collections import Counter
from collections.abc import Mapping
from typing import Any

import attrs

KINDS = (
    "500",
    "502",
    "503",
    "504",
    "429",
    "reset",
    "timeout-before",
    "slow",
    "timeout",
    "drop",
    "500-after",
    "502-after",
    "504-after",
    "malformed",
)
# Kinds whose operation runs before the fault strikes: the cloud acted, the client
# does not learn of it.
ACT_THEN_FAIL = frozenset({"timeout", "drop", "500-after", "502-after", "504-after"})
# Kinds that end with no answer at all (the connection is dropped).
NO_ANSWER = frozenset({"timeout", "drop", "reset", "timeout-before"})
# Kinds answered by a gateway in front of the API rather than by the API itself.
GATEWAY = frozenset({"502", "504", "502-after", "504-after"})
VARIANTS = ("truncated", "wrong-types")
OPERATION_CLASSES = ("read", "create", "delete", "other")


def operation_class(method: str, operation: str | None) -> str:
    """ "create" (a launch, a create), "delete" (a terminate, a delete), "read" (GET)
    or "other", from the spec's operationId and the HTTP method: the same words name
    these operations in every cloud's spec (launchInstance, CreatePod,
    machines-create; terminateInstance, DeletePod, machines-delete)."""
    name = (operation or "").lower()
    method = method.upper()
    if method not in ("GET", "HEAD") and ("launch" in name or "create" in name):
        return "create"
    if method == "DELETE" or "terminate" in name or "delete" in name:
        return "delete"
    if method in ("GET", "HEAD"):
        return "read"
    return "other"


@attrs.define
class Fault:
    cloud: str
    kind: str
    operation: str | None = None
    path: str | None = None
    count: int | None = 1  # remaining firings; None = unlimited
    retry_after: float | None = 1.0  # None: no Retry-After header
    seconds: float | None = None
    variant: str = "truncated"
    fired: int = 0
    rated: bool = False  # drawn from a rate, not armed

    def matches(self, cloud: str, operation: str | None, path: str) -> bool:
        if cloud != self.cloud or (self.count is not None and self.count <= 0):
            return False
        if self.operation is not None and self.operation != operation:
            return False
        return self.path is None or fnmatch.fnmatchcase(path, self.path)

    def as_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.define
class FaultRates:
    """Probabilities per kind for one cloud and operation class."""

    cloud: str
    operations: str  # an operation class or "*"
    rates: dict[str, float]
    seconds: float | None = None  # hang of timeouts, delay of slow answers
    retry_after: float = 1.0  # Retry-After of 429s where the cloud documents one
    _rng: random.Random = attrs.field(factory=random.Random, repr=False)

    def draw(self) -> str | None:
        roll = self._rng.random()
        for kind, probability in self.rates.items():
            if roll < probability:
                return kind
            roll -= probability
        return None

    def as_json(self) -> dict[str, Any]:
        return {
            "cloud": self.cloud,
            "operations": self.operations,
            "rates": dict(self.rates),
            "seconds": self.seconds,
            "retry_after": self.retry_after,
        }


class Faults:
    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._armed: list[Fault] = []
        self._rates: dict[tuple[str, str], FaultRates] = {}
        self._fired: Counter[tuple[str, str, str]] = Counter()  # (cloud, class, kind)

    def add(  # noqa: PLR0917 - the documented positional signature
        self,
        cloud: str,
        operation: str | None = None,
        path: str | None = None,
        kind: str = "500",
        count: int | None = 1,
        retry_after: float | None = 1.0,
        *,
        seconds: float | None = None,
        variant: str = "truncated",
    ) -> Fault:
        _check_kind(kind)
        if variant not in VARIANTS:
            raise ValueError(f"malformed variant must be one of {VARIANTS}")
        fault = Fault(cloud, kind, operation, path, count, retry_after, seconds, variant)
        self._armed.append(fault)
        return fault

    def set_rates(
        self,
        cloud: str,
        rates: Mapping[str, float],
        operations: str = "*",
        *,
        seconds: float | None = None,
        retry_after: float = 1.0,
        seed: int | None = None,
    ) -> FaultRates:
        """Every request of `cloud` in class `operations` fails with each kind at its
        probability (replacing that cloud and class's rates; {} removes them). A class's
        own rates win over "*". `seed` (default: the Faults' seed) seeds the draws."""
        if operations != "*" and operations not in OPERATION_CLASSES:
            raise ValueError(f"operations must be '*' or one of {OPERATION_CLASSES}")
        for kind, probability in rates.items():
            _check_kind(kind)
            if not 0.0 <= float(probability) <= 1.0:
                raise ValueError(f"rate of {kind!r} must be within [0, 1]")
        if sum(rates.values()) > 1.0 + 1e-9:
            raise ValueError("fault rates add up to more than 1")
        key = (cloud, operations)
        seed = self.seed if seed is None else seed
        entry = FaultRates(
            cloud,
            operations,
            {k: float(v) for k, v in rates.items()},
            seconds,
            retry_after,
            random.Random(f"{seed}/{cloud}/{operations}/faults"),
        )
        if rates:
            self._rates[key] = entry
        else:
            self._rates.pop(key, None)
        return entry

    def take(
        self, cloud: str, operation: str | None, path: str, method: str = "GET"
    ) -> Fault | None:
        """The fault to apply to this request, consuming one firing."""
        kind_class = operation_class(method, operation)
        for fault in self._armed:
            if fault.matches(cloud, operation, path):
                fault.fired += 1
                if fault.count is not None:
                    fault.count -= 1
                self._fired[(cloud, kind_class, fault.kind)] += 1
                return fault
        rates = self._rates.get((cloud, kind_class)) or self._rates.get((cloud, "*"))
        if rates is None or (kind := rates.draw()) is None:
            return None
        self._fired[(cloud, kind_class, kind)] += 1
        return Fault(
            cloud,
            kind,
            operation,
            path,
            count=0,
            retry_after=rates.retry_after,
            seconds=rates.seconds,
            fired=1,
            rated=True,
        )

    def clear(self) -> None:
        """Disarm every fault and remove every rate."""
        self._armed.clear()
        self._rates.clear()

    def pending(self) -> list[Fault]:
        return [f for f in self._armed if f.count is None or f.count > 0]

    def rates(self) -> list[FaultRates]:
        return list(self._rates.values())

    def stats(self) -> list[dict[str, Any]]:
        """How often each kind fired, per cloud and operation class."""
        return [
            {"cloud": cloud, "operations": kind_class, "kind": kind, "fired": count}
            for (cloud, kind_class, kind), count in sorted(self._fired.items())
        ]


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"fault kind must be one of {KINDS}, not {kind!r}")
