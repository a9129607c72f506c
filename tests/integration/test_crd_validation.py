"""The generated CRDs, installed in the real API server, accept what they should and
reject what they should, naming the offending field."""

from __future__ import annotations

import copy
import re
import secrets
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from gpuctl.api import (
    GNP_PLURAL,
    GNR_PLURAL,
    GPR_PLURAL,
    GROUP,
    VERSION,
    CapacityType,
    ConditionType,
    CostStatus,
    FailedOffer,
    GPUNodePool,
    GPUNodeRequest,
    GPUProvider,
    InstanceStatus,
    OfferStatus,
    Phase,
    set_condition,
)
from gpuctl.api.install import install_crds

ROOT = Path(__file__).resolve().parents[2]
INVALID = sorted((ROOT / "tests" / "data" / "invalid").glob("*.yaml"))
SAMPLES = ROOT / "manifests" / "samples"
PLURALS = {"GPUNodeRequest": GNR_PLURAL, "GPUProvider": GPR_PLURAL, "GPUNodePool": GNP_PLURAL}
KINDS: dict[str, type[GPUNodeRequest] | type[GPUProvider] | type[GPUNodePool]] = {
    "GPUNodeRequest": GPUNodeRequest,
    "GPUProvider": GPUProvider,
    "GPUNodePool": GPUNodePool,
}


@pytest.fixture(scope="module")
async def custom(kube: client.ApiClient) -> AsyncIterator[client.CustomObjectsApi]:
    await install_crds(kube)
    yield client.CustomObjectsApi(kube)


def expectation(path: Path) -> str:
    match = re.search(r"^# expect: (.+)$", path.read_text(), re.MULTILINE)
    assert match, f"{path.name} has no '# expect: <field path>' line"
    return match.group(1).strip()


def sample_objects() -> list[dict[str, Any]]:
    docs = [yaml.safe_load(p.read_text()) for p in sorted(SAMPLES.glob("*.yaml"))]
    return [d for d in docs if d.get("kind") in PLURALS]


def renamed(obj: dict[str, Any]) -> dict[str, Any]:
    """A copy under a unique name: the control plane is shared by the whole session."""
    out = copy.deepcopy(obj)
    out["metadata"]["name"] = f"{obj['metadata']['name']}-{secrets.token_hex(3)}"
    return out


async def create(
    custom: client.CustomObjectsApi, obj: dict[str, Any], **kwargs: Any
) -> dict[str, Any]:
    plural = PLURALS[obj["kind"]]
    created: dict[str, Any] = await custom.create_cluster_custom_object(
        GROUP, VERSION, plural, obj, field_validation="Strict", **kwargs
    )
    return created


def test_there_are_at_least_15_distinct_invalid_objects() -> None:
    assert len(INVALID) >= 15
    bodies = {yaml.safe_dump(yaml.safe_load(p.read_text())["spec"]) for p in INVALID}
    assert len(bodies) == len(INVALID)
    assert {yaml.safe_load(p.read_text())["kind"] for p in INVALID} == set(PLURALS)


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
async def test_invalid_object_is_rejected_naming_the_field(
    custom: client.CustomObjectsApi, path: Path
) -> None:
    expected = expectation(path)
    with pytest.raises(ApiException) as rejected:
        await create(custom, yaml.safe_load(path.read_text()), dry_run="All")
    # 422 Invalid for schema and CEL errors; 400 for strict decoding of unknown fields.
    assert rejected.value.status in (400, 422), rejected.value.body
    assert expected in rejected.value.body, rejected.value.body


@pytest.mark.parametrize("name", [o["metadata"]["name"] for o in sample_objects()])
async def test_sample_is_accepted_and_round_trips(
    custom: client.CustomObjectsApi, name: str
) -> None:
    (sample,) = [o for o in sample_objects() if o["metadata"]["name"] == name]
    plural = PLURALS[sample["kind"]]
    created = await create(custom, renamed(sample))
    try:
        kind = KINDS[sample["kind"]]
        parsed = kind.from_dict(created)
        assert parsed.metadata.uid == created["metadata"]["uid"]
        assert parsed.metadata.generation == 1
        # What the server stored (defaults applied) is exactly what the types write back.
        assert parsed.to_dict()["spec"] == created["spec"]
    finally:
        await custom.delete_cluster_custom_object(
            GROUP, VERSION, plural, created["metadata"]["name"]
        )


async def merge_patch(
    custom: client.CustomObjectsApi, plural: str, name: str, patch: dict[str, Any]
) -> dict[str, Any]:
    patched: dict[str, Any] = await custom.patch_cluster_custom_object(
        GROUP, VERSION, plural, name, patch, _content_type="application/merge-patch+json"
    )
    return patched


