"""What the operator's informers keep of each object (controllers/transforms.py)."""

from __future__ import annotations

import copy
import json
import sys
from typing import Any

from gpuctl.controllers import transforms
from gpuctl.controllers.request.initialization import gpus_advertised
from gpuctl.controllers.request.nodes import is_ready
from gpuctl.runtime.transform import Shared, interned, keep

JSON = dict[str, Any]
MANAGED = [{"manager": "kubelet", "operation": "Update", "fieldsV1": {"f:status": {}}}]


def node() -> JSON:
    now = "2026-06-01T00:00:00Z"
    gpus = {"cpu": "208", "memory": "1800Gi", "nvidia.com/gpu": "8"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": "n1",
            "uid": "u1",
            "resourceVersion": "7",
            "labels": {"gpuctl.io/request": "r1", "gpuctl.io/instance-name": "n1"},
            "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
            "managedFields": MANAGED,
            "creationTimestamp": now,
        },
        "spec": {
            "providerID": "gpuctl://lambda/us-east-1/i-1",
            "taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}],
            "podCIDR": "10.0.0.0/24",
        },
        "status": {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }
            ],
            "capacity": gpus,
            "allocatable": dict(gpus),
            "images": [{"names": ["registry/cuda:12"], "sizeBytes": 1}],
            "nodeInfo": {"kubeletVersion": "v1.37.2"},
            "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        },
    }


def test_a_node_keeps_what_the_controllers_read_and_nothing_else() -> None:
    slim = transforms.node(node())
    assert slim["metadata"] == {
        "name": "n1",
        "uid": "u1",
        "resourceVersion": "7",
        "labels": {"gpuctl.io/request": "r1", "gpuctl.io/instance-name": "n1"},
        "creationTimestamp": "2026-06-01T00:00:00Z",
    }
    assert slim["spec"] == {
        "providerID": "gpuctl://lambda/us-east-1/i-1",
        "taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}],
    }
    assert set(slim["status"]) == {"conditions", "allocatable", "capacity"}
    assert "lastHeartbeatTime" not in slim["status"]["conditions"][0]
    assert is_ready(slim) and gpus_advertised(slim) == 8
    assert len(json.dumps(slim)) < 0.7 * len(json.dumps(node()))


def test_a_secret_keeps_its_data_but_not_the_last_applied_copy() -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": "creds",
            "namespace": "gpuctl-system",
            "uid": "u",
            "resourceVersion": "3",
            "annotations": {transforms.LAST_APPLIED: '{"data": {"apiKey": "c2VjcmV0"}}'},
            "managedFields": MANAGED,
        },
        "data": {"apiKey": "c2VjcmV0"},
    }
    slim = transforms.secret(copy.deepcopy(secret))
    assert slim["data"] == {"apiKey": "c2VjcmV0"} and slim["type"] == "Opaque"
    assert "annotations" not in slim["metadata"] and "managedFields" not in slim["metadata"]


def test_a_custom_resource_loses_only_managed_fields_and_the_last_applied_copy() -> None:
    request = {
        "metadata": {
            "name": "r",
            "annotations": {transforms.LAST_APPLIED: "{}", "gpuctl.io/disruption": "drift"},
            "managedFields": MANAGED,
        },
        "spec": {"gpu": {"type": "H100-80GB", "count": 8}},
        "status": {"phase": "Ready"},
    }
    slim = transforms.custom_resource(copy.deepcopy(request))
    assert slim["metadata"] == {"name": "r", "annotations": {"gpuctl.io/disruption": "drift"}}
    assert slim["spec"] == request["spec"] and slim["status"] == request["status"]
    bare = transforms.custom_resource({"metadata": {"name": "b", "annotations": {}}})
    assert bare == {"metadata": {"name": "b", "annotations": {}}}


def test_interned_objects_share_their_strings() -> None:
    a = interned(json.loads(json.dumps(node())))
    b = interned(json.loads(json.dumps(node())))
    assert a == node()
    key_a = next(iter(a["metadata"]["labels"]))
    key_b = next(iter(b["metadata"]["labels"]))
    assert key_a is key_b is sys.intern("gpuctl.io/request")
    assert a["status"]["conditions"][0]["status"] is b["status"]["conditions"][0]["status"]


def test_keep_follows_nested_fields_and_lists() -> None:
    obj = {"a": 1, "b": {"c": 2, "d": 3}, "e": [{"f": 1, "g": 2}, "x"], "h": 5}
    fields = {"a": True, "b": {"c": True}, "e": {"f": True}, "missing": True}
    assert keep(obj, fields) == {"a": 1, "b": {"c": 2}, "e": [{"f": 1}, "x"]}


def test_nodes_share_equal_capacity_and_keep_only_the_ready_condition() -> None:
    pressure = {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory"}
    raw = node()
    raw["status"]["conditions"].insert(0, pressure)
    a, b = transforms.node(copy.deepcopy(raw)), transforms.node(node())
    assert [c["type"] for c in a["status"]["conditions"]] == ["Ready"]
    assert a["status"]["capacity"] is b["status"]["capacity"] is b["status"]["allocatable"]
    assert a["spec"]["taints"] is b["spec"]["taints"]
    other = node()
    other["status"]["capacity"] = {**other["status"]["capacity"], "nvidia.com/gpu": "4"}
    assert transforms.node(other)["status"]["capacity"]["nvidia.com/gpu"] == "4"


def test_shared_answers_the_first_equal_value_and_tells_types_apart() -> None:
    shared = Shared(size=2)
    first = {"a": [1, {"b": "x"}]}
    assert shared(first) is first
    assert shared({"a": [1, {"b": "x"}]}) is first
    one, true = shared({"v": 1}), shared({"v": True})
    assert one is not true and true["v"] is True
    assert shared(None) is None
