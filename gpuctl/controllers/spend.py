"""Spend per request, provider and GPU type: the ledger plus the requests still running.

One computation shared by `gpuctl cost` and the dashboard's Cost page, so both show the
same figures. Two sources, each request counted once:
- finished requests: the cost ledger (`gpuctl.controllers.ledger`), one entry per
  request whose machine was terminated;
- requests still in the cluster (whose uid is not in the ledger yet) and ever given
  an offer: `status.cost.accruedUSD` plus, while an instance is recorded, the
  offer's price times the time since `status.cost.updatedAt` — the operator's own
  arithmetic (`ledger.final_cost`), so the figure is current to `now`.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

import attrs

from gpuctl.api import GPUNodeRequest, ObjectError
from gpuctl.controllers.ledger import Entry, entry_of

JSON = dict[str, Any]


@attrs.frozen
class Spend:
    """One request's cost: a ledger entry, or a running request's figure so far."""

    entry: Entry
    running: bool

    @property
    def until(self) -> datetime.datetime | None:
        return None if self.running else self.entry.until


@attrs.frozen
class Group:
    key: str
    requests: int
    accrued_usd: Decimal


@attrs.frozen
class Report:
    now: datetime.datetime
    cutoff: datetime.datetime | None
    spends: tuple[Spend, ...]

    @property
    def total(self) -> Decimal:
        return sum((s.entry.accrued_usd for s in self.spends), Decimal("0"))

    def by(self, key: str) -> list[Group]:
        """Spend grouped by an Entry attribute, most expensive first."""
        groups: dict[str, list[Spend]] = {}
        for spend in self.spends:
            groups.setdefault(str(getattr(spend.entry, key)), []).append(spend)
        found = [
            Group(k, len(v), sum((s.entry.accrued_usd for s in v), Decimal("0")))
            for k, v in groups.items()
        ]
        return sorted(found, key=lambda g: (-g.accrued_usd, g.key))


def build_report(
    requests: Iterable[JSON],
    ledger: Sequence[Entry],
    now: datetime.datetime,
    cutoff: datetime.datetime | None = None,
) -> Report:
    """Every request's spend, each once: the ledger's entry wins over the live object."""
    recorded = {e.uid for e in ledger}
    spends = [Spend(e, running=False) for e in ledger if cutoff is None or e.until >= cutoff]
    for obj in requests:
        try:
            request = GPUNodeRequest.from_dict(obj)
        except ObjectError:
            continue
        if request.metadata.uid in recorded:
            continue  # terminated and recorded; the finalizer is about to go
        entry = entry_of(request, request.status, now)
        if entry is not None:
            spends.append(Spend(entry, running=True))
    spends.sort(key=lambda s: (-s.entry.accrued_usd, s.entry.request, s.entry.uid))
    return Report(now, cutoff, tuple(spends))