async def gnr(custom: client.CustomObjectsApi) -> dict[str, Any]:
    (sample,) = [o for o in sample_objects() if o["metadata"]["name"] == "h100x8-spot"]
    return await create(custom, renamed(sample))


async def test_spec_gpu_and_capacity_type_are_immutable(custom: client.CustomObjectsApi) -> None:
    created = await gnr(custom)
    name = created["metadata"]["name"]
    try:
        for patch, field in [
            ({"spec": {"gpu": {"count": 4}}}, "spec.gpu"),
            ({"spec": {"gpu": {"type": "A100-80GB"}}}, "spec.gpu"),
            ({"spec": {"capacityType": "on-demand"}}, "spec.capacityType"),
        ]:
            with pytest.raises(ApiException) as rejected:
                await merge_patch(custom, GNR_PLURAL, name, patch)
            assert rejected.value.status == 422
            assert field in rejected.value.body and "immutable" in rejected.value.body
        # Mutable fields still change, and bump the generation.
        patched = await merge_patch(custom, GNR_PLURAL, name, {"spec": {"maxPricePerHour": "20"}})
        assert patched["spec"]["maxPricePerHour"] == "20"
        assert patched["metadata"]["generation"] == 2
    finally:
        await custom.delete_cluster_custom_object(GROUP, VERSION, GNR_PLURAL, name)


async def test_provider_type_is_immutable(custom: client.CustomObjectsApi) -> None:
    (sample,) = [o for o in sample_objects() if o["metadata"]["name"] == "lambda"]
    created = await create(custom, renamed(sample))
    name = created["metadata"]["name"]
    try:
        patch = {"spec": {"type": "runpod", "lambda": None, "runpod": {"imageName": "x/y:1"}}}
        with pytest.raises(ApiException) as rejected:
            await merge_patch(custom, GPR_PLURAL, name, patch)
        assert rejected.value.status == 422
        assert "spec.type" in rejected.value.body and "immutable" in rejected.value.body
    finally:
        await custom.delete_cluster_custom_object(GROUP, VERSION, GPR_PLURAL, name)


async def test_full_status_is_accepted_through_the_status_subresource(
    custom: client.CustomObjectsApi,
) -> None:
    created = await gnr(custom)
    name = created["metadata"]["name"]
    try:
        request = GPUNodeRequest.from_dict(created)
        fill_status(request)
        written = await custom.replace_cluster_custom_object_status(
            GROUP, VERSION, GNR_PLURAL, name, request.to_dict()
        )
        assert written["status"] == request.status_to_dict()
        assert GPUNodeRequest.from_dict(written).status == request.status
        # The main resource ignores status; spec and generation are untouched.
        again = GPUNodeRequest.from_dict(written)
        again.status.phase = Phase.FAILED
        replaced = await custom.replace_cluster_custom_object(
            GROUP, VERSION, GNR_PLURAL, name, again.to_dict()
        )
        assert replaced["status"]["phase"] == Phase.READY
        assert replaced["metadata"]["generation"] == 1
    finally:
        await custom.delete_cluster_custom_object(GROUP, VERSION, GNR_PLURAL, name)


def fill_status(request: GPUNodeRequest) -> None:
    status = request.status
    at = request.metadata.creation_timestamp
    assert at is not None
    status.phase = Phase.READY
    status.observed_generation = request.metadata.generation
    status.attempt = 2
    status.offer = OfferStatus(
        provider="runpod",
        cloud="runpod",
        region="us-east",
        native_region="US-GA-1",
        instance_type="NVIDIA H100 80GB HBM3",
        gpu_type="H100-80GB",
        gpu_count=8,
        capacity_type=CapacityType.SPOT,
        price_per_hour=Decimal("21.52"),
    )
    status.instance = InstanceStatus(
        id="pod-1",
        name=f"gpuctl-{request.name}-2",
        state="running",
        public_ip="192.0.2.7",
        launched_at=at,
    )
    status.node_name = "gpuctl-node-1"
    status.ready_at = at
    status.cost = CostStatus(accrued_usd=Decimal("3.5870"), since=at, updated_at=at)
    for kind, reason in [(ConditionType.LAUNCHED, "Launched"), (ConditionType.READY, "NodeReady")]:
        set_condition(
            status.conditions,
            kind,
            True,
            reason,
            "ok",
            now=at,
            observed_generation=request.metadata.generation,
        )
    status.failed_offers.append(
        FailedOffer(
            provider="lambda",
            region="us-east-1",
            instance_type="gpu_8x_h100_sxm5",
            capacity_type=CapacityType.ON_DEMAND,
            reason="InsufficientCapacity",
            message="no capacity",
            at=at,
        )
    )
    status.interruptions = 1
    status.message = "ready"
