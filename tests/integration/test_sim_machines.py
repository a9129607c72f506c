"""Simulated machines join the real cluster through Kubernetes' own join path.

Each machine is launched through its cloud's published API with the join data
gpuctl renders (gpuctl.controllers.bootstrap), a bootstrap token Secret like the
operator's and the join RBAC of manifests/join. The simulator runs the join data
as the cloud would and the real node agent (bin/k8s/gpuctl-node-agent) does
kubeadm's token discovery, the kubelet's TLS bootstrap (a CSR approved and signed
by kube-controller-manager) and runs as system:node:<name>. Needs root (the
machines' namespaces) and the agent: skipped otherwise.
"""

from __future__ import annotations

import asyncio
import datetime
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from gpuctl.controllers import bootstrap
from gpuctl.dev.controlplane import ControlPlane, repo_root
from gpuctl.providers.base import JoinMethod
from gpuctl.sim import JoinStatus, MachineError, SimConfig, Simulator
from gpuctl.sim.machines import find_node_agent
from tests.unit.test_sim_machine_runner import (
    launch_lambda,
    launch_paperspace,
    launch_runpod,
    needs_machines,
    session_pids,
    sid_of,
)
from tests.unit.test_sim_support import CloudClient


def _agent() -> Path | None:
    try:
        return find_node_agent()
    except MachineError:
        return None


AGENT = _agent()
pytestmark = [
    needs_machines,
    pytest.mark.skipif(AGENT is None, reason="bin/k8s/gpuctl-node-agent not built"),
]
JOIN_RBAC = (repo_root() or Path(".")) / "manifests" / "join"
READY_TIMEOUT = 90.0


@pytest.fixture(scope="module")
def join_rbac(control_plane: ControlPlane) -> Iterator[None]:
    """manifests/join: kubeadm's join grants for gpuctl's token group."""
    kubectl = [str(control_plane.kubectl), "--kubeconfig", str(control_plane.kubeconfig)]
    subprocess.run([*kubectl, "apply", "-k", str(JOIN_RBAC)], check=True, capture_output=True)
    yield


@pytest.fixture
async def sim(tmp_path: Path, join_rbac: None) -> AsyncIterator[Simulator]:
    config = SimConfig(
        seed=11,
        boot_seconds=0.0,
        terminate_seconds=0.2,
        execute_join_data=True,
        workdir=tmp_path / "machines",
    )
    async with Simulator(config) as simulator:
        yield simulator


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def join_data(
    control_plane: ControlPlane, kube: client.ApiClient
) -> AsyncIterator[Callable[..., Any]]:
    """`await join_data(node, cloud_format, **overrides)`: a fresh token Secret, the script."""
    nodes: list[str] = []

    async def make(node: str, cloud_format: JoinMethod, **overrides: Any) -> str:
        token = bootstrap.Token.generate()
        expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
        secret = bootstrap.token_secret(token, request=node, attempt=1, expires=expires)
        await client.CoreV1Api(kube).create_namespaced_secret("kube-system", secret)
        params = bootstrap.JoinParams(
            api_server=control_plane.url,
            token=token,
            ca_cert_hash=control_plane.ca_hash,
            node_name=node,
            labels={"gpuctl.io/request": node},
            taints=("nvidia.com/gpu=present:NoSchedule",),
        )
        params = attrs.evolve(params, **overrides)
        nodes.append(node)
        return bootstrap.render(bootstrap.Method.KUBEADM, params, cloud_format=cloud_format).script

    yield make
    core = client.CoreV1Api(kube)
    for node in nodes:
        try:
            await core.delete_node(node)
        except ApiException as error:
            if error.status != 404:
                raise


async def node_condition(kube: client.ApiClient, name: str) -> tuple[client.V1Node | None, str]:
    try:
        node = await client.CoreV1Api(kube).read_node(name)
    except ApiException as error:
        if error.status == 404:
            return None, "absent"
        raise
    ready = [c.status for c in node.status.conditions or [] if c.type == "Ready"]
    return node, ready[0] if ready else "none"


async def wait_ready(kube: client.ApiClient, name: str, status: str = "True") -> client.V1Node:
    async with asyncio.timeout(READY_TIMEOUT):
        while True:
            node, ready = await node_condition(kube, name)
            if node is not None and ready == status:
                return node
            await asyncio.sleep(0.5)


async def wait_gpus(kube: client.ApiClient, name: str) -> client.V1Node:
    """The device plugin registers after the kubelet's first status: the GPUs show with a
    later status update (gpuctl's initialization waits for them the same way)."""
    async with asyncio.timeout(READY_TIMEOUT):
        while True:
            node = await client.CoreV1Api(kube).read_node(name)
            if (node.status.capacity or {}).get("nvidia.com/gpu", "0") != "0":
                return node
            await asyncio.sleep(0.5)


def agent_version() -> str:
    assert AGENT is not None
    out = subprocess.run([str(AGENT), "version"], capture_output=True, text=True, check=True)
    return out.stdout.split()[-1]


