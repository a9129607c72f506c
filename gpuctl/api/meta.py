"""Object metadata and `metav1.Condition`, plus the condition helpers controllers use.

`ObjectMeta` keeps only what controllers read (name, uid, generation,
resourceVersion, timestamps, finalizers, labels, annotations); every other
metadata key is dropped on read. `Condition` has exactly the shape and
validation of `metav1.Condition`. `set_condition` follows apimachinery's
`meta.SetStatusCondition`: `lastTransitionTime` changes only when `status` does.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

import attrs

from gpuctl.api.constants import ConditionStatus
from gpuctl.api.schema import doc

# Validation patterns shared by both kinds (the same as apimachinery's).
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# A qualified name: optional DNS-subdomain prefix and '/', then a name of <= 63 chars.
QUALIFIED_NAME_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
CONDITION_TYPE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
CONDITION_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
MAX_CONDITIONS = 16


@attrs.define(kw_only=True)
class ObjectMeta:
    """The part of `metadata` that gpuctl reads and writes."""

    name: str = attrs.field(metadata=doc("Object name, unique in the cluster."))
    uid: str | None = attrs.field(default=None, metadata=doc("Unique id set by the server."))
    generation: int | None = attrs.field(
        default=None, metadata=doc("Bumped by the server on every spec change.")
    )
    resource_version: str | None = attrs.field(
        default=None, metadata=doc("Opaque version for optimistic concurrency.")
    )
    creation_timestamp: datetime.datetime | None = attrs.field(
        default=None, metadata=doc("When the object was created.")
    )
    deletion_timestamp: datetime.datetime | None = attrs.field(
        default=None, metadata=doc("Set when deletion was requested; finalizers still run.")
    )
    finalizers: list[str] = attrs.field(
        factory=list, metadata=doc("Finalizers that must be removed before deletion completes.")
    )
    labels: dict[str, str] = attrs.field(factory=dict, metadata=doc("Labels."))
    annotations: dict[str, str] = attrs.field(factory=dict, metadata=doc("Annotations."))


@attrs.define(kw_only=True)
class Condition:
    """One aspect of the object's state (the shape of metav1.Condition)."""

    type: str = attrs.field(
        metadata=doc(
            "Type of condition in CamelCase, e.g. Ready or Launched.",
            max_length=316,
            pattern=CONDITION_TYPE_PATTERN,
        )
    )
    status: ConditionStatus = attrs.field(
        metadata=doc("Status of the condition: True, False or Unknown.")
    )
    observed_generation: int | None = attrs.field(
        default=None,
        metadata=doc(
            "The .metadata.generation the condition was set from; if older than the "
            "object's generation, the condition is out of date.",
            minimum=0,
        ),
    )
    last_transition_time: datetime.datetime = attrs.field(
        metadata=doc("Last time the condition's status changed.")
    )
    reason: str = attrs.field(
        metadata=doc(
            "Programmatic identifier (CamelCase) for the condition's last transition.",
            min_length=1,
            max_length=1024,
            pattern=CONDITION_REASON_PATTERN,
        )
    )
    message: str = attrs.field(
        metadata=doc("Human-readable details about the transition; may be empty.", max_length=32768)
    )


def get_condition(conditions: Sequence[Condition], type_: str) -> Condition | None:
    """The condition of that type, or None."""
    return next((c for c in conditions if c.type == type_), None)


def is_true(conditions: Sequence[Condition], type_: str) -> bool:
    found = get_condition(conditions, type_)
    return found is not None and found.status == ConditionStatus.TRUE


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: ConditionStatus | bool,
    reason: str,
    message: str = "",
    *,
    observed_generation: int | None = None,
    now: datetime.datetime | None = None,
) -> bool:
    """Add or update a condition in place; True if anything changed.

    `lastTransitionTime` is set to `now` only when the status changes (or the
    condition is new), so it tells how long the current status has held.
    """
    if isinstance(status, bool):
        status = ConditionStatus.TRUE if status else ConditionStatus.FALSE
    now = now or datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    existing = get_condition(conditions, type_)
    if existing is None:
        conditions.append(
            Condition(
                type=str(type_),
                status=status,
                observed_generation=observed_generation,
                last_transition_time=now,
                reason=reason,
                message=message,
            )
        )
        return True
    before = attrs.evolve(existing)
    if existing.status != status:
        existing.status = status
        existing.last_transition_time = now
    existing.reason = reason
    existing.message = message
    existing.observed_generation = observed_generation
    return existing != before


def remove_condition(conditions: list[Condition], type_: str) -> bool:
    """Drop the condition of that type in place; True if there was one."""
    kept = [c for c in conditions if c.type != type_]
    removed = len(kept) != len(conditions)
    conditions[:] = kept
    return removed
