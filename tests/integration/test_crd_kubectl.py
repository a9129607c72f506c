"""What a person sees with kubectl: field documentation, printer columns, the samples."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from gpuctl.api import GNP_PLURAL, GNR_PLURAL, GROUP, VERSION
from gpuctl.api.install import install_crds

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
async def crds(kube: client.ApiClient) -> AsyncIterator[None]:
    await install_crds(kube)
    yield


async def run(argv: list[str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def run_until(argv: list[str], wanted: str) -> str:
    """Run until the output contains `wanted` (30 s at most): the API server publishes a
    new CRD's OpenAPI (what `kubectl explain` reads) a moment after it is Established."""
    out = ""
    try:
        async with asyncio.timeout(30):
            while True:
                code, out = await run(argv)
                if code == 0 and wanted in out:
                    return out
                await asyncio.sleep(0.5)
    except TimeoutError:
        pytest.fail(f"{' '.join(argv[-2:])} never printed {wanted!r}; last output:\n{out}")


@pytest.mark.usefixtures("crds")
async def test_kubectl_explain_prints_field_descriptions(kubectl: list[str]) -> None:
    out = await run_until([*kubectl, "explain", "gnr.spec"], "maxPricePerHour")
    assert "GPUNodeRequest" in out
    for text in [
        "Highest acceptable price in USD per instance-hour",
        "How to choose among fitting offers",
        "capacityType",
        "registrationTimeout",
    ]:
        assert text in out, out
    out = await run_until([*kubectl, "explain", "gpr.spec.bootstrap"], "apiServerEndpoint")
    assert "How a machine joins the cluster" in out, out
    out = await run_until([*kubectl, "explain", "gnp.spec.disruption"], "consolidateAfter")
    assert "GPUNodePool" in out
    for text in ["WhenEmptyOrUnderutilized", "expireAfter", "most restrictive applies"]:
        assert text in out, out


@pytest.mark.usefixtures("crds")
async def test_kubectl_get_gnp_shows_gpus_machines_and_money(
    kube: client.ApiClient, kubectl: list[str]
) -> None:
    custom = client.CustomObjectsApi(kube)
    name = f"columns-{secrets.token_hex(3)}"
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "GPUNodePool",
        "metadata": {"name": name},
        "spec": {"template": {}, "limits": {"gpus": 16, "pricePerHour": "40"}},
    }
    await custom.create_cluster_custom_object(GROUP, VERSION, GNP_PLURAL, body)
    try:
        status = {"status": {"gpusInUse": 6, "gpus": 8, "machines": 1, "pricePerHour": "23.92"}}
        await custom.patch_cluster_custom_object_status(
            GROUP, VERSION, GNP_PLURAL, name, status, _content_type="application/merge-patch+json"
        )
        code, out = await run([*kubectl, "get", "gnp", name])
        assert code == 0, out
        header, row = out.splitlines()[:2]
        assert header.split() == [
            "NAME", "GPUS", "GPU", "LIMIT", "MACHINES", "$/H", "$/H", "LIMIT", "READY", "AGE"
        ]  # fmt: skip
        assert row.split()[:6] == [name, "6", "16", "1", "23.92", "40"]
    finally:
        await custom.delete_cluster_custom_object(GROUP, VERSION, GNP_PLURAL, name)


@pytest.mark.usefixtures("crds")
async def test_kubectl_get_shows_printer_columns(
    kube: client.ApiClient, kubectl: list[str]
) -> None:
    custom = client.CustomObjectsApi(kube)
    name = f"columns-{secrets.token_hex(3)}"
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "GPUNodeRequest",
        "metadata": {"name": name},
        "spec": {"gpu": {"type": "H100-80GB", "count": 8}, "capacityType": "spot"},
    }
    await custom.create_cluster_custom_object(GROUP, VERSION, GNR_PLURAL, body)
    try:
        code, out = await run([*kubectl, "get", "gnr", name])
        assert code == 0, out
        header, row = out.splitlines()[:2]
        assert header.split() == [
            "NAME", "GPU", "COUNT", "CAPACITY", "PHASE", "PROVIDER", "REGION", "$/H", "NODE",
            "AGE",
        ]  # fmt: skip
        assert row.split()[:4] == [name, "H100-80GB", "8", "spot"]
        code, out = await run([*kubectl, "get", "gpuctl"])  # the category
        assert code == 0 and name in out, out
    finally:
        await custom.delete_cluster_custom_object(GROUP, VERSION, GNR_PLURAL, name)


@pytest.mark.usefixtures("crds")
async def test_samples_kustomization_applies_server_side_dry_run(
    kube: client.ApiClient, kubectl: list[str]
) -> None:
    core = client.CoreV1Api(kube)
    try:
        await core.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name="gpuctl-system"))
        )
    except ApiException as exc:
        if exc.status != 409:  # another test or the operator created it: fine
            raise
    code, out = await run(
        [*kubectl, "apply", "-k", str(ROOT / "manifests" / "samples"), "--dry-run=server"]
    )
    assert code == 0, out
    for obj in [
        "secret/lambda-credentials",
        "gpuprovider.gpuctl.io/lambda",
        "gpuprovider.gpuctl.io/runpod",
        "gpuprovider.gpuctl.io/paperspace",
        "gpunoderequest.gpuctl.io/h100x8-spot",
        "gpunoderequest.gpuctl.io/a100x1-on-demand",
        "gpunoderequest.gpuctl.io/rtx4090x2-spot",
        "gpunodepool.gpuctl.io/gpu",
    ]:
        assert obj in out, out


async def test_crd_kustomization_builds(kubectl: list[str]) -> None:
    code, out = await run([*kubectl, "kustomize", str(ROOT / "manifests" / "crd")])
    assert code == 0, out
    assert "name: gpunoderequests.gpuctl.io" in out
    assert "name: gpuproviders.gpuctl.io" in out
    assert "name: gpunodepools.gpuctl.io" in out
