"""Generated operations call the Transport with the spec's method, path and params.

The Transport is gpuctl's own seam (gpuctl/providers/transport.py); a recording
fake stands in for the HTTP client and answers with example payloads from the spec.
"""

import importlib
import inspect
import json
import re
import sys
import typing
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hack"))  # the generator is a tool under hack/, not in gpuctl

from codegen import operations  # noqa: E402
from codegen.config import CLIENTS, Client  # noqa: E402
from codegen.examples import example  # noqa: E402
from codegen.typemap import TypeMapper, snake  # noqa: E402

from gpuctl.providers.lambdacloud._generated import models as lambda_models  # noqa: E402
from gpuctl.providers.lambdacloud._generated import operations as lambda_ops  # noqa: E402
from gpuctl.providers.paperspace._generated import models as paperspace_models  # noqa: E402
from gpuctl.providers.paperspace._generated import operations as paperspace_ops  # noqa: E402
from gpuctl.providers.runpod._generated import models_v1, operations_v1, operations_v2  # noqa: E402
from gpuctl.providers.transport import Params, Transport  # noqa: E402

CASES = [(client, method, path) for client in CLIENTS for method, path in client.selected]
IDS = [f"{Path(client.operations).stem}:{method} {path}" for client, method, path in CASES]


@attrs.frozen
class Call:
    method: str
    path: str
    operation: str
    params: Params | None
    json: Any


@attrs.define
class RecordingTransport:
    """Records each request and answers with the payload queued for its operation."""

    answers: dict[str, Any] = attrs.field(factory=dict)
    calls: list[Call] = attrs.field(factory=list)

    async def request(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        params: Params | None = None,
        json: Any = None,
    ) -> Any:
        self.calls.append(Call(method, path, operation, params, json))
        return self.answers.get(operation)


def module(path: str) -> ModuleType:
    return importlib.import_module(path.removesuffix(".py").replace("/", "."))


def test_recording_transport_is_a_transport() -> None:
    transport: Transport = RecordingTransport()
    assert transport


@pytest.mark.parametrize(("client", "method", "path"), CASES, ids=IDS)
async def test_each_operation_sends_its_method_path_and_id(
    client: Client, method: str, path: str
) -> None:
    doc = json.loads((ROOT / client.spec).read_text())
    mapper = TypeMapper(doc)
    spec = doc["paths"][path][method.lower()]
    function = getattr(module(client.operations), snake(spec["operationId"]))
    hints = typing.get_type_hints(function)
    success = operations.success_schema(mapper, spec)
    answer = example(mapper, success) if success else None
    transport = RecordingTransport({spec["operationId"]: answer})
    args: dict[str, Any] = {}
    for name, parameter in inspect.signature(function).parameters.items():
        if name == "body":
            body_schema = operations.json_schema(mapper.resolve(spec["requestBody"]))
            converter = module(client.models).converter
            args[name] = converter.structure(example(mapper, body_schema or {}), hints[name])
        elif parameter.kind is parameter.POSITIONAL_OR_KEYWORD and name != "transport":
            args[name] = "id with/slash"
        elif parameter.default is inspect.Parameter.empty and name != "transport":
            args[name] = "required-value"

    result = await function(transport, **args)

    (call,) = transport.calls
    assert call.method == method
    expected = re.sub(r"\{\w+\}", "id%20with%2Fslash", path)
    assert call.path == expected
    assert call.operation == spec["operationId"]
    if "body" in args:
        assert call.json == module(client.models).converter.unstructure(args["body"])
    else:
        assert call.json is None
    assert (result is None) == (answer is None)


async def test_lambda_launch_sends_the_json_body() -> None:
    transport = RecordingTransport({"launchInstance": {"data": {"instance_ids": ["i-1"]}}})
    body = lambda_models.LaunchInstanceRequest(
        region_name="us-east-1",
        instance_type_name="gpu_8x_h100_sxm5",
        ssh_key_names=["gpuctl"],
        user_data="#cloud-config\n",
        tags=[lambda_models.RequestedTagEntry(key="gpuctl.dev/request", value="r1")],
    )
    launched = await lambda_ops.launch_instance(transport, body)
    assert launched.data.instance_ids == ["i-1"]
    assert transport.calls == [
        Call(
            "POST",
            "/api/v1/instance-operations/launch",
            "launchInstance",
            None,
            {
                "region_name": "us-east-1",
                "instance_type_name": "gpu_8x_h100_sxm5",
                "ssh_key_names": ["gpuctl"],
                "user_data": "#cloud-config\n",
                "tags": [{"key": "gpuctl.dev/request", "value": "r1"}],
            },
        )
    ]


async def test_lambda_optional_query_params_are_omitted_until_set() -> None:
    transport = RecordingTransport({"listInstances": {"data": []}})
    await lambda_ops.list_instances(transport)
    await lambda_ops.list_instances(transport, cluster_id="c1")
    assert [c.params for c in transport.calls] == [None, {"cluster_id": "c1"}]


async def test_runpod_v1_filters_use_json_names_and_lists() -> None:
    transport = RecordingTransport({"ListPods": [], "DeletePod": None})
    pods = await operations_v1.list_pods(
        transport,
        gpu_type_id=["NVIDIA H100 80GB HBM3"],
        desired_status=models_v1.PodDesiredStatus.RUNNING,
        include_machine=True,
        name="gpuctl-r1",
    )
    assert pods == []
    assert await operations_v1.delete_pod(transport, "pod1") is None
    listed, deleted = transport.calls
    assert listed.params == {
        "gpuTypeId": ["NVIDIA H100 80GB HBM3"],
        "desiredStatus": "RUNNING",
        "includeMachine": True,
        "name": "gpuctl-r1",
    }
    assert (deleted.method, deleted.path) == ("DELETE", "/pods/pod1")


async def test_runpod_v2_catalog_joins_unexploded_arrays() -> None:
    transport = RecordingTransport({"listGpuTypes": {"gpus": []}})
    await operations_v2.list_gpu_types(transport, include=["AVAILABILITY"], product=["POD"])
    assert transport.calls[0].params == {"include": "AVAILABILITY", "product": "POD"}


async def test_paperspace_paging_and_required_params() -> None:
    transport = RecordingTransport(
        {
            "machines-list": {"hasMore": False, "items": [], "nextPage": None},
            "machineAvailability-list": {"available": True},
        }
    )
    page = await paperspace_ops.machines_list(transport, after="cursor", limit=50, region="ny2")
    assert (page.has_more, page.items, page.next_page) == (False, [], None)
    available = await paperspace_ops.machine_availability_list(
        transport, machine_type="H100x8", region="ny2"
    )
    assert available.available
    assert [c.params for c in transport.calls] == [
        {"after": "cursor", "limit": 50, "region": "ny2"},
        {"machineType": "H100x8", "region": "ny2"},
    ]


async def test_paperspace_session_may_be_null() -> None:
    assert await paperspace_ops.auth_session(RecordingTransport()) is None
    assert paperspace_models.Session  # the non-null answer's model