async def test_lambda_machine_joins_as_a_ready_node_and_leaves_with_the_machine(
    sim: Simulator,
    session: aiohttp.ClientSession,
    kube: client.ApiClient,
    join_data: Callable[..., Any],
) -> None:
    node_name = "sim-lambda-join"
    iid = await launch_lambda(sim, session, await join_data(node_name, JoinMethod.USER_DATA))
    machine = await sim.wait_join("lambda", iid, READY_TIMEOUT)
    assert machine.join_status is JoinStatus.JOINED, machine.join_detail
    assert machine.node_name == node_name
    await wait_ready(kube, node_name)
    node = await wait_gpus(kube, node_name)
    assert node.status.node_info.kubelet_version == agent_version()
    assert node.metadata.labels["gpuctl.io/request"] == node_name
    assert node.status.capacity["nvidia.com/gpu"] == "8"
    assert node.status.capacity["cpu"] == "208"
    taints = {(t.key, t.value, t.effect) for t in node.spec.taints or []}
    assert ("nvidia.com/gpu", "present", "NoSchedule") in taints
    # the kubelet's client certificate came from a CSR the controller-manager approved
    csrs = await client.CertificatesV1Api(kube).list_certificate_signing_request()
    mine = [
        c
        for c in csrs.items
        if c.spec.signer_name == "kubernetes.io/kube-apiserver-client-kubelet"
        and c.spec.username.startswith("system:bootstrap:")
        and any(g == "system:bootstrappers:gpuctl" for g in c.spec.groups or [])
    ]
    assert any(cond.type == "Approved" for c in mine for cond in (c.status.conditions or [])), (
        "no approved bootstrap CSR"
    )

    sid = sid_of(sim, "lambda", iid)
    assert session_pids(sid)
    await CloudClient(sim, "lambda", session).call(
        "POST", "/api/v1/instance-operations/terminate", json_body={"instance_ids": [iid]}
    )
    await sim.settle()
    assert session_pids(sid) == []  # the agent and everything else of the machine is gone
    # no heartbeats any more: kube-controller-manager marks the Node Unknown
    await wait_ready(kube, node_name, status="Unknown")


async def test_a_wrong_ca_hash_is_refused_by_discovery(
    sim: Simulator,
    session: aiohttp.ClientSession,
    kube: client.ApiClient,
    join_data: Callable[..., Any],
) -> None:
    node_name = "sim-lambda-wrong-ca"
    user_data = await join_data(node_name, JoinMethod.USER_DATA, ca_cert_hash="sha256:" + "0" * 64)
    iid = await launch_lambda(sim, session, user_data)
    machine = await sim.wait_join("lambda", iid, READY_TIMEOUT)
    assert machine.join_status is JoinStatus.FAILED, machine.join_detail
    assert "are pinned" in machine.join_detail  # kubeadm: "none of the public keys ... are pinned"
    assert (await node_condition(kube, node_name))[1] == "absent"


async def test_paperspace_joins_with_a_bash_script_and_never_with_a_cloud_config(
    sim: Simulator,
    session: aiohttp.ClientSession,
    kube: client.ApiClient,
    join_data: Callable[..., Any],
) -> None:
    sim.state.set_capacity("paperspace", "ny2", "A100-80Gx8", 3)
    good = await launch_paperspace(
        sim, session, await join_data("sim-ps-bash", JoinMethod.STARTUP_SCRIPT)
    )
    yaml_script = await join_data("sim-ps-cloud-config", JoinMethod.USER_DATA)
    bad = await launch_paperspace(sim, session, yaml_script)
    too_big = await launch_paperspace(
        sim,
        session,
        await join_data("sim-ps-too-big", JoinMethod.STARTUP_SCRIPT) + "#" * 16384,
    )
    joined = await sim.wait_join("paperspace", good, READY_TIMEOUT)
    assert joined.join_status is JoinStatus.JOINED, joined.join_detail
    await wait_ready(kube, "sim-ps-bash")
    failed = await sim.wait_join("paperspace", bad, READY_TIMEOUT)
    assert failed.join_status is JoinStatus.FAILED, failed.join_detail
    not_run = await sim.wait_join("paperspace", too_big, READY_TIMEOUT)
    assert not_run.join_status is JoinStatus.NOT_RUN
    assert "16 KB" in not_run.join_detail
    for name in ("sim-ps-cloud-config", "sim-ps-too-big"):
        assert (await node_condition(kube, name))[1] == "absent"


async def test_runpod_bash_c_start_command_joins_then_the_container_stops(
    sim: Simulator,
    session: aiohttp.ClientSession,
    kube: client.ApiClient,
    join_data: Callable[..., Any],
) -> None:
    """A start command `bash -c <join>` that exits after the join: a container stops with
    its main process, and the kubelet with it (gpuctl's own stays up: exec sleep)."""
    script = await join_data("sim-runpod-exits", JoinMethod.CONTAINER_ENV)
    assert "exec sleep infinity" in script
    script = script.replace("exec sleep infinity", "true")
    pod = await launch_runpod(sim, session, dockerStartCmd=["bash", "-c", script])
    machine = await sim.wait_gone("runpod", pod, READY_TIMEOUT)
    assert machine.join_status is JoinStatus.CONTAINER_EXITED, machine.join_detail
    assert "it had joined" in machine.join_detail
