"""What each status write of a GPUNodeRequest changed, as the bench's watch saw it.

Every status write the API server accepts reaches a watch as one MODIFIED event (a
watch does not coalesce), so comparing each update's old and new `status` names what
that write changed. `changed(old, new)` returns a short label: the phase it happened
in, then the changed fields, e.g. `Joining: conditions[Registered], nodeName` or
`Ready: cost.accruedUsd, cost.updatedAt`; None when the status did not change (a
metadata-only update: finalizers, labels). Nested objects name their changed keys
(`instance.state`), conditions their type. `StatusChanges` counts the labels; the
lifecycle report prints the way up's and the way down's, most frequent first.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

JSON = dict[str, Any]
NESTED = ("instance", "cost", "offer")


def changed(old: JSON, new: JSON) -> str | None:
    """`phase: field, field` for a status that changed between `old` and `new`."""
    before, after = old.get("status") or {}, new.get("status") or {}
    if before == after:
        return None
    fields: list[str] = []
    for key in sorted(set(before) | set(after)):
        was, now = before.get(key), after.get(key)
        if was == now:
            continue
        if key in NESTED and isinstance(was, dict) and isinstance(now, dict):
            fields.extend(f"{key}.{sub}" for sub in _diff_keys(was, now))
        elif key == "conditions":
            fields.extend(f"conditions[{t}]" for t in _condition_changes(was, now))
        else:
            fields.append(key)
    phase = before.get("phase") or "new"
    return f"{phase}: {', '.join(fields)}"


def _diff_keys(was: JSON, now: JSON) -> list[str]:
    return sorted(k for k in set(was) | set(now) if was.get(k) != now.get(k))


def _condition_changes(was: object, now: object) -> list[str]:
    def by_type(conditions: object) -> dict[str, JSON]:
        items = conditions if isinstance(conditions, list) else []
        return {str(c.get("type")): c for c in items if isinstance(c, dict)}

    before, after = by_type(was), by_type(now)
    return sorted(t for t in set(before) | set(after) if before.get(t) != after.get(t))


class StatusChanges:
    """Counts of `changed()` labels; `since(mark)` gives what was counted after a mark."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def see(self, old: JSON, new: JSON) -> None:
        label = changed(old, new)
        if label is not None:
            self.counts[label] += 1

    def mark(self) -> Counter[str]:
        return Counter(self.counts)

    def since(self, mark: Counter[str]) -> dict[str, float]:
        grown = self.counts - mark
        return {k: float(v) for k, v in sorted(grown.items())}
