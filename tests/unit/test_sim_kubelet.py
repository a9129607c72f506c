"""The simulated kubelet's reading of the join contract (no API server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuctl.dev import pki
from gpuctl.sim import JoinStatus, ManualClock, Phase, SimConfig, SimInstance
from gpuctl.sim.kubelet import (
    JoinRequest,
    Kubelet,
    join_variables,
    label_value,
    parse_labels,
    parse_taints,
)

SCRIPT = """#!/bin/bash
set -euo pipefail
export GPUCTL_API_SERVER='https://10.0.0.1:6443'
  export GPUCTL_BOOTSTRAP_TOKEN="abcdef.0123456789abcdef"
GPUCTL_CA_CERT_HASH=sha256:00ff
export GPUCTL_NODE_NAME='gpu-a-1'
export GPUCTL_NODE_LABELS='gpuctl.io/request=a,gpuctl.io/instance-name=gpu-a-1'
export NOT_OURS=1
"""


def test_join_variables_from_script_and_env() -> None:
    found = join_variables(SCRIPT, {"GPUCTL_NODE_NAME": "from-env", "PATH": "/bin"})
    assert found == {
        "GPUCTL_API_SERVER": "https://10.0.0.1:6443",
        "GPUCTL_BOOTSTRAP_TOKEN": "abcdef.0123456789abcdef",
        "GPUCTL_CA_CERT_HASH": "sha256:00ff",
        "GPUCTL_NODE_NAME": "from-env",
        "GPUCTL_NODE_LABELS": "gpuctl.io/request=a,gpuctl.io/instance-name=gpu-a-1",
    }


def test_join_request_parsing() -> None:
    request = JoinRequest.parse(join_variables(SCRIPT, {}), "fallback")
    assert request is not None
    assert request.node_name == "gpu-a-1"
    assert request.labels["gpuctl.io/request"] == "a"
    assert JoinRequest.parse({"GPUCTL_API_SERVER": "https://x"}, "n") is None


def test_labels_and_taints() -> None:
    assert parse_labels("a=1, b=2,,broken") == {"a": "1", "b": "2"}
    assert parse_taints("gpu=true:NoSchedule,dedicated:NoExecute") == [
        {"key": "gpu", "value": "true", "effect": "NoSchedule"},
        {"key": "dedicated", "effect": "NoExecute"},
    ]
    assert label_value("NVIDIA H100 80GB HBM3") == "NVIDIA-H100-80GB-HBM3"
    assert len(label_value("x" * 100)) == 63


def instance(script: str = "", env: dict[str, str] | None = None) -> SimInstance:
    return SimInstance(
        cloud="lambda",
        id="abc",
        name="gpu-a-1",
        instance_type="gpu_1x_a10",
        region="us-east-1",
        gpu_count=1,
        vcpus=30,
        memory_gib=200,
        spot=False,
        price_per_hour=0.75,
        created_at=ManualClock().now(),
        join_script=script,
        join_env=env or {},
    )


async def test_disabled_without_kubeconfig() -> None:
    kubelet = Kubelet(kubeconfig=None, ca_file=None)
    machine = instance(SCRIPT)
    kubelet.on_transition(machine, Phase.BOOTING, Phase.RUNNING)
    assert machine.join_status is JoinStatus.DISABLED
    assert SimConfig().kubelet_enabled is False


async def test_no_join_data_joins_nothing(tmp_path: Path) -> None:
    kubelet = Kubelet(kubeconfig=tmp_path / "unused", ca_file=None)
    machine = instance("#cloud-config\n", {"FOO": "bar"})
    kubelet.on_transition(machine, Phase.BOOTING, Phase.RUNNING)
    await kubelet.idle()
    assert machine.join_status is JoinStatus.NO_JOIN_DATA
    assert machine.node_name is None
    await kubelet.stop()


@pytest.mark.parametrize("hash_line", ["GPUCTL_CA_CERT_HASH=sha256:00ff", ""])
async def test_refuses_a_cluster_whose_ca_hash_does_not_match(
    tmp_path: Path, hash_line: str
) -> None:
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(pki.CA.create().cert_pem)
    kubelet = Kubelet(kubeconfig=tmp_path / "unused", ca_file=ca_file)
    script = SCRIPT.replace("GPUCTL_CA_CERT_HASH=sha256:00ff", hash_line)
    machine = instance(script)
    kubelet.on_transition(machine, Phase.BOOTING, Phase.RUNNING)
    await kubelet.idle()
    assert machine.join_status is JoinStatus.REFUSED
    assert "CA hash" in machine.join_detail or "missing" in machine.join_detail
    await kubelet.stop()
