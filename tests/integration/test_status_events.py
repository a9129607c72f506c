"""Status writer, conditions and events against the real API server.

Status tests use a throwaway CRD with a status subresource, made here (the gpuctl CRDs
live elsewhere); its schema types `conditions` like metav1.Condition, so the server
validates what `set_condition` produces.
"""

from __future__ import annotations

import asyncio
import copy
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s
from prometheus_client import CollectorRegistry

from gpuctl.runtime.client import ApiError, Client, is_conflict, is_not_found
from gpuctl.runtime.conditions import get_condition, rfc3339, set_condition
from gpuctl.runtime.events import MAX_MESSAGE, EventRecorder
from gpuctl.runtime.resources import (
    CONFIGMAPS,
    CUSTOM_RESOURCE_DEFINITIONS,
    EVENTS,
    NAMESPACES,
    Resource,
)
from gpuctl.runtime.status import StatusWriter
from tests.conftest import ClientAs

GROUP = "runtime-test.gpuctl.dev"
WIDGETS = Resource(GROUP, "v1", "widgets", "Widget", namespaced=True)

_CONDITION = {
    "type": "object",
    "required": ["type", "status", "lastTransitionTime", "reason", "message"],
    "properties": {
        "type": {"type": "string"},
        "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
        "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
        "lastTransitionTime": {"type": "string", "format": "date-time"},
        "reason": {
            "type": "string",
            "maxLength": 1024,
            "minLength": 1,
            "pattern": "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        },
        "message": {"type": "string", "maxLength": 32768},
    },
}
CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"widgets.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            },
                            "status": {
                                "type": "object",
                                "properties": {
                                    "phase": {"type": "string"},
                                    "observedGeneration": {"type": "integer"},
                                    "conditions": {"type": "array", "items": _CONDITION},
                                },
                            },
                        },
                    }
                },
            }
        ],
    },
}


def counted(registry: CollectorRegistry, name: str, **labels: str) -> float:
    total = 0.0
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def api(kube: k8s.ApiClient, registry: CollectorRegistry) -> Client:
    return Client(kube, registry=registry)


@pytest.fixture(scope="module")
async def widgets_crd(kube: k8s.ApiClient) -> AsyncIterator[Resource]:
    admin = Client(kube, registry=CollectorRegistry())
    await admin.create(CUSTOM_RESOURCE_DEFINITIONS, copy.deepcopy(CRD))
    try:
        async with asyncio.timeout(30):
            while True:  # established, and served by discovery
                crd = await admin.get(CUSTOM_RESOURCE_DEFINITIONS, CRD["metadata"]["name"])
                conditions = (crd.get("status") or {}).get("conditions")
                if get_condition(conditions, "Established") and all(
                    c["status"] == "True" for c in conditions if c["type"] == "Established"
                ):
                    try:
                        await admin.list(WIDGETS, namespace="default")
                        break
                    except ApiError as err:  # not served yet / cache initializing
                        if not (is_not_found(err) or err.status == 429):
                            raise
                await asyncio.sleep(0.1)
        yield WIDGETS
    finally:
        await admin.delete(CUSTOM_RESOURCE_DEFINITIONS, CRD["metadata"]["name"])


async def new_widget(api: Client, namespace: str) -> dict[str, Any]:
    body = {
        "apiVersion": WIDGETS.api_version,
        "kind": "Widget",
        "metadata": {"name": f"w-{secrets.token_hex(3)}", "namespace": namespace},
        "spec": {"size": 1},
    }
    return await api.create(WIDGETS, body)


# -- status --------------------------------------------------------------------------


