"""Rented machines join through Kubernetes' own join path, and GPU pods run on them.

The simulated machines run the join data gpuctl gave each cloud; inside it, `kubeadm
join` is the real discovery + TLS bootstrap code and the kubelet is real kubelet code
(gpuctl-node-agent, with a fake container runtime). Nothing here writes a Node but the
kubelet, kube-controller-manager and gpuctl.
"""

from __future__ import annotations

import base64
import datetime
import json
import subprocess
from typing import Any

import attrs
import pytest
from kubernetes_asyncio import client as k8s_client

from gpuctl.controllers.resources import GPUNODEREQUESTS, GPUPROVIDERS
from gpuctl.dev.controlplane import ControlPlane
from gpuctl.dev.manifests import apply_join_rbac
from gpuctl.runtime.client import Client, is_not_found
from gpuctl.runtime.resources import EVENTS, LEASES, NODES, SECRETS, Resource
from gpuctl.sim import Simulator
from tests.e2e.conftest import (
    NAMESPACE,
    Env,
    MakeRequest,
    delete_and_wait,
    operator_config,
    start_operator,
    wait_for,
    wait_phase,
)

PODS = Resource("", "v1", "pods", "Pod", namespaced=True)
H100X8 = {"gpu": {"type": "H100-80GB", "count": 8}, "capacityType": "on-demand"}
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


def kubectl_json(cp: ControlPlane, *args: str) -> Any:
    out = subprocess.run(
        [str(cp.kubectl), "--kubeconfig", str(cp.kubeconfig), *args, "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return json.loads(out.stdout)


async def gpu_pod(api: Client, name: str, gpus: int, selector: dict[str, str]) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeSelector": selector,
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
            "containers": [
                {
                    "name": "train",
                    "image": "registry.example/train:1",
                    "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
                }
            ],
        },
    }
    await api.create(PODS, body, namespace="default")


async def pod(api: Client, name: str) -> dict[str, Any]:
    return await api.get(PODS, name, namespace="default")


async def test_machine_joins_by_kubeadm_bootstrap_and_a_gpu_pod_runs(
    api: Client, env: Env, make_request: MakeRequest, control_plane: ControlPlane
) -> None:
    spec = {**H100X8, "providers": [env.providers["lambda"]], "node": {"taints": [GPU_TAINT]}}
    name = await make_request("join", spec)
    status = (await wait_phase(api, name, "Ready", timeout=90))["status"]
    node = await api.get(NODES, status["nodeName"])

    # The kubelet registered itself: its version and its capacity, GPUs from the device plugin.
    assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.37.2"
    assert node["status"]["capacity"]["nvidia.com/gpu"] == "8"
    assert node["metadata"]["labels"]["gpuctl.io/request"] == name
    assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in [
        {k: t[k] for k in ("key", "value", "effect") if k in t} for t in node["spec"]["taints"]
    ]
    # ... with a client certificate from an approved, issued CSR its bootstrap token made.
    csrs = kubectl_json(control_plane, "get", "csr")["items"]
    mine = [c for c in csrs if c["spec"]["username"].startswith("system:bootstrap:")]
    issued = [
        c
        for c in mine
        if c["spec"]["signerName"] == "kubernetes.io/kube-apiserver-client-kubelet"
        and any(k["type"] == "Approved" for k in c["status"].get("conditions", []))
        and c["status"].get("certificate")
    ]
    assert issued, [c["metadata"]["name"] for c in csrs]

    async def heartbeat() -> bool:  # the kubelet renews its Lease
        try:
            lease = await api.get(LEASES, status["nodeName"], namespace="kube-node-lease")
        except Exception as err:
            if is_not_found(err):
                return False
            raise
        return bool(lease["spec"].get("holderIdentity") == status["nodeName"])

    await wait_for(heartbeat, 30, "the node's Lease")

    # The token served its one join and is gone.
    tokens = await api.list(
        SECRETS, namespace="kube-system", label_selector=f"gpuctl.io/request={name}"
    )
    assert tokens["items"] == []

    # The real scheduler binds a pod asking for all 8 GPUs; the fake runtime runs it.
    await gpu_pod(api, f"{name}-train", 8, {"gpuctl.io/request": name})
    await gpu_pod(api, f"{name}-b200", 1, {"gpuctl.io/gpu-type": "B200-192GB"})
    try:

        async def running() -> bool:
            found = await pod(api, f"{name}-train")
            return found["status"].get("phase") == "Running"

        await wait_for(running, 60, "the GPU pod Running")
        assert (await pod(api, f"{name}-train"))["spec"]["nodeName"] == status["nodeName"]
        pending = await pod(api, f"{name}-b200")
        assert pending["status"]["phase"] == "Pending"
        assert "nodeName" not in pending["spec"]
    finally:
        for pod_name in (f"{name}-train", f"{name}-b200"):
            await api.delete(PODS, pod_name, namespace="default", grace_period_seconds=0)


@pytest.mark.parametrize("cloud", ["paperspace", "runpod"])
async def test_script_clouds_join_with_a_bash_script(
    api: Client, env: Env, make_request: MakeRequest, sim: Simulator, cloud: str
) -> None:
    """Paperspace runs a startup script, RunPod a start command: both with bash."""
    gpu_type = "A100-80GB" if cloud == "paperspace" else "RTX-4090"
    gpu = {"type": gpu_type, "count": 1}
    name = await make_request(cloud, {"gpu": gpu, "providers": [env.providers[cloud]]})
    status = (await wait_phase(api, name, "Ready", timeout=90))["status"]
    (machine,) = [i for i in sim.instances(cloud) if i.id == status["instance"]["id"]]
    assert "#!/bin/bash\nset -euo pipefail\n" in machine.join_script  # RunPod: bash -c <it>
    assert "#cloud-config" not in machine.join_script
    node = await api.get(NODES, status["nodeName"])
    assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.37.2"


