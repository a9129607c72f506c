"""End-to-end harness: the real API server, the simulated clouds, and the operator.

Each test gets a fresh simulator whose machines boot by running the join data gpuctl
gave the cloud (cloud-init, a startup script, a start command) with real kubeadm-join
code (gpuctl-node-agent: token discovery, TLS bootstrap, a real kubelet), three
GPUProviders pointing at it with per-test names, and an operator with short poll
intervals (in-process, or `gpuctl run` from the installed wheel where a test says so).
Requests made through `make_request` are deleted — and waited for, so their
machines are terminated — before the operator stops.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import attrs
import pytest
from kubernetes_asyncio import client
from prometheus_client import generate_latest

from gpuctl.api.install import install_crds
from gpuctl.controllers.operator import Operator, OperatorConfig
from gpuctl.controllers.request.context import Settings
from gpuctl.controllers.resources import GPUNODEREQUESTS, GPUPROVIDERS
from gpuctl.dev.controlplane import ControlPlane
from gpuctl.dev.manifests import apply_join_rbac
from gpuctl.dev.pki import ca_public_key_hash
from gpuctl.runtime.client import Client, is_not_found
from gpuctl.runtime.metrics import REGISTRY
from gpuctl.runtime.resources import EVENTS, NAMESPACES, SECRETS
from gpuctl.sim import SimConfig, Simulator
from tests.wheel import gpuctl_built_wheel, gpuctl_wheel  # noqa: F401 - fixtures

NAMESPACE = "gpuctl-system"
CLOUDS = ("lambda", "runpod", "paperspace", "crusoe", "hyperstack", "digitalocean")
CLOUD_BLOCKS: dict[str, dict[str, Any]] = {
    "lambda": {"lambda": {"sshKeyName": "gpuctl"}},
    "runpod": {"runpod": {"imageName": "ghcr.io/gpuctl/node:latest"}},
    "paperspace": {"paperspace": {"templateId": "tkni3aa4"}},
    "crusoe": {
        "crusoe": {"sshPublicKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGdwdWN0bCBlMmU e2e"}
    },
    # A new environment has no key pair: gpuctl imports this one as "gpuctl".
    "hyperstack": {
        "hyperstack": {"sshPublicKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGdwdWN0bCBlMmU e2e"}
    },
    "digitalocean": {"digitalocean": {}},  # the account's first SSH key, the firewall
}


# Every credential the e2e tests hand out: the simulators' keys (added as they start)
# and the wrong key of test_collect_and_credentials.
ISSUED_KEYS: set[str] = {"not-the-key"}


@pytest.fixture(autouse=True)
async def no_credential_leaks(
    request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[None]:
    """After every e2e test: no API key in logs, Events, statuses or metrics."""
    caplog.set_level(logging.DEBUG, logger="gpuctl")
    yield
    keys = set(ISSUED_KEYS)
    texts = [caplog.text, generate_latest(REGISTRY).decode()]
    if "kube" in request.fixturenames:
        api = Client(request.getfixturevalue("kube"))
        for resource, namespace in (
            (EVENTS, "default"),
            (GPUNODEREQUESTS, None),
            (GPUPROVIDERS, None),
        ):
            try:
                listed = await api.list(resource, namespace=namespace)
            except Exception as err:
                if is_not_found(err):  # the CRDs are not installed in this test
                    continue
                raise
            texts.append(json.dumps([o.get("status", o.get("message")) for o in listed["items"]]))
            if resource is EVENTS:
                texts.append(json.dumps([o.get("message") for o in listed["items"]]))
    leaks = [key for key in keys for text in texts if key in text]
    assert leaks == [], "a credential reached logs, Events, status or metrics"


@pytest.fixture(scope="session")
async def cluster_ready(kube: client.ApiClient, control_plane: ControlPlane) -> None:
    """CRDs, the join RBAC from manifests/join and the operator namespace, once per session.

    The join RBAC is applied exactly as `kubectl apply -k manifests/default` would: a
    machine joins with gpuctl's bootstrap token only because of those grants.
    """
    await install_crds(kube)
    await apply_join_rbac(control_plane)  # manifests/join, with kubectl apply -k
    api = Client(kube)
    try:
        await api.create(NAMESPACES, {"metadata": {"name": NAMESPACE}})
    except Exception as err:
        if "AlreadyExists" not in str(err) and "409" not in str(err):
            raise


@pytest.fixture
async def api(kube: client.ApiClient) -> Client:
    return Client(kube)


@pytest.fixture
async def sim(control_plane: ControlPlane) -> AsyncIterator[Simulator]:
    config = SimConfig(
        seed=7,
        boot_seconds=0.3,
        terminate_seconds=0.2,
        kubeconfig=control_plane.kubeconfig,
        ca_file=control_plane.ca_file,
        execute_join_data=True,  # machines run real kubeadm joins (gpuctl-node-agent)
    )
    async with Simulator(config) as simulator:
        ISSUED_KEYS.update(simulator.api_key(cloud) for cloud in CLOUDS)
        yield simulator


@attrs.frozen
class Env:
    suffix: str
    providers: dict[str, str]  # cloud -> GPUProvider name
    cluster: str


@pytest.fixture
async def env(
    cluster_ready: None, api: Client, sim: Simulator, control_plane: ControlPlane
) -> AsyncIterator[Env]:
    suffix = secrets.token_hex(3)
    providers = {cloud: f"{cloud}-{suffix}" for cloud in CLOUDS}
    for cloud, name in providers.items():
        await api.create(SECRETS, _secret(name, sim.api_key(cloud)), namespace=NAMESPACE)
        await api.create(GPUPROVIDERS, _provider(name, cloud, sim, control_plane))
    yield Env(suffix, providers, f"e2e-{suffix}")
    for name in providers.values():
        await api.delete(GPUPROVIDERS, name)
        await api.delete(SECRETS, name, namespace=NAMESPACE)


def _secret(name: str, key: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": NAMESPACE},
        "data": {"apiKey": base64.b64encode(key.encode()).decode()},
    }


def _provider(name: str, cloud: str, sim: Simulator, cp: ControlPlane) -> dict[str, Any]:
    return {
        "apiVersion": "gpuctl.io/v1alpha1",
        "kind": "GPUProvider",
        "metadata": {"name": name},
        "spec": {
            "type": cloud,
            "endpoint": sim.endpoint(cloud),
            "credentialsSecretRef": {"namespace": NAMESPACE, "name": name, "key": "apiKey"},
            "rateLimit": {"requestsPerSecond": 1000, "launchesPerMinute": 600},
            "registrationTimeout": "30s",
            "bootstrap": {"method": "kubeadm", "apiServerEndpoint": cp.url},
            **CLOUD_BLOCKS[cloud],
        },
    }


def operator_config(env: Env, cp: ControlPlane, **overrides: Any) -> OperatorConfig:
    settings = Settings(
        cluster_name=env.cluster,
        namespace=NAMESPACE,
        join_endpoint=cp.url,
        ca_cert_hash=ca_public_key_hash(cp.ca_file.read_bytes()),
        ready_poll=0.5,
        joining_poll=0.3,
        termination_poll=0.3,
        # An unknown create outcome is settled by look-ups for this long before a
        # relaunch (15 s by default); the simulated clouds list consistently at once.
        launch_settle=datetime.timedelta(seconds=2),
    )
    config = OperatorConfig(
        settings=settings,
        kubeconfig=cp.kubeconfig,
        health_port=0,
        health_host="127.0.0.1",
        workers=4,
        provider_refresh=5.0,
        gc_interval=0.5,
        gc_grace=datetime.timedelta(seconds=2),
        handle_signals=False,
    )
    return attrs.evolve(config, **overrides)


@attrs.define
class Running:
    operator: Operator
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def halt(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 40)


async def start_operator(config: OperatorConfig) -> Running:
    operator = Operator(config)
    stop = asyncio.Event()
    task = asyncio.create_task(operator.run(stop))
    return Running(operator, stop, task)


@pytest.fixture
async def operator(env: Env, control_plane: ControlPlane) -> AsyncIterator[Running]:
    running = await start_operator(operator_config(env, control_plane))
    yield running
    await running.halt()


MakeRequest = Callable[..., Awaitable[str]]


@pytest.fixture
async def make_request(api: Client, env: Env, operator: Running) -> AsyncIterator[MakeRequest]:
    """Create a GPUNodeRequest; all are deleted and awaited before the operator stops."""
    made: list[str] = []

    async def make(name: str, spec: dict[str, Any]) -> str:
        full = f"{name}-{env.suffix}"
        body = {
            "apiVersion": "gpuctl.io/v1alpha1",
            "kind": "GPUNodeRequest",
            "metadata": {"name": full},
            "spec": spec,
        }
        await api.create(GPUNODEREQUESTS, body)
        made.append(full)
        return full

    yield make
    for name in made:
        await delete_and_wait(api, name)


async def delete_and_wait(api: Client, name: str, timeout: float = 60) -> None:
    try:
        await api.delete(GPUNODEREQUESTS, name)
    except Exception as err:
        if not is_not_found(err):
            raise
    await wait_for(lambda: _gone(api, name), timeout, f"{name} deleted")


async def _gone(api: Client, name: str) -> bool:
    try:
        await api.get(GPUNODEREQUESTS, name)
    except Exception as err:
        if is_not_found(err):
            return True
        raise
    return False


async def wait_for(
    check: Callable[[], Awaitable[bool]], timeout: float, what: str, interval: float = 0.2
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


async def wait_phase(api: Client, name: str, phase: str, timeout: float = 60) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def check() -> bool:
        found.update(await api.get(GPUNODEREQUESTS, name))
        return bool((found.get("status") or {}).get("phase") == phase)

    try:
        await wait_for(check, timeout, f"{name} phase {phase}")
    except BaseException:
        print("last status:", found.get("status"))
        raise
    return found
