"""Generated models structure the specs' example payloads and unstructure them back.

For every selected operation the success response and the request body are
checked with the examples the cloud publishes (RunPod v2's response examples,
Lambda's schema examples) or, where it publishes none, with a payload composed
from the spec's property examples (hack/codegen/examples.py).
"""

import importlib
import json
import sys
import typing
from functools import cache
from pathlib import Path
from types import ModuleType, NoneType, UnionType
from typing import Any

import cattrs
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hack"))  # the generator is a tool under hack/, not in gpuctl

from codegen import operations  # noqa: E402
from codegen.config import CLIENTS, Client  # noqa: E402
from codegen.examples import example  # noqa: E402
from codegen.typemap import TypeMapper, snake  # noqa: E402

from gpuctl.providers.lambdacloud._generated import models as lambda_models  # noqa: E402
from gpuctl.providers.paperspace._generated import models as paperspace_models  # noqa: E402
from gpuctl.providers.runpod._generated import models_v1, models_v2  # noqa: E402

CASES = [(client, method, path) for client in CLIENTS for method, path in client.selected]
IDS = [f"{Path(client.operations).stem}:{method} {path}" for client, method, path in CASES]


def module(path: str) -> ModuleType:
    return importlib.import_module(path.removesuffix(".py").replace("/", "."))


@cache
def mapper(spec: str) -> TypeMapper:
    return TypeMapper(json.loads((ROOT / spec).read_text()))


def without_none(value: Any) -> Any:
    """JSON with null members removed: the converter omits unset optional fields."""
    if isinstance(value, dict):
        return {k: without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_none(v) for v in value]
    return value


def non_optional(annotation: Any) -> Any:
    if isinstance(annotation, UnionType) or typing.get_origin(annotation) is typing.Union:
        (only,) = [a for a in typing.get_args(annotation) if a is not NoneType]
        return only
    return annotation


def payloads(client: Client, holder: dict[str, Any]) -> list[Any]:
    """The published examples of a request body or response, then a composed one."""
    found = []
    for media in holder.get("content", {}).values():
        if "example" in media:
            found.append(media["example"])
        found += [e["value"] for e in media.get("examples", {}).values() if "value" in e]
    schema = operations.json_schema(holder)
    return [*found, example(mapper(client.spec), schema)] if schema else found


def assert_round_trip(converter: cattrs.Converter, payload: Any, annotation: Any) -> None:
    value = converter.structure(payload, annotation)
    assert without_none(converter.unstructure(value, annotation)) == without_none(payload)


@pytest.mark.parametrize(("client", "method", "path"), CASES, ids=IDS)
def test_response_examples_round_trip(client: Client, method: str, path: str) -> None:
    spec = mapper(client.spec).doc["paths"][path][method.lower()]
    function = getattr(module(client.operations), snake(spec["operationId"]))
    returns = non_optional(typing.get_type_hints(function)["return"])
    success = next(r for code, r in sorted(spec["responses"].items()) if code.startswith("2"))
    examples = payloads(client, mapper(client.spec).resolve(success))
    if returns is NoneType:
        assert examples == []
        return
    assert examples
    for payload in examples:
        assert_round_trip(module(client.models).converter, payload, returns)


@pytest.mark.parametrize(("client", "method", "path"), CASES, ids=IDS)
def test_request_body_examples_round_trip(client: Client, method: str, path: str) -> None:
    spec = mapper(client.spec).doc["paths"][path][method.lower()]
    function = getattr(module(client.operations), snake(spec["operationId"]))
    body = typing.get_type_hints(function).get("body")
    if "requestBody" not in spec:
        assert body is None
        return
    for payload in payloads(client, mapper(client.spec).resolve(spec["requestBody"])):
        assert_round_trip(module(client.models).converter, payload, body)


@pytest.mark.parametrize("client", CLIENTS, ids=[c.title for c in CLIENTS])
def test_error_models_round_trip(client: Client) -> None:
    models = module(client.models)
    for name, pointer in client.errors:
        payload = example(mapper(client.spec), {"$ref": pointer})
        assert_round_trip(models.converter, payload, getattr(models, name))


