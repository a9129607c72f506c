"""The EventCorrelator against client-go's own tests (tools/record/events_cache_test.go).

Each scenario of `TestEventCorrelator` and `TestEventSpamFilter` is replayed with the
same events and the same clock: client-go's `SimpleIntervalClock` moves forward by a
fixed interval at every reading, and per event it is read three times (the test, the
aggregator, the spam filter), as here.
"""

from __future__ import annotations

from typing import Any

import pytest

from gpuctl.runtime.events import (
    AGGREGATE_INTERVAL,
    AGGREGATE_MAX_EVENTS,
    SPAM_BURST,
    EventCorrelator,
    aggregate_by_reason,
    aggregate_message,
    spam_key,
)

JSON = dict[str, Any]


class IntervalClock:
    """client-go's testclocks.SimpleIntervalClock: each reading advances the time."""

    def __init__(self, interval: float) -> None:
        self.now = 1_000_000.0
        self.interval = interval

    def __call__(self) -> float:
        self.now += self.interval
        return self.now


def ref(kind: str, name: str, namespace: str) -> JSON:
    return {
        "kind": kind,
        "name": name,
        "namespace": namespace,
        "uid": "C934D34AFB20242",
        "apiVersion": "version",
        "fieldPath": "spec.containers{mycontainer}",
    }


def make_event(reason: str, message: str, involved: JSON) -> JSON:
    return {
        "metadata": {"name": f"{involved['name']}.1", "namespace": involved["namespace"]},
        "reason": reason,
        "message": message,
        "involvedObject": dict(involved),
        "source": {"component": "kubelet", "host": "kublet.node1"},
        "count": 1,
        "type": "Normal",
    }


def unique_events(n: int) -> list[JSON]:
    return [
        make_event(f"reason-{i}", f"message-{i}", ref("Pod", f"pod-{i}", f"ns-{i}"))
        for i in range(n)
    ]


def similar_events(n: int, template: JSON, prefix: str) -> list[JSON]:
    return [{**template, "message": f"{prefix}-{i}-{template['message']}"} for i in range(n)]


POD = ref("Pod", "my-pod", "my-ns")
FIRST = make_event("first", "i am first", POD)
DUPLICATE = make_event("duplicate", "me again", POD)
UNIQUE = make_event("unique", "snowflake", POD)
SIMILAR = make_event(
    "similar", "similar message", {**POD, "fieldPath": "spec.containers{container1}"}
)
AGGREGATE = make_event("similar", aggregate_message(SIMILAR), SIMILAR["involvedObject"])
OTHER_CONTAINER = {
    **SIMILAR,
    "involvedObject": {**SIMILAR["involvedObject"], "fieldPath": "spec.containers{container2}"},
}

# name: (previous events, new event, expected (reason, message, count) or None = skipped,
#        seconds per clock reading)
SCENARIOS: dict[str, tuple[list[JSON], JSON, tuple[str, str, int] | None, float]] = {
    "create-a-single-event": ([], FIRST, ("first", "i am first", 1), 5),
    "the-same-event-should-just-count": ([DUPLICATE], DUPLICATE, ("duplicate", "me again", 2), 5),
    "the-same-event-should-just-count-even-if-more-than-aggregate": (
        [DUPLICATE] * AGGREGATE_MAX_EVENTS,
        DUPLICATE,
        ("duplicate", "me again", AGGREGATE_MAX_EVENTS + 1),
        30,
    ),
    "the-same-event-is-spam-if-happens-too-frequently": (
        [DUPLICATE] * (SPAM_BURST + 1),
        DUPLICATE,
        None,
        1,
    ),
    "create-many-unique-events": (unique_events(30), UNIQUE, ("unique", "snowflake", 1), 5),
    "similar-events-should-aggregate-event": (
        similar_events(AGGREGATE_MAX_EVENTS - 1, SIMILAR, SIMILAR["message"]),
        SIMILAR,
        ("similar", AGGREGATE["message"], 1),
        5,
    ),
    "similar-events-many-times-should-count-the-aggregate": (
        similar_events(AGGREGATE_MAX_EVENTS, SIMILAR, SIMILAR["message"]),
        SIMILAR,
        ("similar", AGGREGATE["message"], 2),
        5,
    ),
    "events-from-different-containers-do-not-aggregate": (
        [OTHER_CONTAINER],
        SIMILAR,
        ("similar", "similar message", 1),
        5,
    ),
    "similar-events-whose-interval-is-greater-than-aggregate-interval-do-not-aggregate": (
        similar_events(AGGREGATE_MAX_EVENTS - 1, SIMILAR, SIMILAR["message"]),
        SIMILAR,
        ("similar", "similar message", 1),
        AGGREGATE_INTERVAL,
    ),
}


