"""The operator needs exactly the permissions in manifests/rbac: a full lifecycle, no 403.

The operator is `gpuctl run` from the installed wheel (tests/wheel.py), as the `gpuctl`
ServiceAccount, authenticated by a token from the TokenRequest API, on the
RBAC-enforcing API server, with exactly the rules that `kubectl kustomize manifests/rbac`
renders — leader election on, so the Lease rules are exercised too.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import attrs
from kubernetes_asyncio import client

from gpuctl.controllers.resources import GPUNODEREQUESTS
from gpuctl.dev.controlplane import ControlPlane, TokenUser
from gpuctl.runtime.client import Client
from gpuctl.runtime.manager import LeaderElectionConfig
from tests.e2e.conftest import (
    ISSUED_KEYS,
    NAMESPACE,
    Env,
    delete_and_wait,
    operator_config,
    wait_phase,
)
from tests.e2e.test_metrics import SAMPLE
from tests.wheel import Installed, run_args, running_gpuctl

SERVICE_ACCOUNT = "gpuctl"


async def apply_rbac(kubectl: list[str]) -> None:
    rendered = await asyncio.to_thread(
        subprocess.run,
        [kubectl[0], "kustomize", "manifests/rbac"],
        capture_output=True,
        text=True,
        check=True,
    )
    applied = await asyncio.to_thread(
        subprocess.run,
        [*kubectl, "apply", "--server-side", "-f", "-"],
        input=rendered.stdout,
        capture_output=True,
        text=True,
    )
    assert applied.returncode == 0, applied.stderr


async def service_account_token(kube: client.ApiClient) -> str:
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
    )
    answer = await client.CoreV1Api(kube).create_namespaced_service_account_token(
        SERVICE_ACCOUNT, NAMESPACE, request
    )
    return str(answer.status.token)


async def test_operator_runs_a_full_lifecycle_with_exactly_its_rbac(
    kube: client.ApiClient,
    kubectl: list[str],
    control_plane: ControlPlane,
    env: Env,
    api: Client,
    gpuctl_wheel: Installed,
    tmp_path: Path,
) -> None:
    await apply_rbac(kubectl)
    token = await service_account_token(kube)
    identity = TokenUser(f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}", token=token)
    config = attrs.evolve(
        operator_config(env, control_plane),
        kubeconfig=control_plane.token_kubeconfig(identity),
        leader_election=LeaderElectionConfig(namespace=NAMESPACE, name=f"gpuctl-{env.suffix}"),
    )
    admin = api  # the test acts as the cluster admin; the operator as its ServiceAccount
    name = f"rbac-{env.suffix}"
    log = tmp_path / "operator.log"
    async with running_gpuctl(gpuctl_wheel, run_args(config), log, secrets=ISSUED_KEYS) as running:
        await admin.create(
            GPUNODEREQUESTS,
            {
                "apiVersion": "gpuctl.io/v1alpha1",
                "kind": "GPUNodeRequest",
                "metadata": {"name": name},
                "spec": {
                    "gpu": {"type": "A10-24GB", "count": 1},
                    "providers": [env.providers["lambda"]],
                    "lifetime": {"maxLifetime": "1h"},
                },
            },
        )
        await wait_phase(admin, name, "Ready")
        await delete_and_wait(admin, name)
        metrics = await running.metrics()
    samples = {
        match.group(1) + (match.group(2) or ""): float(match.group(3))
        for match in map(SAMPLE.match, metrics.splitlines())
        if match
    }
    calls = {k: v for k, v in samples.items() if k.startswith("gpuctl_kube_api_requests_total")}
    assert sum(calls.values()) > 0  # the metric saw the operator's traffic
    forbidden = {k: v for k, v in calls.items() if 'code="403"' in k}
    assert forbidden == {}
    output = running.output()
    assert "Forbidden" not in output and " 403" not in output, running.tail()