async def test_join_data_the_machine_cannot_run_never_joins_and_the_request_says_so(
    api: Client, env: Env, make_request: MakeRequest, kube: Any
) -> None:
    """A bootstrap script whose kubeadm join has a flag kubeadm does not know: the machine
    boots, the join fails there, no Node ever appears, the request times out with a reason."""
    template = '#!/bin/bash\nkubeadm join "${GPUCTL_API_SERVER#https://}" --no-such-flag\n'
    secret = f"bad-template-{env.suffix}"
    await api.create(
        SECRETS,
        {
            "metadata": {"name": secret, "namespace": NAMESPACE},
            "data": {"script": base64.b64encode(template.encode()).decode()},
        },
        namespace=NAMESPACE,
    )
    provider = env.providers["lambda"]
    patch = {
        "spec": {
            "bootstrap": {
                "method": "script",
                "templateSecretRef": {"namespace": NAMESPACE, "name": secret, "key": "script"},
            }
        }
    }
    await api.patch(GPUPROVIDERS, provider, patch)
    name = await make_request(
        "badjoin",
        {
            "gpu": {"type": "A10-24GB", "count": 1},
            "providers": [provider],
            "registrationTimeout": "8s",
        },
    )

    async def timed_out() -> bool:
        status = (await api.get(GPUNODEREQUESTS, name)).get("status") or {}
        return any(f["reason"] == "RegistrationTimeout" for f in status.get("failedOffers", []))

    await wait_for(timed_out, 60, "RegistrationTimeout")
    nodes = await api.list(NODES, label_selector=f"gpuctl.io/request={name}")
    assert nodes["items"] == []
    selector = f"involvedObject.name={name}"
    events = await api.list(EVENTS, namespace="default", field_selector=selector)
    messages = [e["message"] for e in events["items"] if e["reason"] == "RegistrationTimeout"]
    assert messages and "no Ready Node within 0:00:08 of launch" in messages[0]


async def test_a_hung_machine_goes_unknown_and_is_replaced(
    api: Client, env: Env, sim: Simulator, control_plane: ControlPlane, kube: Any
) -> None:
    """The kubelet stops (the machine hangs) while the cloud still says running:
    kube-controller-manager marks the Node Unknown after its grace period, and gpuctl
    replaces the machine after --node-unhealthy-after."""
    config = operator_config(env, control_plane)
    fast = attrs.evolve(config.settings, node_unhealthy_after=datetime.timedelta(seconds=3))
    running = await start_operator(attrs.evolve(config, settings=fast))
    name = f"hang-{env.suffix}"
    try:
        spec = {"gpu": {"type": "A10-24GB", "count": 1}, "providers": [env.providers["lambda"]]}
        body = {"apiVersion": "gpuctl.io/v1alpha1", "kind": "GPUNodeRequest"}
        await api.create(GPUNODEREQUESTS, {**body, "metadata": {"name": name}, "spec": spec})
        first = (await wait_phase(api, name, "Ready", timeout=90))["status"]
        await sim.hang("lambda", first["instance"]["id"])

        async def unknown() -> bool:
            node = await api.get(NODES, first["nodeName"])
            ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
            return bool(ready and ready[0]["status"] == "Unknown")

        await wait_for(unknown, 60, "the Node Ready=Unknown (kube-controller-manager)")

        async def replaced() -> bool:
            status = (await api.get(GPUNODEREQUESTS, name)).get("status") or {}
            return status.get("phase") == "Ready" and status.get("attempt") == 2

        await wait_for(replaced, 90, "a replacement Ready")
        status = (await api.get(GPUNODEREQUESTS, name))["status"]
        assert [f["reason"] for f in status["failedOffers"]] == ["Interrupted"]
        lost = sim.instance("lambda", first["instance"]["id"])
        assert lost.phase.value in ("terminating", "terminated")  # gpuctl terminated it
        assert "not Ready for 0:00:03" in status["failedOffers"][0]["message"]
    finally:
        await delete_and_wait(api, name, 90)
        await running.halt()


async def test_without_the_join_rbac_of_manifests_no_machine_joins(
    api: Client,
    env: Env,
    make_request: MakeRequest,
    sim: Simulator,
    control_plane: ControlPlane,
    kube: Any,
) -> None:
    """The join works only because of manifests/join: without its CSR grant for gpuctl's
    token group, the kubelet's TLS bootstrap is refused and no Node ever appears."""
    rbac = k8s_client.RbacAuthorizationV1Api(kube)
    await rbac.delete_cluster_role_binding("gpuctl:kubelet-bootstrap")
    try:
        name = await make_request(
            "norbac",
            {
                "gpu": {"type": "A10-24GB", "count": 1},
                "providers": [env.providers["lambda"]],
                "registrationTimeout": "15s",
            },
        )

        async def timed_out() -> bool:
            status = (await api.get(GPUNODEREQUESTS, name)).get("status") or {}
            failed = status.get("failedOffers", [])
            return any(f["reason"] == "RegistrationTimeout" for f in failed)

        await wait_for(timed_out, 60, "RegistrationTimeout")
        assert (await api.list(NODES, label_selector=f"gpuctl.io/request={name}"))["items"] == []
        (machine, *_) = sim.instances("lambda")
        log = sim.machine_file("lambda", machine.id, "/var/log/kubelet.log") or b""
        assert b"forbidden" in log.lower() or b"cannot create" in log.lower(), log[-2000:]
    finally:
        await apply_join_rbac(control_plane)
