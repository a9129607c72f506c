"""Shared fixtures: one real control plane per test session.

Every integration and e2e test talks to a real kube-apiserver backed by a real
etcd, started by gpuctl.dev.controlplane from binaries built by
`make controlplane` (or from $KUBEBUILDER_ASSETS). Nothing here mocks the API.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from kubernetes_asyncio import client

from gpuctl.dev.controlplane import ControlPlane, TokenUser
from gpuctl.runtime.kubeclient import api_client

# A static-token identity with no roles at all: RBAC must refuse it everything.
NOBODY = TokenUser("gpuctl-test-nobody", ("gpuctl:testers",))

_TIERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by its directory: tests/unit, tests/integration, tests/e2e."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        for tier in _TIERS:
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="session")
async def control_plane() -> AsyncIterator[ControlPlane]:
    async with ControlPlane(users=[NOBODY]) as cp:
        yield cp


@pytest.fixture(scope="session")
async def kube(control_plane: ControlPlane) -> AsyncIterator[client.ApiClient]:
    """An ApiClient as the cluster admin (system:masters)."""
    async with await api_client(control_plane.kubeconfig) as api:
        yield api


@pytest.fixture
async def namespace(kube: client.ApiClient) -> AsyncIterator[str]:
    """A fresh namespace for one test, deleted afterwards."""
    name = f"t-{secrets.token_hex(4)}"
    core = client.CoreV1Api(kube)
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    await core.delete_namespace(name)


ClientAs = Callable[..., Awaitable[client.ApiClient]]


@pytest.fixture
async def client_as(control_plane: ControlPlane) -> AsyncIterator[ClientAs]:
    """`await client_as("alice", ["team-a"])`: an ApiClient authenticated as that user.

    Authenticates with a client certificate signed by the control plane's CA, so
    the API server sees exactly that user name and those groups; RBAC applies.
    """
    opened: list[client.ApiClient] = []

    async def make(user: str, groups: list[str] | tuple[str, ...] = ()) -> client.ApiClient:
        api = await api_client(control_plane.kubeconfig_for(user, groups))
        opened.append(api)
        return api

    yield make
    for api in opened:
        await api.close()


@pytest.fixture
def kubectl(control_plane: ControlPlane) -> Iterator[list[str]]:
    """argv prefix running the built kubectl as admin against the test control plane."""
    yield [str(control_plane.kubectl), "--kubeconfig", str(control_plane.kubeconfig)]