async def test_status_is_written_only_when_it_changed(
    api: Client, registry: CollectorRegistry, namespace: str, widgets_crd: Resource
) -> None:
    writer = StatusWriter(api, registry=registry)
    widget = await new_widget(api, namespace)
    calls = counted(registry, "gpuctl_kube_api_requests_total")

    assert await writer.update_status(WIDGETS, widget, {}) is None  # none == empty
    status = {"phase": "Pending", "observedGeneration": 1}
    written = await writer.update_status(WIDGETS, widget, status)
    assert written is not None and written["status"] == status
    assert written["spec"] == {"size": 1}
    assert int(written["metadata"]["resourceVersion"]) > int(widget["metadata"]["resourceVersion"])
    assert await writer.update_status(WIDGETS, written, copy.deepcopy(status)) is None

    assert counted(registry, "gpuctl_kube_api_requests_total") - calls == 1
    assert counted(registry, "gpuctl_status_writes_total", resource=f"widgets.{GROUP}") == 1
    fresh = await api.get(WIDGETS, widget["metadata"]["name"], namespace=namespace)
    assert fresh["status"] == status
    # What our last write returned is known fresh; the copy before it, or after
    # someone else's write, is not.
    assert writer.written_last(WIDGETS, fresh) and writer.written_last(WIDGETS, written)
    assert not writer.written_last(WIDGETS, widget)
    assert writer.behind(WIDGETS, widget) and not writer.behind(WIDGETS, written)
    labelled = await api.patch(
        WIDGETS, widget["metadata"]["name"], {"metadata": {"labels": {"a": "b"}}},
        namespace=namespace,
    )  # fmt: skip
    assert not writer.written_last(WIDGETS, labelled) and not writer.behind(WIDGETS, labelled)


async def test_stale_resource_version_is_a_conflict_not_a_retry(
    api: Client, registry: CollectorRegistry, namespace: str, widgets_crd: Resource
) -> None:
    writer = StatusWriter(api, registry=registry)
    widget = await new_widget(api, namespace)
    await api.patch(WIDGETS, widget["metadata"]["name"], {"spec": {"size": 2}}, namespace=namespace)
    updates = counted(registry, "gpuctl_kube_api_requests_total", verb="update")
    with pytest.raises(ApiError) as stale:
        await writer.update_status(WIDGETS, widget, {"phase": "Running"})
    assert is_conflict(stale.value)
    assert counted(registry, "gpuctl_kube_api_requests_total", verb="update") - updates == 1
    assert counted(registry, "gpuctl_status_writes_total") == 0
    fresh = await api.get(WIDGETS, widget["metadata"]["name"], namespace=namespace)
    assert "status" not in fresh
    unversioned = copy.deepcopy(fresh)
    del unversioned["metadata"]["resourceVersion"]
    with pytest.raises(ValueError):
        await writer.update_status(WIDGETS, unversioned, {"phase": "Running"})


async def test_conditions_round_trip_and_keep_transition_time(
    api: Client, registry: CollectorRegistry, namespace: str, widgets_crd: Resource
) -> None:
    writer = StatusWriter(api, registry=registry)
    widget = await new_widget(api, namespace)
    t0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    status: dict[str, Any] = {"conditions": []}
    set_condition(status["conditions"], "Ready", "False", "Launching", "booting", 1, now=t0)
    widget = await writer.update_status(WIDGETS, widget, status)
    assert widget is not None

    status = copy.deepcopy(widget["status"])
    later = t0 + timedelta(minutes=3)
    assert set_condition(
        status["conditions"], "Ready", "False", "Joining", "kubelet up", 1, now=later
    )
    widget = await writer.update_status(WIDGETS, widget, status)
    assert widget is not None
    ready = get_condition(widget["status"]["conditions"], "Ready")
    assert ready is not None and ready["lastTransitionTime"] == rfc3339(t0)
    assert ready["reason"] == "Joining"

    status = copy.deepcopy(widget["status"])
    assert not set_condition(status["conditions"], "Ready", "False", "Joining", "kubelet up", 1)
    assert await writer.update_status(WIDGETS, widget, status) is None

    done = t0 + timedelta(minutes=5)
    set_condition(status["conditions"], "Ready", "True", "Joined", "node ready", 1, now=done)
    widget = await writer.update_status(WIDGETS, widget, status)
    assert widget is not None
    ready = get_condition(widget["status"]["conditions"], "Ready")
    assert ready is not None and ready["lastTransitionTime"] == rfc3339(done)
    assert counted(registry, "gpuctl_status_writes_total") == 3


# -- events --------------------------------------------------------------------------


async def events_about(api: Client, obj: dict[str, Any], namespace: str) -> list[dict[str, Any]]:
    uid = obj["metadata"]["uid"]
    listed = await api.list_all(
        EVENTS, namespace=namespace, field_selector=f"involvedObject.uid={uid}"
    )
    return listed.items


