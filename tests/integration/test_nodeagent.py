"""gpuctl-node-agent joins the dev control plane the way `kubeadm join` does.

One machine, without the simulator: a mount namespace whose /etc, /var and /run
are overlayfs over the host's (the host's own are never written), the machine's
"hardware" in /etc/gpuctl-sim/hardware.json (8 GPUs) and KUBELET_EXTRA_ARGS in
/etc/default/kubelet, then `gpuctl-node-agent kubeadm join` with a bootstrap token
Secret in kubeadm's token group. Checked: kubeadm's token discovery (JWS signature,
CA pinned by hash), the kubelet's TLS bootstrap (CSR approved and issued by
kube-controller-manager), the Node Ready with kubelet v1.37.2 and nvidia.com/gpu
from the device plugin, a GPU pod scheduled and Running; a wrong CA hash refused.
Needs root, mount namespaces, overlayfs and bin/k8s/gpuctl-node-agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from gpuctl.dev.controlplane import ControlPlane, repo_root

AGENT = (repo_root() or Path(".")) / "bin" / "k8s" / "gpuctl-node-agent"
T = TypeVar("T")
KUBEADM_TOKEN_GROUP = "system:bootstrappers:kubeadm:default-node-token"
HARDWARE = '{"cpus": 26, "memoryGiB": 200, "gpus": 8, "gpuProduct": "NVIDIA-H100-80GB-HBM3"}'
TIMEOUT = 60.0

# Runs "$@" in a private mount namespace with overlays over /etc, /var and /run.
MACHINE = r"""
set -eu
m=$1; shift
for d in etc var run; do
  mkdir -p "$m/upper/$d" "$m/work/$d"
  mount -t overlay overlay -o "lowerdir=/$d,upperdir=$m/upper/$d,workdir=$m/work/$d" "/$d"
done
mkdir -p /etc/gpuctl-sim
printf '%s\n' "$GPUCTL_TEST_HARDWARE" > /etc/gpuctl-sim/hardware.json
printf 'KUBELET_EXTRA_ARGS=--node-labels=%s\n' "$GPUCTL_TEST_LABELS" > /etc/default/kubelet
exec "$@"
"""


def _cannot_isolate() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    if shutil.which("unshare") is None:
        return "no unshare(1)"
    if not AGENT.is_file():
        return f"{AGENT} not built (make controlplane)"
    with tempfile.TemporaryDirectory() as tmp:
        lower, upper, work, target = (Path(tmp, d) for d in ("l", "u", "w", "t"))
        for d in (lower, upper, work, target):
            d.mkdir()
        opts = f"lowerdir={lower},upperdir={upper},workdir={work}"
        probe = subprocess.run(
            [
                *("unshare", "--mount", "--propagation", "private"),
                *("mount", "-t", "overlay", "overlay", "-o", opts, str(target)),
            ],
            check=False,
            capture_output=True,
            text=True,
        )
        if probe.returncode != 0:
            return f"no mount namespace with overlayfs: {probe.stderr.strip()}"
    return None


_SKIP = _cannot_isolate()
pytestmark = pytest.mark.skipif(_SKIP is not None, reason=f"cannot run a machine: {_SKIP}")


class Machine:
    """One simulated machine: its own process group, killed as a whole at the end."""

    def __init__(self, root: Path, name: str) -> None:
        self.root = root / name
        self.name = name
        self.proc: asyncio.subprocess.Process | None = None

    async def run(self, *args: str) -> tuple[int, str]:
        """`gpuctl-node-agent args...` in the machine; its exit code and output."""
        self.root.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "GPUCTL_TEST_HARDWARE": HARDWARE,
            "GPUCTL_TEST_LABELS": f"gpuctl.io/test={self.name}",
        }
        self.proc = await asyncio.create_subprocess_exec(
            *("unshare", "--mount", "--propagation", "private", "sh", "-c", MACHINE, "machine"),
            *(str(self.root), str(AGENT), *args),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        out, _ = await asyncio.wait_for(self.proc.communicate(), TIMEOUT)
        assert self.proc.returncode is not None
        return self.proc.returncode, out.decode()

    def file(self, path: str) -> Path:
        return self.root / "upper" / path.lstrip("/")

    def kill(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # the kubelet is in this group


@pytest.fixture
async def machines(tmp_path: Path, kube: client.ApiClient) -> AsyncIterator[Callable[[], Machine]]:
    made: list[Machine] = []

    def make() -> Machine:
        machine = Machine(tmp_path, f"agent-{secrets.token_hex(3)}")
        made.append(machine)
        return machine

    yield make
    core = client.CoreV1Api(kube)
    for machine in made:
        machine.kill()
        try:
            await core.delete_node(machine.name)
        except ApiException as error:
            if error.status != 404:
                raise


@pytest.fixture
async def token(kube: client.ApiClient) -> AsyncIterator[str]:
    """A bootstrap token in kubeadm's node group, as `kubeadm token create` makes."""
    token_id, secret = secrets.token_hex(3), secrets.token_hex(8)
    expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    body = client.V1Secret(
        metadata=client.V1ObjectMeta(name=f"bootstrap-token-{token_id}", namespace="kube-system"),
        type="bootstrap.kubernetes.io/token",
        string_data={
            "token-id": token_id,
            "token-secret": secret,
            "expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "usage-bootstrap-authentication": "true",
            "usage-bootstrap-signing": "true",
            "auth-extra-groups": KUBEADM_TOKEN_GROUP,
        },
    )
    core = client.CoreV1Api(kube)
    await core.create_namespaced_secret("kube-system", body)
    yield f"{token_id}.{secret}"
    await core.delete_namespaced_secret(f"bootstrap-token-{token_id}", "kube-system")


