"""A pool's `spec.disruption`, read into plain values (defaults as the CRD's)."""

from __future__ import annotations

import datetime
from typing import Any

import attrs

from gpuctl.api.units import parse_duration
from gpuctl.controllers.pool.disruption.budgets import Budget

WHEN_EMPTY = "WhenEmpty"
WHEN_EMPTY_OR_UNDERUTILIZED = "WhenEmptyOrUnderutilized"
NEVER = "Never"


@attrs.frozen
class Policy:
    consolidation: str = WHEN_EMPTY_OR_UNDERUTILIZED
    consolidate_after: datetime.timedelta | None = datetime.timedelta(0)  # None: Never
    expire_after: datetime.timedelta | None = datetime.timedelta(hours=720)
    budgets: tuple[Budget, ...] = (Budget(),)
    startup_taints: tuple[str, ...] = ()  # template.startupTaints keys


def _duration(text: str | None, default: datetime.timedelta | None) -> datetime.timedelta | None:
    if text is None:
        return default
    return None if text == NEVER else parse_duration(text)


def read(pool: dict[str, Any]) -> Policy:
    """ValueError when a duration cannot be read (the CRD's patterns prevent it)."""
    spec = (pool.get("spec") or {}).get("disruption") or {}
    budgets = tuple(
        Budget(
            nodes=str(b.get("nodes", "10%")),
            schedule=b.get("schedule"),
            duration=parse_duration(b["duration"]) if b.get("duration") else None,
            reasons=tuple(b.get("reasons") or ()),
        )
        for b in spec.get("budgets") or []
    )
    return Policy(
        consolidation=spec.get("consolidationPolicy", WHEN_EMPTY_OR_UNDERUTILIZED),
        consolidate_after=_duration(spec.get("consolidateAfter"), datetime.timedelta(0)),
        expire_after=_duration(spec.get("expireAfter"), datetime.timedelta(hours=720)),
        budgets=budgets or (Budget(),),
        startup_taints=tuple(
            str(t.get("key", ""))
            for t in ((pool.get("spec") or {}).get("template") or {}).get("startupTaints") or []
        ),
    )
