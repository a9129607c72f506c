"""The attrs types read and write API server JSON faithfully."""

from __future__ import annotations

import copy
import datetime
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpuctl.api import (
    API_VERSION,
    FINALIZER,
    CapacityType,
    ConditionStatus,
    ConditionType,
    GPUNodeRequest,
    GPUProvider,
    GPUSpec,
    InstanceStatus,
    ObjectError,
    ObjectMeta,
    Phase,
    Placement,
    ProviderType,
    Region,
    get_condition,
    is_true,
    registration_timeout,
    remove_condition,
    set_condition,
)
from gpuctl.api.crdgen import crds
from gpuctl.api.gpunoderequest import GPU_TYPE_PATTERN, GPUNodeRequestSpec
from gpuctl.providers import catalog

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = sorted((ROOT / "manifests" / "samples").glob("*.yaml"))
KINDS: dict[str, type[GPUNodeRequest] | type[GPUProvider]] = {
    "GPUNodeRequest": GPUNodeRequest,
    "GPUProvider": GPUProvider,
}
SCHEMAS = {
    c["spec"]["names"]["kind"]: c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for c in crds()
}
T0 = datetime.datetime(2025, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)


def with_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Apply schema defaults the way the API server does (missing keys of present objects)."""
    if isinstance(value, dict) and "properties" in schema:
        out = dict(value)
        for name, prop in schema["properties"].items():
            if name not in out and "default" in prop:
                out[name] = copy.deepcopy(prop["default"])
            if name in out:
                out[name] = with_defaults(prop, out[name])
        return out
    if isinstance(value, list) and "items" in schema:
        return [with_defaults(schema["items"], v) for v in value]
    return value


def sample_objects() -> list[dict[str, Any]]:
    docs = [yaml.safe_load(p.read_text()) for p in SAMPLES]
    return [d for d in docs if d.get("kind") in KINDS]


@pytest.mark.parametrize("sample", sample_objects(), ids=lambda s: s["metadata"]["name"])
def test_samples_round_trip(sample: dict[str, Any]) -> None:
    kind = KINDS[sample["kind"]]
    parsed = kind.from_dict(sample)
    assert parsed.to_dict() == with_defaults(SCHEMAS[sample["kind"]], sample)
    assert kind.from_dict(parsed.to_dict()) == parsed


def test_samples_cover_what_the_brief_names() -> None:
    objects = {o["metadata"]["name"]: o for o in sample_objects()}
    h100 = GPUNodeRequest.from_dict(objects["h100x8-spot"])
    assert h100.spec.gpu == GPUSpec(type="H100-80GB", count=8)
    assert h100.spec.capacity_type == CapacityType.SPOT_OR_ON_DEMAND
    assert h100.spec.max_price_per_hour == Decimal(25)
    assert h100.spec.providers == ["lambda", "runpod"]
    assert {o["spec"]["type"] for o in objects.values() if o["kind"] == "GPUProvider"} == set(
        ProviderType
    )
    kustomization = yaml.safe_load((ROOT / "manifests/samples/kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in SAMPLES if p.name != "kustomization.yaml"
    )


def server_object() -> dict[str, Any]:
    """A GPUNodeRequest as the API server returns it, with fields gpuctl does not model."""
    return {
        "apiVersion": API_VERSION,
        "kind": "GPUNodeRequest",
        "metadata": {
            "name": "train",
            "uid": "0b0e5a3c-1111-2222-3333-444455556666",
            "generation": 3,
            "resourceVersion": "4711",
            "creationTimestamp": "2025-01-02T03:04:05Z",
            "deletionTimestamp": "2025-01-02T04:00:00Z",
            "finalizers": [FINALIZER],
            "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
        },
        "spec": {
            "gpu": {"type": "H100-80GB", "count": 8, "futureField": True},
            "capacityType": "spot",
            "placement": "cheapest",
        },
        "status": {
            "phase": "Provisioning",
            "attempt": 1,
            "interruptions": 0,
            "instance": {
                "id": "i-1",
                "publicIP": "192.0.2.1",
                "launchedAt": "2025-01-02T03:05:00Z",
            },
            "cost": {"accruedUSD": "0.50"},
            "conditions": [
                {
                    "type": "Launched",
                    "status": "True",
                    "reason": "Launched",
                    "message": "",
                    "lastTransitionTime": "2025-01-02T03:05:00Z",
                }
            ],
        },
    }


def test_from_dict_reads_metadata_and_ignores_unknown_fields() -> None:
    request = GPUNodeRequest.from_dict(server_object())
    meta = request.metadata
    assert request.name == meta.name == "train"
    assert meta.uid == "0b0e5a3c-1111-2222-3333-444455556666"
    assert (meta.generation, meta.resource_version) == (3, "4711")
    assert meta.deletion_timestamp == datetime.datetime(2025, 1, 2, 4, tzinfo=datetime.UTC)
    assert meta.finalizers == [FINALIZER]
    assert request.status.phase == Phase.PROVISIONING
    assert request.status.instance == InstanceStatus(
        id="i-1",
        public_ip="192.0.2.1",
        launched_at=datetime.datetime(2025, 1, 2, 3, 5, tzinfo=datetime.UTC),
    )
    assert request.status.cost is not None and request.status.cost.accrued_usd == Decimal("0.50")
    out = request.to_dict()
    assert "managedFields" not in out["metadata"]
    assert "futureField" not in out["spec"]["gpu"]


def test_to_dict_omits_none_and_empty_and_keeps_json_names() -> None:
    out = GPUNodeRequest.from_dict(server_object()).to_dict()
    assert out["spec"] == {
        "gpu": {"type": "H100-80GB", "count": 8},
        "capacityType": "spot",
        "placement": "cheapest",
    }
    assert out["status"]["instance"] == {
        "id": "i-1",
        "publicIP": "192.0.2.1",
        "launchedAt": "2025-01-02T03:05:00Z",
    }
    assert out["status"]["cost"] == {"accruedUSD": "0.50"}
    assert out["metadata"]["creationTimestamp"] == "2025-01-02T03:04:05Z"
    assert "labels" not in out["metadata"]


def test_status_to_dict_is_the_complete_status() -> None:
    request = GPUNodeRequest.from_dict(server_object())
    status = request.status_to_dict()
    assert status == GPUNodeRequest.from_dict(server_object()).to_dict()["status"]
    assert status["attempt"] == 1 and status["interruptions"] == 0
    fresh = GPUNodeRequest(
        metadata=ObjectMeta(name="x"),
        spec=GPUNodeRequestSpec(gpu=GPUSpec(type="A10-24GB", count=1)),
    )
    assert "status" not in fresh.to_dict()  # a new object has no status to write
    assert fresh.status_to_dict() == {"attempt": 0, "interruptions": 0}


def test_python_defaults_match_schema_defaults() -> None:
    spec = GPUNodeRequestSpec(gpu=GPUSpec(type="A10-24GB", count=1))
    assert spec.capacity_type == CapacityType.ON_DEMAND
    assert spec.placement == Placement.CHEAPEST
    assert spec.providers == [] and spec.regions == []


def test_provider_block_is_named_lambda_in_json() -> None:
    (sample,) = [o for o in sample_objects() if o["metadata"]["name"] == "lambda"]
    provider = GPUProvider.from_dict(sample)
    assert provider.spec.lambda_ is not None and provider.spec.lambda_.ssh_key_name == "gpuctl"
    assert provider.to_dict()["spec"]["lambda"] == {"sshKeyName": "gpuctl"}
    assert provider.spec.credentials_secret_ref.key == "apiKey"


def test_wrong_shape_and_wrong_kind_raise_object_error() -> None:
    bad = server_object()
    bad["spec"]["gpu"]["count"] = "eight"
    with pytest.raises(ObjectError):
        GPUNodeRequest.from_dict(bad)
    missing = server_object()
    del missing["spec"]["gpu"]
    with pytest.raises(ObjectError, match="gpu"):
        GPUNodeRequest.from_dict(missing)
    with pytest.raises(ObjectError, match="expected kind GPUProvider"):
        GPUProvider.from_dict(server_object())


def test_regions_match_the_catalog() -> None:
    assert sorted(Region) == catalog.regions()


def test_catalog_gpu_types_fit_the_schema_pattern() -> None:
    for name in catalog.gpu_types():
        assert re.fullmatch(GPU_TYPE_PATTERN, name), name


def test_registration_timeout_precedence() -> None:
    providers = {o["metadata"]["name"]: GPUProvider.from_dict(o) for o in sample_objects()
                 if o["kind"] == "GPUProvider"}  # fmt: skip
    request = GPUNodeRequestSpec(gpu=GPUSpec(type="A10-24GB", count=1))
    assert registration_timeout(request, providers["runpod"].spec) == datetime.timedelta(minutes=20)
    assert registration_timeout(request, providers["lambda"].spec) == datetime.timedelta(minutes=30)
    request.registration_timeout = "45m"
    assert registration_timeout(request, providers["lambda"].spec) == datetime.timedelta(minutes=45)


def test_set_condition_moves_transition_time_only_on_status_change() -> None:
    conditions: list[Any] = []
    assert set_condition(conditions, ConditionType.READY, False, "Booting", now=T0)
    later = T0 + datetime.timedelta(minutes=5)
    assert set_condition(conditions, ConditionType.READY, False, "Joining", "kubelet up", now=later)
    ready = get_condition(conditions, ConditionType.READY)
    assert ready is not None
    assert (ready.reason, ready.message, ready.last_transition_time) == (
        "Joining",
        "kubelet up",
        T0,
    )
    assert not set_condition(
        conditions, ConditionType.READY, False, "Joining", "kubelet up", now=later
    )
    assert set_condition(conditions, ConditionType.READY, True, "NodeReady", now=later)
    assert ready.status == ConditionStatus.TRUE and ready.last_transition_time == later
    assert is_true(conditions, ConditionType.READY)
    assert not is_true(conditions, ConditionType.LAUNCHED)
    assert remove_condition(conditions, ConditionType.READY)
    assert conditions == [] and not remove_condition(conditions, ConditionType.READY)
