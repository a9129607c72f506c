"""metav1.Condition helpers: lastTransitionTime moves only when the status does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from gpuctl.runtime.conditions import (
    get_condition,
    is_true,
    remove_condition,
    rfc3339,
    set_condition,
)

T0 = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def test_new_condition_gets_every_field() -> None:
    conditions: list[dict[str, Any]] = []
    assert set_condition(conditions, "Ready", "False", "Launching", "booting", 3, now=T0)
    assert conditions == [
        {
            "type": "Ready",
            "status": "False",
            "observedGeneration": 3,
            "lastTransitionTime": "2026-01-02T03:04:05Z",
            "reason": "Launching",
            "message": "booting",
        }
    ]


def test_same_status_keeps_transition_time_but_reports_other_changes() -> None:
    conditions: list[dict[str, Any]] = []
    set_condition(conditions, "Ready", "False", "Launching", "booting", 1, now=T0)
    assert not set_condition(conditions, "Ready", "False", "Launching", "booting", 1, now=T1)
    assert set_condition(conditions, "Ready", "False", "Joining", "kubelet starting", 2, now=T1)
    ready = get_condition(conditions, "Ready")
    assert ready is not None
    assert ready["lastTransitionTime"] == rfc3339(T0)
    assert (ready["reason"], ready["message"], ready["observedGeneration"]) == (
        "Joining",
        "kubelet starting",
        2,
    )


def test_status_change_moves_transition_time() -> None:
    conditions: list[dict[str, Any]] = []
    set_condition(conditions, "Ready", "False", "Launching", "", 1, now=T0)
    assert set_condition(conditions, "Ready", "True", "Joined", "node is ready", 1, now=T1)
    assert conditions[0]["lastTransitionTime"] == rfc3339(T1)
    assert is_true(conditions, "Ready")
    assert not is_true(conditions, "Launched")
    assert not is_true(None, "Ready")


def test_conditions_are_independent() -> None:
    conditions: list[dict[str, Any]] = []
    set_condition(conditions, "Launched", "True", "Running", "", 1, now=T0)
    set_condition(conditions, "Ready", "Unknown", "Waiting", "", 1, now=T1)
    assert [c["type"] for c in conditions] == ["Launched", "Ready"]
    assert conditions[0]["lastTransitionTime"] == rfc3339(T0)
    assert remove_condition(conditions, "Launched")
    assert not remove_condition(conditions, "Launched")
    assert [c["type"] for c in conditions] == ["Ready"]


def test_missing_transition_time_is_filled_in() -> None:
    conditions: list[dict[str, Any]] = [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Joined",
            "message": "",
            "observedGeneration": 1,
        }
    ]
    assert set_condition(conditions, "Ready", "True", "Joined", "", 1, now=T1)
    assert conditions[0]["lastTransitionTime"] == rfc3339(T1)


@pytest.mark.parametrize("reason", ["", "launching", "Not Ready", "Bad-Reason", "1Up"])
def test_reason_must_be_camel_case(reason: str) -> None:
    with pytest.raises(ValueError, match="CamelCase"):
        set_condition([], "Ready", "True", reason, "", 1)


def test_status_must_be_true_false_or_unknown() -> None:
    with pytest.raises(ValueError):
        set_condition([], "Ready", "true", "Joined", "", 1)  # type: ignore[arg-type]


def test_timestamps_are_utc_seconds() -> None:
    plus_two = T0.astimezone(timezone(timedelta(hours=2)))
    assert rfc3339(plus_two) == "2026-01-02T03:04:05Z"
    with pytest.raises(ValueError):
        rfc3339(datetime(2026, 1, 1))