async def eventually(check: Callable[[], Awaitable[T | None]], what: str) -> T:
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while True:
        result = await check()
        if result is not None:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.5)


async def test_agent_joins_ready_with_gpus_and_runs_a_gpu_pod(
    control_plane: ControlPlane,
    kube: client.ApiClient,
    namespace: str,
    machines: Callable[[], Machine],
    token: str,
) -> None:
    machine = machines()
    endpoint = control_plane.url.removeprefix("https://")
    code, out = await machine.run(
        *("kubeadm", "join", endpoint, "--token", token),
        *("--discovery-token-ca-cert-hash", control_plane.ca_hash, "--node-name", machine.name),
    )
    assert code == 0, out
    assert "This node has joined the cluster" in out
    # what kubeadm leaves on the machine (bootstrap-kubelet.conf is deleted after the join)
    assert (
        "--hostname-override=" + machine.name
        in machine.file("/var/lib/kubelet/kubeadm-flags.env").read_text()
    )
    assert machine.file("/etc/kubernetes/kubelet.conf").is_file()
    assert machine.file("/etc/kubernetes/pki/ca.crt").read_bytes() == (
        control_plane.ca_file.read_bytes()
    )
    assert not machine.file("/etc/kubernetes/bootstrap-kubelet.conf").exists()

    core = client.CoreV1Api(kube)

    async def ready() -> client.V1Node | None:
        try:
            node = await core.read_node(machine.name)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        conditions = {c.type: c.status for c in node.status.conditions or []}
        if conditions.get("Ready") != "True":
            return None
        # A device plugin's resources reach the Node with a later status update of the
        # kubelet than the first Ready one (up to its 10 s node-status period): as
        # gpuctl does before it calls a request Ready, wait for them.
        return node if "nvidia.com/gpu" in (node.status.capacity or {}) else None

    node = await eventually(ready, f"Node {machine.name} Ready with its GPUs")
    assert node.status.node_info.kubelet_version == "v1.37.2"
    assert node.status.capacity["nvidia.com/gpu"] == "8"
    assert node.status.capacity["cpu"] == "26"
    assert node.status.capacity["memory"] == "200Gi"
    assert node.metadata.labels["gpuctl.io/test"] == machine.name

    token_id = token.split(".", maxsplit=1)[0]
    csrs = await client.CertificatesV1Api(kube).list_certificate_signing_request()
    mine = [c for c in csrs.items if c.spec.username == f"system:bootstrap:{token_id}"]
    assert len(mine) == 1
    assert mine[0].spec.signer_name == "kubernetes.io/kube-apiserver-client-kubelet"
    assert {c.type for c in mine[0].status.conditions or []} == {"Approved"}
    assert mine[0].status.certificate

    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="cuda"),
        spec=client.V1PodSpec(
            node_selector={"kubernetes.io/hostname": machine.name},
            automount_service_account_token=False,
            containers=[
                client.V1Container(
                    name="cuda",
                    image="nvcr.io/nvidia/cuda:12.4.0-base-ubuntu22.04",
                    resources=client.V1ResourceRequirements(limits={"nvidia.com/gpu": "2"}),
                )
            ],
        ),
    )
    await core.create_namespaced_pod(namespace, pod)

    async def running() -> client.V1Pod | None:
        p = await core.read_namespaced_pod("cuda", namespace)
        return p if p.status.phase == "Running" else None

    running_pod = await eventually(running, "the GPU pod Running")
    assert running_pod.spec.node_name == machine.name
    # the device plugin's Allocate answer, in the kubelet's device checkpoint
    checkpoint = machine.file("/var/lib/kubelet/device-plugins/kubelet_internal_checkpoint")
    assert running_pod.metadata.uid in checkpoint.read_text()
    await core.delete_namespaced_pod("cuda", namespace, grace_period_seconds=0)


async def test_agent_refuses_a_wrong_ca_hash(
    control_plane: ControlPlane, machines: Callable[[], Machine], token: str
) -> None:
    machine = machines()
    endpoint = control_plane.url.removeprefix("https://")
    wrong = "sha256:" + "00" * 32
    code, out = await machine.run(
        *("kubeadm", "join", endpoint, "--token", token, "--discovery-token-ca-cert-hash", wrong),
        *("--node-name", machine.name),
    )
    assert code == 1, out
    assert "couldn't validate the identity of the API Server" in out
    # kubeadm names the key it found, which is not among those pinned
    assert f'none of the public keys "{control_plane.ca_hash}" are pinned' in out
    assert not machine.file("/etc/kubernetes/kubelet.conf").exists()


async def test_agent_refuses_an_unknown_flag(machines: Callable[[], Machine]) -> None:
    code, out = await machines().run("kubeadm", "join", "127.0.0.1:6443", "--no-such-flag")
    assert code == 1
    assert "unknown flag: --no-such-flag" in out
