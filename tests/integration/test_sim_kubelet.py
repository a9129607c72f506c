"""The simulated kubelet against the real API server: bootstrap-token join, leave, preemption.

Each machine is launched through its cloud's published API with join data that
carries the contract's variables (Lambda user data, RunPod container env,
Paperspace startup script); the kubelet registers the Node with a real
bootstrap token Secret, verified TLS and the kubeadm CA hash check.
"""

from __future__ import annotations

import asyncio
import datetime
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from gpuctl.dev.controlplane import ControlPlane
from gpuctl.dev.pki import ca_public_key_hash
from gpuctl.sim import JoinStatus, SimConfig, Simulator, install_kubelet_rbac
from gpuctl.sim.rbac import BOOTSTRAP_GROUP
from tests.unit.test_sim_support import CloudClient, no_violations

Launch = Callable[[Simulator, aiohttp.ClientSession, dict[str, str]], Awaitable[str]]


async def create_bootstrap_token(
    kube: client.ApiClient, *, expires_in: datetime.timedelta = datetime.timedelta(hours=1)
) -> str:
    """A kube-system bootstrap token Secret, as kubeadm creates them; returns id.secret."""
    token_id, token_secret = secrets.token_hex(3), secrets.token_hex(8)
    expiration = datetime.datetime.now(datetime.UTC) + expires_in
    secret = client.V1Secret(
        metadata=client.V1ObjectMeta(name=f"bootstrap-token-{token_id}", namespace="kube-system"),
        type="bootstrap.kubernetes.io/token",
        string_data={
            "token-id": token_id,
            "token-secret": token_secret,
            "usage-bootstrap-authentication": "true",
            "auth-extra-groups": BOOTSTRAP_GROUP,
            "expiration": expiration.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    )
    await client.CoreV1Api(kube).create_namespaced_secret("kube-system", secret)
    return f"{token_id}.{token_secret}"


async def wait_token_accepted(control_plane: ControlPlane, token: str) -> None:
    """The authenticator reads tokens from an informer: wait until it knows this one."""
    configuration = client.Configuration(host=control_plane.url)
    configuration.api_key = {"BearerToken": token}
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    configuration.ssl_ca_cert = str(control_plane.ca_file)
    async with client.ApiClient(configuration) as api:
        for _ in range(100):
            try:
                await client.CoreV1Api(api).list_node(limit=1)
                return
            except ApiException as error:
                if error.status != 401:
                    raise
            await asyncio.sleep(0.05)
    raise AssertionError("the API server never accepted the bootstrap token")


def join_env(control_plane: ControlPlane, token: str, node: str) -> dict[str, str]:
    return {
        "GPUCTL_API_SERVER": control_plane.url,
        "GPUCTL_BOOTSTRAP_TOKEN": token,
        "GPUCTL_CA_CERT_HASH": ca_public_key_hash(control_plane.ca_file.read_bytes()),
        "GPUCTL_NODE_NAME": node,
        "GPUCTL_NODE_LABELS": f"gpuctl.io/request=req-{node},gpuctl.io/instance-name={node}",
        "GPUCTL_NODE_TAINTS": "nvidia.com/gpu=present:NoSchedule",
    }


def script(env: dict[str, str]) -> str:
    exports = "".join(f"export {name}='{value}'\n" for name, value in env.items())
    return f"#!/bin/bash\nset -euo pipefail\n{exports}kubeadm join --config /etc/gpuctl/join.yaml\n"


async def launch_lambda(sim: Simulator, session: aiohttp.ClientSession, env: dict[str, str]) -> str:
    body = {
        "region_name": "us-east-1",
        "instance_type_name": "gpu_8x_h100_sxm5",
        "ssh_key_names": ["gpuctl"],
        "name": env["GPUCTL_NODE_NAME"],
        "user_data": script(env),
    }
    answer = await CloudClient(sim, "lambda", session).call(
        "POST", "/api/v1/instance-operations/launch", json_body=body
    )
    instance_id: str = answer.body["data"]["instance_ids"][0]
    return instance_id


async def launch_runpod(sim: Simulator, session: aiohttp.ClientSession, env: dict[str, str]) -> str:
    body = {
        "name": env["GPUCTL_NODE_NAME"],
        "gpuTypeIds": ["NVIDIA H100 80GB HBM3"],
        "gpuCount": 2,
        "interruptible": True,
        "imageName": "ghcr.io/gpuctl/node:latest",
        "env": env,
    }
    answer = await CloudClient(sim, "runpod", session).call("POST", "/v1/pods", json_body=body)
    pod_id: str = answer.body["id"]
    return pod_id


async def launch_paperspace(
    sim: Simulator, session: aiohttp.ClientSession, env: dict[str, str]
) -> str:
    api = CloudClient(sim, "paperspace", session)
    name = env["GPUCTL_NODE_NAME"]
    created = await api.call(
        "POST", "/v1/startup-scripts", json_body={"name": name, "script": script(env)}
    )
    body = {
        "name": name,
        "machineType": "A100-80Gx8",
        "templateId": "t0nspur5",
        "diskSize": 500,
        "region": "ny2",
        "startupScriptId": created.body["id"],
    }
    machine_id: str = (await api.call("POST", "/v1/machines", json_body=body)).body["data"]["id"]
    return machine_id


async def terminate(sim: Simulator, session: aiohttp.ClientSession, cloud: str, iid: str) -> None:
    api = CloudClient(sim, cloud, session)
    if cloud == "lambda":
        await api.call(
            "POST", "/api/v1/instance-operations/terminate", json_body={"instance_ids": [iid]}
        )
    elif cloud == "runpod":
        await api.call("DELETE", f"/v1/pods/{iid}")
    else:
        await api.call("DELETE", f"/v1/machines/{iid}")


LAUNCHERS: dict[str, tuple[Launch, str, str]] = {
    # cloud: (launcher, native region, expected nvidia.com/gpu)
    "lambda": (launch_lambda, "us-east-1", "8"),
    "runpod": (launch_runpod, "", "2"),
    "paperspace": (launch_paperspace, "ny2", "8"),
}


@pytest.fixture
async def sim(control_plane: ControlPlane, kube: client.ApiClient) -> AsyncIterator[Simulator]:
    await install_kubelet_rbac(kube)
    await install_kubelet_rbac(kube)  # idempotent
    config = SimConfig(
        seed=21,
        boot_seconds=0.0,
        terminate_seconds=0.0,
        kubeconfig=control_plane.kubeconfig,
        ca_file=control_plane.ca_file,
    )
    async with Simulator(config) as simulator:
        yield simulator
    no_violations(simulator)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


@pytest.fixture
async def token(control_plane: ControlPlane, kube: client.ApiClient) -> str:
    value = await create_bootstrap_token(kube)
    await wait_token_accepted(control_plane, value)
    return value


async def read_node(kube: client.ApiClient, name: str) -> client.V1Node | None:
    try:
        return await client.CoreV1Api(kube).read_node(name)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def ready(node: client.V1Node) -> str:
    return next(c.status for c in node.status.conditions if c.type == "Ready")


@pytest.mark.parametrize("cloud", list(LAUNCHERS))
async def test_machine_joins_then_leaves(
    sim: Simulator,
    session: aiohttp.ClientSession,
    kube: client.ApiClient,
    control_plane: ControlPlane,
    token: str,
    cloud: str,
) -> None:
    launcher, region, gpus = LAUNCHERS[cloud]
    name = f"gpu-{cloud}-{secrets.token_hex(3)}"
    instance_id = await launcher(sim, session, join_env(control_plane, token, name))
    await sim.settle()
    (record,) = sim.instances(cloud)
    assert (record.join_status, record.node_name) == (JoinStatus.JOINED, name), record.join_detail

    node = await read_node(kube, name)
    assert node is not None and ready(node) == "True"
    region = region or record.region
    assert node.spec.provider_id == f"gpuctl://{cloud}/{region}/{instance_id}"
    labels = node.metadata.labels
    assert labels["gpuctl.io/request"] == f"req-{name}"
    assert labels["gpuctl.io/instance-name"] == name
    assert labels["topology.kubernetes.io/region"] == region
    assert labels["kubernetes.io/hostname"] == name
    assert labels["node.kubernetes.io/instance-type"]
    assert node.status.capacity["nvidia.com/gpu"] == gpus
    assert node.status.allocatable["nvidia.com/gpu"] == gpus
    taints = {(t.key, t.value, t.effect) for t in node.spec.taints or []}
    assert ("nvidia.com/gpu", "present", "NoSchedule") in taints

    await terminate(sim, session, cloud, instance_id)
    await sim.settle()
    assert await read_node(kube, name) is None
    assert sim.instances(cloud)[0].node_name is None


async def test_preemption_leaves_the_node_unknown(
    sim: Simulator,
    session: aiohttp.ClientSession,
    kube: client.ApiClient,
    control_plane: ControlPlane,
    token: str,
) -> None:
    name = f"gpu-spot-{secrets.token_hex(3)}"
    pod_id = await launch_runpod(sim, session, join_env(control_plane, token, name))
    await sim.settle()
    sim.state.interrupt("runpod", pod_id)
    await sim.settle()
    node = await read_node(kube, name)
    assert node is not None, "a preempted machine's Node is left for the operator"
    assert ready(node) == "Unknown"
    pod = await CloudClient(sim, "runpod", session).call("GET", f"/v1/pods/{pod_id}")
    assert pod.body["desiredStatus"] == "EXITED"
    await client.CoreV1Api(kube).delete_node(name)


async def no_node_joined(sim: Simulator, kube: client.ApiClient, name: str) -> Any:
    await sim.settle()
    (record,) = sim.instances("lambda")
    assert record.node_name is None
    assert await read_node(kube, name) is None
    return record


async def test_wrong_token_means_no_node(
    sim: Simulator,
    session: aiohttp.ClientSession,
    kube: client.ApiClient,
    token: str,
    control_plane: ControlPlane,
) -> None:
    name = f"gpu-bad-{secrets.token_hex(3)}"
    token_id = token.partition(".")[0]
    env = join_env(control_plane, f"{token_id}.{'0' * 16}", name)
    await launch_lambda(sim, session, env)
    record = await no_node_joined(sim, kube, name)
    assert record.join_status is JoinStatus.REJECTED


async def test_expired_token_means_no_node(
    sim: Simulator,
    session: aiohttp.ClientSession,
    kube: client.ApiClient,
    control_plane: ControlPlane,
) -> None:
    expired = await create_bootstrap_token(kube, expires_in=datetime.timedelta(minutes=-5))
    name = f"gpu-old-{secrets.token_hex(3)}"
    await launch_lambda(sim, session, join_env(control_plane, expired, name))
    record = await no_node_joined(sim, kube, name)
    assert record.join_status is JoinStatus.REJECTED


async def test_wrong_ca_hash_is_refused(
    sim: Simulator,
    session: aiohttp.ClientSession,
    kube: client.ApiClient,
    token: str,
    control_plane: ControlPlane,
) -> None:
    name = f"gpu-mitm-{secrets.token_hex(3)}"
    env = {**join_env(control_plane, token, name), "GPUCTL_CA_CERT_HASH": "sha256:" + "0" * 64}
    await launch_lambda(sim, session, env)
    record = await no_node_joined(sim, kube, name)
    assert record.join_status is JoinStatus.REFUSED
