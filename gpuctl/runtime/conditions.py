"""metav1.Condition helpers on plain dicts (the `status.conditions` list of an object).

A condition is `{"type", "status", "observedGeneration", "lastTransitionTime",
"reason", "message"}` (Kubernetes API conventions):
- `status` is "True", "False" or "Unknown".
- `lastTransitionTime` changes ONLY when `status` changes; a new reason, message or
  observedGeneration with the same status keeps the old time.
- `reason` is a CamelCase identifier (programmatic, like `Launching`), `message` is for
  humans.

`set_condition` edits the list in place and says whether anything changed, so callers
can skip a status write when nothing did. Never pass a list taken from the informer
cache: copy the status first (cached objects are shared).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Literal

Condition = dict[str, Any]
ConditionStatus = Literal["True", "False", "Unknown"]

_STATUSES = frozenset({"True", "False", "Unknown"})
_CAMEL_CASE = re.compile(r"^[A-Z][A-Za-z0-9]*$")
_MAX_MESSAGE = 32768  # metav1.Condition's validation limit


def rfc3339(moment: datetime) -> str:
    """Kubernetes' metav1.Time format: UTC, whole seconds, `Z` suffix."""
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# Positional in the order of metav1.Condition's fields, so call sites read like the API.
def set_condition(  # noqa: PLR0917
    conditions: list[Condition],
    type: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    observed_generation: int,
    *,
    now: datetime | None = None,
) -> bool:
    """Add or update condition `type`; True if the list changed."""
    if status not in _STATUSES:
        raise ValueError(f"condition status must be True, False or Unknown, not {status!r}")
    if not _CAMEL_CASE.match(reason):
        raise ValueError(f"condition reason must be CamelCase, not {reason!r}")
    message = message[:_MAX_MESSAGE]
    current = get_condition(conditions, type)
    if current is None:
        conditions.append(
            {
                "type": type,
                "status": status,
                "observedGeneration": observed_generation,
                "lastTransitionTime": rfc3339(now or datetime.now(UTC)),
                "reason": reason,
                "message": message,
            }
        )
        return True
    wanted = {
        "status": status,
        "observedGeneration": observed_generation,
        "reason": reason,
        "message": message,
    }
    if all(current.get(k) == v for k, v in wanted.items()) and "lastTransitionTime" in current:
        return False
    if current.get("status") != status or "lastTransitionTime" not in current:
        current["lastTransitionTime"] = rfc3339(now or datetime.now(UTC))
    current.update(wanted)
    return True


def get_condition(conditions: list[Condition] | None, type: str) -> Condition | None:
    for condition in conditions or ():
        if condition.get("type") == type:
            return condition
    return None


def is_true(conditions: list[Condition] | None, type: str) -> bool:
    condition = get_condition(conditions, type)
    return condition is not None and condition.get("status") == "True"


def remove_condition(conditions: list[Condition], type: str) -> bool:
    """Drop condition `type`; True if it was there."""
    for i, condition in enumerate(conditions):
        if condition.get("type") == type:
            del conditions[i]
            return True
    return False
