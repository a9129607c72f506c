"""`gpuctl plan` for pods: workloads become pending pods, the provisioner's decision is printed."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpuctl.cli import plan, plan_pods
from gpuctl.cli.config import ConfigError, Source
from gpuctl.controllers.pool.workloads import pods_of
from tests.unit.test_cli_offers import FakeDriver, FakeDrivers, offer

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: train, namespace: ml}
spec:
  replicas: 3
  template:
    metadata: {labels: {app: train}}
    spec:
      tolerations: [{key: nvidia.com/gpu, operator: Exists}]
      containers:
      - name: t
        resources: {limits: {nvidia.com/gpu: 2}}
---
apiVersion: v1
kind: Pod
metadata: {name: cpu-only}
spec:
  containers: [{name: c}]
---
apiVersion: gpuctl.io/v1alpha1
kind: GPUNodePool
metadata: {name: gpu}
spec:
  template:
    taints: [{key: nvidia.com/gpu, effect: NoSchedule}]
  limits: {gpus: 4}
"""


def drivers() -> FakeDrivers:
    offers = [offer("runpod", "2.98", gpu_count=2), offer("lambda", "23.92")]
    return FakeDrivers(
        {"runpod": FakeDriver("runpod", offers[:1]), "lambda": FakeDriver("lambda", offers[1:])}
    )


def test_workloads_become_pending_pods() -> None:
    documents = list(yaml.safe_load_all(DEPLOYMENT))
    made = pods_of(documents)
    assert [p["metadata"]["name"] for p in made] == ["train-0", "train-1", "train-2", "cpu-only"]
    assert [p["metadata"]["namespace"] for p in made[:1]] == ["ml"]
    assert len(plan_pods.read_pods(documents)) == 3  # the CPU pod asks for no GPU
    job = {"kind": "Job", "metadata": {"name": "j"}, "spec": {"parallelism": 2, "template": {}}}
    assert len(pods_of([job])) == 2


async def test_plan_names_the_pool_and_offer_and_what_waits() -> None:
    documents = list(yaml.safe_load_all(DEPLOYMENT))
    pods = plan_pods.read_pods(documents)
    result = await plan_pods.plan_pods(
        Source(drivers(), None), pods, plan_pods.read_pools(documents), lambda _: False
    )
    assert [(m.pool.name, m.choice.offer.provider, len(m.pods)) for m in result.new] == [
        ("gpu", "runpod", 1),
        ("gpu", "runpod", 1),
    ]
    assert result.unserved == {"ml/train-2": "pool gpu: limit reached (gpus 6 > 4)"}
    text = plan_pods.render(result, pods)
    assert "NEW MACHINES" in text and "NO MACHINE: ml/train-2" in text
    assert json.dumps(plan_pods.plan_json(result))
    with pytest.raises(ConfigError, match="no GPUNodePool"):
        await plan_pods.plan_pods(Source(drivers(), None), pods, [], lambda _: False)


def test_plan_cli_reads_pods_and_exits_1_when_one_waits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    @contextlib.asynccontextmanager
    async def fake_source(_: Any) -> Any:
        yield Source(drivers(), None)

    monkeypatch.setattr(plan, "open_source", fake_source)
    path = tmp_path / "train.yaml"
    path.write_text(DEPLOYMENT)
    parser_args = type("Args", (), {"filename": str(path), "capacity_ttl": 180.0, "output": "json"})
    assert plan._run(parser_args()) == 1  # type: ignore[arg-type]
    shown = json.loads(capsys.readouterr().out)
    assert len(shown["pods"]["machines"]) == 2
    path.write_text("kind: Secret\n")
    assert plan._run(parser_args()) == 2  # type: ignore[arg-type]
