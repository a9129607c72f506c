"""The simulated kubelet: what a rented machine does to become (and stop being) a Node.

It follows gpuctl's join contract (docs/sim.md#the-simulated-kubelet):

- At boot (the instance reaches RUNNING) it reads the GPUCTL_* variables from
  the machine's join data: `export NAME='value'` lines of the script (Lambda
  user data, Paperspace startup script, RunPod start command) plus the RunPod
  container env. Without GPUCTL_API_SERVER and GPUCTL_BOOTSTRAP_TOKEN it joins
  nothing.
- With `SimConfig.ca_file` it verifies the API server's certificate against
  that CA and, like kubeadm, refuses to join unless GPUCTL_CA_CERT_HASH equals
  the CA's SubjectPublicKeyInfo hash. Without `ca_file` it skips both checks.
- It authenticates with the bootstrap token (bearer) at GPUCTL_API_SERVER,
  creates the Node (name GPUCTL_NODE_NAME, providerID
  gpuctl://<cloud>/<native-region>/<instance-id>, labels GPUCTL_NODE_LABELS plus
  instance-type, region and hostname, taints GPUCTL_NODE_TAINTS) and patches its
  status: Ready=True, capacity = allocatable = cpu, memory, pods,
  nvidia.com/gpu. A token the API server refuses (unknown, expired) means no
  Node, as for a real kubelet.
- Later updates use `SimConfig.kubeconfig`, standing in for the client
  certificate a real kubelet obtains by TLS bootstrap: TERMINATED deletes the
  Node; STOPPED or PREEMPTED set Ready=Unknown (the kubelet is gone) and leave
  the Node for the operator. No heartbeats are sent.

Operations of one instance run in order (a chain of tasks); all are tracked and
cancelled by `stop()`; `idle()` waits for every queued operation.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import attrs
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from gpuctl.dev.pki import ca_public_key_hash
from gpuctl.sim.model import JoinStatus, Phase, SimInstance

log = logging.getLogger(__name__)

JOIN_VARIABLE = re.compile(
    r"^\s*(?:export\s+)?(GPUCTL_[A-Z0-9_]+)=(['\"]?)(.*?)\2\s*$", re.MULTILINE
)
REQUEST_TIMEOUT = 10.0
MAX_PODS = "110"
_LABEL_VALUE = re.compile(r"[^A-Za-z0-9._-]+")


def join_variables(script: str, env: Mapping[str, str]) -> dict[str, str]:
    """GPUCTL_* variables of the join data; env entries win over script lines."""
    found = {m.group(1): m.group(3) for m in JOIN_VARIABLE.finditer(script)}
    found.update({k: v for k, v in env.items() if k.startswith("GPUCTL_")})
    return found


def parse_labels(text: str) -> dict[str, str]:
    """`k=v,k=v` -> {k: v}."""
    pairs = (item.split("=", 1) for item in text.split(",") if item.strip())
    return {key.strip(): value.strip() for key, value in (p for p in pairs if len(p) == 2)}


def parse_taints(text: str) -> list[dict[str, str]]:
    """`k=v:Effect,k:Effect` -> Node taints."""
    taints = []
    for item in filter(None, (i.strip() for i in text.split(","))):
        key_value, _, effect = item.rpartition(":")
        key, _, value = key_value.partition("=")
        taint = {"key": key, "effect": effect}
        if value:
            taint["value"] = value
        taints.append(taint)
    return taints


def label_value(text: str) -> str:
    """A valid label value for a native name (RunPod's GPU ids contain spaces)."""
    return _LABEL_VALUE.sub("-", text).strip("-_.")[:63].rstrip("-_.")


@attrs.frozen
class JoinRequest:
    """The contract's variables, parsed."""

    api_server: str
    token: str
    ca_cert_hash: str
    node_name: str
    labels: Mapping[str, str]
    taints: list[dict[str, str]]

    @classmethod
    def parse(cls, variables: Mapping[str, str], default_name: str) -> JoinRequest | None:
        if not variables.get("GPUCTL_API_SERVER") or not variables.get("GPUCTL_BOOTSTRAP_TOKEN"):
            return None
        return cls(
            api_server=variables["GPUCTL_API_SERVER"],
            token=variables["GPUCTL_BOOTSTRAP_TOKEN"],
            ca_cert_hash=variables.get("GPUCTL_CA_CERT_HASH", ""),
            node_name=variables.get("GPUCTL_NODE_NAME") or default_name,
            labels=parse_labels(variables.get("GPUCTL_NODE_LABELS", "")),
            taints=parse_taints(variables.get("GPUCTL_NODE_TAINTS", "")),
        )


class Kubelet:
    """Registers, marks and deletes the Nodes of simulated machines."""

    def __init__(self, *, kubeconfig: Path | None, ca_file: Path | None) -> None:
        self.kubeconfig = kubeconfig
        self.ca_file = ca_file
        self._chains: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._admin: client.ApiClient | None = None

    @property
    def enabled(self) -> bool:
        return self.kubeconfig is not None

    def on_transition(self, instance: SimInstance, old: Phase, new: Phase) -> None:
        """SimState listener: queue what the machine's kubelet does on this change."""
        if new is Phase.RUNNING:
            if not self.enabled:
                instance.join_status = JoinStatus.DISABLED
                return
            self._enqueue(instance, self._join)
        elif new in (Phase.STOPPED, Phase.PREEMPTED) and self.enabled:
            self._enqueue(instance, self._mark_unknown)
        elif new is Phase.TERMINATED and self.enabled:
            self._enqueue(instance, self._delete)

    async def idle(self) -> None:
        """Wait until every queued operation has finished."""
        while pending := [t for t in self._tasks if not t.done()]:
            await asyncio.wait(pending)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        self._chains.clear()
        if self._admin is not None:
            await self._admin.close()
            self._admin = None

    # -- scheduling -----------------------------------------------------------------

    def _enqueue(
        self, instance: SimInstance, step: Callable[[SimInstance], Awaitable[None]]
    ) -> None:
        key = (instance.cloud, instance.id)
        previous = self._chains.get(key)

        async def run() -> None:
            if previous is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(previous)
            try:
                await step(instance)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                instance.join_detail = f"{step.__name__}: {error!r}"
                log.warning(
                    "simulated kubelet of %s: %s failed: %r", instance.id, step.__name__, error
                )

        task = asyncio.get_running_loop().create_task(run())
        self._chains[key] = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the kubelet's work ---------------------------------------------------------------

    async def _join(self, instance: SimInstance) -> None:
        join = JoinRequest.parse(
            join_variables(instance.join_script, instance.join_env), instance.name
        )
        if join is None:
            instance.join_status = JoinStatus.NO_JOIN_DATA
            return
        if (reason := self._refusal(join)) is not None:
            instance.join_status, instance.join_detail = JoinStatus.REFUSED, reason
            return
        async with self._bootstrap_client(join) as api:
            core = client.CoreV1Api(api)
            try:
                await self._register(core, join, instance)
            except ApiException as error:
                rejected = error.status in (401, 403)
                instance.join_status = JoinStatus.REJECTED if rejected else JoinStatus.FAILED
                instance.join_detail = f"{error.status} {error.reason}"
                return
            except (aiohttp.ClientError, OSError, TimeoutError) as error:
                instance.join_status, instance.join_detail = JoinStatus.FAILED, repr(error)
                return
        instance.node_name = join.node_name
        instance.join_status, instance.join_detail = JoinStatus.JOINED, ""

    def _refusal(self, join: JoinRequest) -> str | None:
        """Why kubeadm would refuse this cluster, if it would."""
        if self.ca_file is None:
            return None
        expected = ca_public_key_hash(self.ca_file.read_bytes())
        if not join.ca_cert_hash:
            return "GPUCTL_CA_CERT_HASH is missing"
        if join.ca_cert_hash.lower() != expected.lower():
            return f"CA hash mismatch: got {join.ca_cert_hash}, cluster CA is {expected}"
        return None

    async def _register(
        self, core: client.CoreV1Api, join: JoinRequest, instance: SimInstance
    ) -> None:
        try:
            await core.create_node(_node(join, instance), _request_timeout=REQUEST_TIMEOUT)
        except ApiException as error:
            if error.status != 409:  # a restarted machine finds its Node still there
                raise
        status = {"status": _status(instance, ready="True")}
        await core.patch_node_status(join.node_name, status, _request_timeout=REQUEST_TIMEOUT)

    async def _mark_unknown(self, instance: SimInstance) -> None:
        if instance.node_name is None:
            return
        core = client.CoreV1Api(await self._admin_client())
        condition = _ready_condition(
            "Unknown", "NodeStatusUnknown", "Kubelet stopped posting node status."
        )
        body = {"status": {"conditions": [condition]}}
        with _ignore_not_found():
            await core.patch_node_status(instance.node_name, body, _request_timeout=REQUEST_TIMEOUT)

    async def _delete(self, instance: SimInstance) -> None:
        if instance.node_name is None:
            return
        core = client.CoreV1Api(await self._admin_client())
        with _ignore_not_found():
            await core.delete_node(instance.node_name, _request_timeout=REQUEST_TIMEOUT)
        instance.node_name = None

    # -- clients ------------------------------------------------------------------------

    def _bootstrap_client(self, join: JoinRequest) -> client.ApiClient:
        configuration = client.Configuration(host=join.api_server)
        configuration.api_key = {"BearerToken": join.token}
        configuration.api_key_prefix = {"BearerToken": "Bearer"}
        if self.ca_file is not None:
            configuration.ssl_ca_cert = str(self.ca_file)
        else:
            configuration.verify_ssl = False
        return client.ApiClient(configuration=configuration)

    async def _admin_client(self) -> client.ApiClient:
        if self._admin is None:
            assert self.kubeconfig is not None
            configuration = client.Configuration()
            await config.load_kube_config(
                config_file=str(self.kubeconfig),
                client_configuration=configuration,
                persist_config=False,
            )
            self._admin = client.ApiClient(configuration=configuration)
        return self._admin


@contextlib.contextmanager
def _ignore_not_found() -> Iterator[None]:
    try:
        yield
    except ApiException as error:
        if error.status != 404:
            raise


def _node(join: JoinRequest, instance: SimInstance) -> client.V1Node:
    labels = {
        **join.labels,
        "node.kubernetes.io/instance-type": label_value(instance.instance_type),
        "topology.kubernetes.io/region": label_value(instance.region),
        "kubernetes.io/hostname": join.node_name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
    }
    taints = [
        client.V1Taint(key=t["key"], value=t.get("value"), effect=t["effect"]) for t in join.taints
    ]
    return client.V1Node(
        api_version="v1",
        kind="Node",
        metadata=client.V1ObjectMeta(name=join.node_name, labels=labels),
        spec=client.V1NodeSpec(
            provider_id=f"gpuctl://{instance.cloud}/{instance.region}/{instance.id}",
            taints=taints or None,
        ),
    )


def _ready_condition(status: str, reason: str, message: str) -> dict[str, str]:
    now = _now()
    return {
        "type": "Ready",
        "status": status,
        "reason": reason,
        "message": message,
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    }


def _status(instance: SimInstance, *, ready: str) -> dict[str, Any]:
    resources = {
        "cpu": str(instance.vcpus),
        "memory": f"{instance.memory_gib}Gi",
        "pods": MAX_PODS,
        "nvidia.com/gpu": str(instance.gpu_count),
    }
    addresses = [{"type": "Hostname", "address": instance.name or instance.id}]
    if instance.private_ip:
        addresses.append({"type": "InternalIP", "address": instance.private_ip})
    if instance.public_ip:
        addresses.append({"type": "ExternalIP", "address": instance.public_ip})
    return {
        "capacity": resources,
        "allocatable": resources,
        "conditions": [_ready_condition(ready, "KubeletReady", "kubelet is posting ready status")],
        "addresses": addresses,
        "nodeInfo": {
            "machineID": instance.id,
            "systemUUID": instance.id,
            "bootID": f"{instance.id}-{int(instance.phase_since)}",
            "kernelVersion": "6.8.0-gpuctl-sim",
            "osImage": "Ubuntu 22.04 LTS (simulated)",
            "containerRuntimeVersion": "containerd://2.0.0",
            "kubeletVersion": "v1.37.2",
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
    }


def _now() -> str:
    """Wall-clock time with the second precision of Kubernetes timestamps."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
