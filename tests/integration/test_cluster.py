"""The local control plane is a kubeadm-style cluster: what joining machines rely on.

kube-controller-manager signs cluster-info for bootstrap tokens and removes expired
ones; the API server lets anonymous users read cluster-info and nothing else,
authorizes kubelets with the Node authorizer and NodeRestriction; each component
runs under its own identity.
"""

from __future__ import annotations

import asyncio
import datetime
import secrets
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from gpuctl.dev.controlplane import ControlPlane
from gpuctl.dev.kubeadm import KUBEADM_TOKEN_GROUP
from gpuctl.runtime.kubeclient import api_client
from tests.conftest import ClientAs

CLUSTER_INFO = "/api/v1/namespaces/kube-public/configmaps/cluster-info"


async def _until(check: Callable[[], Awaitable[Any]], timeout: float = 30.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not true within {timeout}s")
        await asyncio.sleep(0.3)


def _token_secret(token_id: str, expires: datetime.datetime) -> client.V1Secret:
    data = {
        "token-id": token_id,
        "token-secret": secrets.token_hex(8),
        "expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "usage-bootstrap-authentication": "true",
        "usage-bootstrap-signing": "true",
        "auth-extra-groups": KUBEADM_TOKEN_GROUP,
    }
    return client.V1Secret(
        metadata=client.V1ObjectMeta(name=f"bootstrap-token-{token_id}"),
        type="bootstrap.kubernetes.io/token",
        string_data=data,
    )


async def _anonymous_get(cp: ControlPlane, path: str) -> int:
    context = ssl.create_default_context(cafile=str(cp.ca_file))
    async with aiohttp.ClientSession() as session, session.get(cp.url + path, ssl=context) as r:
        return r.status


async def test_anonymous_reads_cluster_info_and_nothing_else(control_plane: ControlPlane) -> None:
    assert await _anonymous_get(control_plane, CLUSTER_INFO) == 200
    for path in (
        "/api/v1/namespaces/kube-system/configmaps/kubelet-config",
        "/api/v1/namespaces/kube-public/configmaps",
        "/api/v1/nodes",
        "/version",
    ):
        assert await _anonymous_get(control_plane, path) == 401, path


async def test_bootstrap_signer_signs_cluster_info_and_cleaner_removes_expired(
    kube: client.ApiClient,
) -> None:
    core = client.CoreV1Api(kube)
    now = datetime.datetime.now(datetime.UTC)
    live, expired = secrets.token_hex(3), secrets.token_hex(3)
    await core.create_namespaced_secret(
        "kube-system", _token_secret(live, now + datetime.timedelta(hours=1))
    )
    await core.create_namespaced_secret(
        "kube-system", _token_secret(expired, now - datetime.timedelta(seconds=1))
    )

    async def signed() -> bool:
        info = await core.read_namespaced_config_map("cluster-info", "kube-public")
        return f"jws-kubeconfig-{live}" in (info.data or {})

    async def cleaned() -> bool:
        try:
            await core.read_namespaced_secret(f"bootstrap-token-{expired}", "kube-system")
        except ApiException as err:
            return err.status == 404
        return False

    await _until(signed)
    await _until(cleaned)
    await core.delete_namespaced_secret(f"bootstrap-token-{live}", "kube-system")


async def test_kubeadm_join_objects_exist(kube: client.ApiClient) -> None:
    core = client.CoreV1Api(kube)
    rbac = client.RbacAuthorizationV1Api(kube)
    assert (
        "ClusterConfiguration"
        in (await core.read_namespaced_config_map("kubeadm-config", "kube-system")).data
    )
    assert (
        "kubelet" in (await core.read_namespaced_config_map("kubelet-config", "kube-system")).data
    )
    names = {b.metadata.name for b in (await rbac.list_cluster_role_binding()).items}
    assert {
        "kubeadm:kubelet-bootstrap",
        "kubeadm:node-autoapprove-bootstrap",
        "kubeadm:node-autoapprove-certificate-rotation",
        "kubeadm:get-nodes",
    } <= names


async def test_node_authorizer_confines_a_kubelet_to_its_own_node(
    kube: client.ApiClient, client_as: ClientAs
) -> None:
    alpha = client.CoreV1Api(await client_as("system:node:cluster-test-alpha", ["system:nodes"]))
    beta = client.CoreV1Api(await client_as("system:node:cluster-test-beta", ["system:nodes"]))
    for api, name in ((alpha, "cluster-test-alpha"), (beta, "cluster-test-beta")):
        await api.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=name)))
    try:
        with pytest.raises(ApiException) as refused:
            await alpha.patch_node("cluster-test-beta", {"metadata": {"labels": {"x": "y"}}})
        assert refused.value.status == 403
        with pytest.raises(ApiException) as restricted:  # NodeRestriction
            await alpha.patch_node(
                "cluster-test-alpha",
                {"metadata": {"labels": {"node-restriction.kubernetes.io/x": "y"}}},
            )
        assert restricted.value.status == 403
    finally:
        admin = client.CoreV1Api(kube)
        await admin.delete_node("cluster-test-alpha")
        await admin.delete_node("cluster-test-beta")


@pytest.mark.parametrize(
    ("user", "kubeconfig"),
    [
        ("system:kube-controller-manager", "controller_manager_kubeconfig"),
        ("system:kube-scheduler", "scheduler_kubeconfig"),
    ],
)
async def test_each_component_has_its_own_identity(
    control_plane: ControlPlane, user: str, kubeconfig: str
) -> None:
    path = getattr(control_plane, kubeconfig)
    async with await api_client(path) as api:
        review = await client.AuthenticationV1Api(api).create_self_subject_review(
            client.V1SelfSubjectReview()
        )
    info = review.status.user_info
    assert info.username == user
    assert "system:masters" not in (info.groups or [])


async def test_scheduler_explains_an_unschedulable_pod(kube: client.ApiClient) -> None:
    core = client.CoreV1Api(kube)
    name = f"cluster-test-{secrets.token_hex(3)}"
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(
            node_selector={"cluster-test": name},
            containers=[client.V1Container(name="c", image="busybox")],
        ),
    )
    await core.create_namespaced_pod("default", pod)

    async def unschedulable() -> str:
        found = await core.read_namespaced_pod(name, "default")
        conditions = found.status.conditions or []
        reasons = [
            c for c in conditions if c.type == "PodScheduled" and c.reason == "Unschedulable"
        ]
        return reasons[0].message if reasons else ""

    assert "available" in await _until(unschedulable)  # the scheduler says why
    await core.delete_namespaced_pod(name, "default", grace_period_seconds=0)