async def test_repeated_events_are_aggregated(api: Client, namespace: str) -> None:
    recorder = EventRecorder(api, component="gpuctl-test")
    subject = await api.create(
        CONFIGMAPS, {"metadata": {"name": "subject", "namespace": namespace}}
    )
    for _ in range(3):
        await recorder.record(subject, "Warning", "LaunchFailed", "no capacity in us-east-1")
    await recorder.record(subject, "Normal", "Launched", "instance i-123 running")

    events = await events_about(api, subject, namespace)
    by_reason = {e["reason"]: e for e in events}
    assert len(events) == 2, events
    failed = by_reason["LaunchFailed"]
    assert failed["count"] == 3 and failed["type"] == "Warning"
    assert failed["message"] == "no capacity in us-east-1"
    assert failed["source"] == {"component": "gpuctl-test"}
    assert failed["firstTimestamp"] <= failed["lastTimestamp"]
    involved = failed["involvedObject"]
    assert involved["kind"] == "ConfigMap" and involved["apiVersion"] == "v1"
    assert involved["name"] == "subject" and involved["namespace"] == namespace
    assert involved["uid"] == subject["metadata"]["uid"]
    assert involved["resourceVersion"] == subject["metadata"]["resourceVersion"]
    assert by_reason["Launched"]["count"] == 1
    assert recorder.failures == 0


async def test_concurrent_repeats_aggregate_too(api: Client, namespace: str) -> None:
    recorder = EventRecorder(api)
    subject = await api.create(CONFIGMAPS, {"metadata": {"name": "busy", "namespace": namespace}})
    await asyncio.gather(*(recorder.record(subject, "Normal", "Tick", "t") for _ in range(5)))
    [event] = await events_about(api, subject, namespace)
    assert event["count"] == 5


async def test_cluster_scoped_objects_get_events_in_default(api: Client) -> None:
    recorder = EventRecorder(api)
    name = f"ev-{secrets.token_hex(4)}"
    target = await api.create(NAMESPACES, {"metadata": {"name": name}})
    try:
        long_message = "x" * (MAX_MESSAGE + 500)
        await recorder.record(target, "Normal", "Observed", long_message)
        [event] = await events_about(api, target, "default")
        assert event["involvedObject"]["kind"] == "Namespace"
        assert "namespace" not in event["involvedObject"]
        assert len(event["message"]) == MAX_MESSAGE
    finally:
        await api.delete(NAMESPACES, name)


async def test_an_event_deleted_meanwhile_is_recreated(api: Client, namespace: str) -> None:
    recorder = EventRecorder(api)
    subject = await api.create(CONFIGMAPS, {"metadata": {"name": "gone", "namespace": namespace}})
    await recorder.record(subject, "Normal", "Seen", "once")
    [first] = await events_about(api, subject, namespace)
    await api.delete(EVENTS, first["metadata"]["name"], namespace=namespace)
    await recorder.record(subject, "Normal", "Seen", "once")
    [again] = await events_about(api, subject, namespace)
    # client-go's recordEvent: the patch of the repeat meets a 404, so the Event is
    # created again under its remembered name, with the repeat's count.
    assert again["count"] == 2 and again["metadata"]["name"] == first["metadata"]["name"]
    assert recorder.failures == 0


async def test_similar_events_are_combined_and_spam_is_dropped(api: Client, namespace: str) -> None:
    """client-go's EventCorrelator on the real API server: ten different messages of
    one reason become one combined Event that counts further ones; past the burst of
    25 Events about one object, the spam filter drops them (no API call)."""
    recorder = EventRecorder(api)
    subject = await api.create(CONFIGMAPS, {"metadata": {"name": "chatty", "namespace": namespace}})
    for n in range(12):
        await recorder.record(subject, "Warning", "NoOffer", f"nothing fits ({n})")
    events = await events_about(api, subject, namespace)
    combined = [e for e in events if e["message"].startswith("(combined from similar events)")]
    assert len(events) == 10 and len(combined) == 1, events
    assert combined[0]["count"] == 3  # the 10th, 11th and 12th message
    for n in range(20):
        await recorder.record(subject, "Normal", "Tick", f"t{n}")
    assert recorder.skipped == 32 - 25
    assert recorder.created + recorder.patched == 25


async def test_recording_never_raises(client_as: ClientAs, namespace: str, api: Client) -> None:
    subject = await api.create(CONFIGMAPS, {"metadata": {"name": "s", "namespace": namespace}})
    nobody = Client(await client_as("cannot-write-events"), registry=CollectorRegistry())
    recorder = EventRecorder(nobody)
    await recorder.record(subject, "Warning", "Failed", "forbidden, and that is fine")
    assert recorder.failures == 1
    assert await events_about(api, subject, namespace) == []