def test_published_examples_are_used() -> None:
    """RunPod v2 publishes whole response examples; they are real cloud payloads."""
    listed = models_v2.converter.structure(
        mapper(CLIENTS[2].spec).doc["paths"]["/v2/catalog/gpus"]["get"]["responses"]["200"][
            "content"
        ]["application/json"]["examples"]["gpus"]["value"],
        models_v2.ListGpuTypesResponse,
    )
    gpu = listed.gpus[0]
    assert gpu.id == "NVIDIA GeForce RTX 4090"
    assert gpu.price.secure > 0
    assert gpu.availability == models_v2.AvailabilityLevel.HIGH


def lambda_instance(**changes: Any) -> dict[str, Any]:
    instance = example(mapper(CLIENTS[0].spec), {"$ref": "#/components/schemas/Instance"})
    return instance | changes


def test_unknown_enum_values_and_keys_are_accepted() -> None:
    """Clouds add statuses and fields; structuring must not fail on them."""
    payload = lambda_instance(status="hibernating", brand_new_field={"x": 1})
    instance = lambda_models.converter.structure(payload, lambda_models.Instance)
    assert instance.status == "hibernating"
    assert instance.status not in set(lambda_models.InstanceStatus)
    assert "brand_new_field" not in lambda_models.converter.unstructure(instance)


def test_enum_members_compare_equal_to_the_str_fields() -> None:
    instance = lambda_models.converter.structure(
        lambda_instance(status="active"), lambda_models.Instance
    )
    assert instance.status == lambda_models.InstanceStatus.ACTIVE


def test_unset_optional_fields_are_omitted_and_names_renamed() -> None:
    body = models_v1.PodCreateInput(
        gpu_type_ids=["NVIDIA H100 80GB HBM3"],
        gpu_count=8,
        interruptible=True,
        cloud_type=models_v1.PodCreateInputCloudType.SECURE,
    )
    unstructured = models_v1.converter.unstructure(body)
    assert unstructured == {
        "gpuTypeIds": ["NVIDIA H100 80GB HBM3"],
        "gpuCount": 8,
        "interruptible": True,
        "cloudType": "SECURE",
    }
    assert json.loads(json.dumps(unstructured)) == unstructured


def test_required_fields_are_required() -> None:
    launch = lambda_models.LaunchInstanceRequest(
        region_name="us-west-1", instance_type_name="gpu_8x_h100_sxm5", ssh_key_names=["k"]
    )
    assert lambda_models.converter.unstructure(launch) == {
        "region_name": "us-west-1",
        "instance_type_name": "gpu_8x_h100_sxm5",
        "ssh_key_names": ["k"],
    }
    with pytest.raises(cattrs.ClassValidationError):
        lambda_models.converter.structure({"name": "us-west-1"}, lambda_models.Region)


def test_required_nullable_fields_keep_their_null() -> None:
    gpu = example(mapper(CLIENTS[2].spec), {"$ref": "#/components/schemas/GpuType"})
    structured = models_v2.converter.structure(gpu | {"pool": None}, models_v2.GpuType)
    assert structured.pool is None
    assert models_v2.converter.unstructure(structured)["pool"] is None


def test_lambda_error_variants_merge_into_one_model() -> None:
    codes = set(lambda_models.ApiErrorCode)
    assert "instance-operations/launch/insufficient-capacity" in codes
    assert "global/quota-exceeded" in codes
    error = lambda_models.converter.structure(
        {"error": {"code": "global/unknown-new-code", "message": "m"}},
        lambda_models.ApiErrorResponse,
    )
    assert error.error.code == "global/unknown-new-code"
    assert error.error.suggestion is None


def test_documented_error_bodies_structure() -> None:
    problem = models_v2.converter.structure(
        {"title": "Not Found", "status": 404, "detail": "pod not found"}, models_v2.ErrorResponse
    )
    assert (problem.status, problem.errors) == (404, None)
    error = paperspace_models.converter.structure(
        {"message": "Not found", "code": "NOT_FOUND"}, paperspace_models.Error
    )
    assert error.code == "NOT_FOUND"


def test_numbers_sent_as_strings_still_structure() -> None:
    """RunPod's own example gives the number `costPerHr` as "0.74"."""
    pod = models_v1.converter.structure({"costPerHr": "0.74"}, models_v1.Pod)
    assert pod.cost_per_hr == pytest.approx(0.74)
