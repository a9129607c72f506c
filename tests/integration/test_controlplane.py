"""The local control plane is a real, RBAC-enforcing Kubernetes API server."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from gpuctl.dev.controlplane import ControlPlane, find_binaries
from gpuctl.runtime.kubeclient import api_client
from tests.conftest import NOBODY, ClientAs
from tests.processes import processes_mentioning, wait_gone


async def test_create_list_and_watch_namespace(kube: client.ApiClient) -> None:
    core = client.CoreV1Api(kube)
    listed = await core.list_namespace()
    name = "cp-watch-test"
    stream = watch.Watch().stream(
        core.list_namespace,
        resource_version=listed.metadata.resource_version,
        field_selector=f"metadata.name={name}",
        timeout_seconds=30,
        _request_timeout=40,
    )
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    event = await asyncio.wait_for(anext(stream), 10)
    assert event["type"] == "ADDED"
    assert event["object"].metadata.name == name
    names = {ns.metadata.name for ns in (await core.list_namespace()).items}
    assert {name, "default", "kube-system"} <= names
    await core.delete_namespace(name)


async def test_rbac_refuses_token_user_without_roles(control_plane: ControlPlane) -> None:
    async with await api_client(control_plane.token_kubeconfig(NOBODY)) as api:
        with pytest.raises(ApiException) as refused:
            await client.CoreV1Api(api).list_node()
    assert refused.value.status == 403
    assert NOBODY.name in refused.value.body


async def test_client_certificate_identity_gets_exactly_its_roles(
    kube: client.ApiClient, client_as: ClientAs
) -> None:
    rbac = client.RbacAuthorizationV1Api(kube)
    alice = client.CoreV1Api(await client_as("alice", ["team-a"]))
    with pytest.raises(ApiException) as refused:
        await alice.list_node()
    assert refused.value.status == 403
    await rbac.create_cluster_role(
        client.V1ClusterRole(
            metadata=client.V1ObjectMeta(name="cp-test-node-reader"),
            rules=[client.V1PolicyRule(api_groups=[""], resources=["nodes"], verbs=["list"])],
        )
    )
    await rbac.create_cluster_role_binding(
        client.V1ClusterRoleBinding(
            metadata=client.V1ObjectMeta(name="cp-test-node-reader"),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io",
                kind="ClusterRole",
                name="cp-test-node-reader",
            ),
            subjects=[
                client.RbacV1Subject(
                    kind="Group", name="team-a", api_group="rbac.authorization.k8s.io"
                )
            ],
        )
    )
    try:
        for _ in range(50):  # the authorizer's cache catches up within moments
            try:
                await alice.list_node()
                break
            except ApiException as err:
                assert err.status == 403
                await asyncio.sleep(0.1)
        else:
            pytest.fail("binding to the group never took effect")
        with pytest.raises(ApiException) as still_refused:
            await alice.list_namespace()
        assert still_refused.value.status == 403
    finally:
        await rbac.delete_cluster_role_binding("cp-test-node-reader")
        await rbac.delete_cluster_role("cp-test-node-reader")


async def test_ready_within_15s_and_nothing_outlives_stop() -> None:
    cp = ControlPlane()
    await cp.start()
    workdir = str(cp.dir)
    pids = cp.pids
    try:
        assert cp.ready_seconds < 15, f"control plane took {cp.ready_seconds:.1f}s"
        assert len(pids) == 4  # etcd, kube-apiserver, kube-controller-manager, kube-scheduler
        assert set(pids) <= set(processes_mentioning(workdir))
    finally:
        await cp.stop()
    assert await asyncio.to_thread(wait_gone, workdir, 5) == []
    assert not Path(workdir).exists()


def _start_cli(workdir: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpuctl.cli.main", "controlplane", "up", "--dir", str(workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    kubeconfig = proc.stdout.readline().strip()
    assert kubeconfig, proc.stderr.read() if proc.stderr else "no output"
    return proc, kubeconfig


def _kubectl_readyz(kubeconfig: str) -> str:
    out = subprocess.run(
        [str(find_binaries() / "kubectl"), "--kubeconfig", kubeconfig, "get", "--raw", "/readyz"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return out.stdout.strip()


def test_cli_up_serves_kubectl_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    workdir = tmp_path / "cp"
    proc, kubeconfig = _start_cli(workdir)
    try:
        assert kubeconfig == str(workdir / "kubeconfig")
        assert _kubectl_readyz(kubeconfig) == "ok"
        assert len(processes_mentioning(str(workdir))) >= 5  # python + the four components
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
    assert wait_gone(str(workdir), 5) == []


def test_children_die_with_a_killed_parent(tmp_path: Path) -> None:
    workdir = tmp_path / "cp"
    proc, _ = _start_cli(workdir)
    children = [p for p in processes_mentioning(str(workdir)) if p != proc.pid]
    assert len(children) == 4
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert wait_gone(str(workdir), 10) == []