def stamp(event: JSON, clock: IntervalClock) -> JSON:
    now = str(clock())
    return {**event, "firstTimestamp": now, "lastTimestamp": now}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_event_correlator(scenario: str) -> None:
    """TestEventCorrelator."""
    previous, new, expected, interval = SCENARIOS[scenario]
    clock = IntervalClock(interval)
    correlator = EventCorrelator(clock)
    for event in previous:
        result = correlator.correlate(stamp(event, clock))
        if not result.skip:
            assert result.event is not None
            correlator.update_state(result.event)
    result = correlator.correlate(stamp(new, clock))
    if expected is None:
        assert result.skip
        return
    assert not result.skip and result.event is not None
    got = result.event
    assert (got["reason"], got["message"], got["count"]) == expected
    assert got["involvedObject"] == new["involvedObject"]
    assert got["source"] == new["source"] and got["type"] == new["type"]
    assert got["metadata"]["name"].startswith(new["involvedObject"]["name"] + ".")
    if expected[2] > 1:  # a repeat is a patch of the counted fields
        assert result.patch == {
            "count": expected[2],
            "lastTimestamp": got["lastTimestamp"],
            "message": expected[1],
        }
    else:
        assert result.patch is None


def _spam_key_with_reason(event: JSON) -> tuple[str, ...]:
    return (*spam_key(event), str(event.get("reason")))


@pytest.mark.parametrize(
    ("new", "custom_key", "skipped"),
    [
        # the default spam filter keys on the object only: another reason is spam too
        (make_event("duplicate", "me again", POD), False, True),
        # a key including the reason lets another reason through ...
        (make_event("duplicate", "me again", POD), True, False),
        # ... but not the same reason with another message
        (make_event("original", "me again", POD), True, True),
    ],
)
def test_event_spam_filter(new: JSON, custom_key: bool, skipped: bool) -> None:
    """TestEventSpamFilter (burst 1, one second per clock reading)."""
    clock = IntervalClock(1)
    correlator = EventCorrelator(
        clock, spam_burst=1, spam_key_func=_spam_key_with_reason if custom_key else spam_key
    )
    first = correlator.correlate(make_event("original", "i am first", POD))
    assert not first.skip and first.event is not None
    correlator.update_state(first.event)
    result = correlator.correlate(new)
    assert result.skip is skipped
    if not skipped:
        assert result.event is not None and result.event["reason"] == new["reason"]


def test_aggregate_key_ignores_only_the_message() -> None:
    """TestEventAggregatorByReasonFunc / ...MessageFunc."""
    event = make_event("end-of-world", "it was fun", POD)
    other_message = {**event, "message": "it was awful"}
    other_reason = {**event, "reason": "it-was-fun"}
    key, local = aggregate_by_reason(event)
    assert local == "it was fun"
    assert aggregate_by_reason(other_message)[0] == key
    assert aggregate_by_reason(other_reason)[0] != key
    assert aggregate_message(event) == "(combined from similar events): it was fun"


def test_spam_bucket_refills_one_event_per_five_minutes() -> None:
    clock = IntervalClock(0)
    correlator = EventCorrelator(clock)
    events = [make_event("r", f"m{i}", POD) for i in range(SPAM_BURST + 1)]
    results = [correlator.correlate(e) for e in events]
    assert [r.skip for r in results] == [False] * SPAM_BURST + [True]
    clock.now += 300  # one token back
    assert not correlator.correlate(make_event("r", "again", POD)).skip
    assert correlator.correlate(make_event("r", "and again", POD)).skip
