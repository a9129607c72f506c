"""The operator's own transport against the real API server: client certificate and
bearer token from a kubeconfig, lists, writes, a watch, and RBAC's refusal."""

from __future__ import annotations

import pytest

from gpuctl.dev.controlplane import ControlPlane
from gpuctl.runtime.client import ApiError, Client
from gpuctl.runtime.resources import CONFIGMAPS, NAMESPACES
from gpuctl.runtime.transport import HttpTransport, connect
from tests.conftest import NOBODY


async def test_client_certificate_lists_writes_and_watches(
    control_plane: ControlPlane, namespace: str
) -> None:
    async with await connect(control_plane.kubeconfig) as http:
        assert isinstance(http, HttpTransport)
        api = Client(http)
        names = {n["metadata"]["name"] for n in (await api.list_all(NAMESPACES)).items}
        assert {"default", namespace} <= names
        body = {"metadata": {"name": "transport"}, "data": {"k": "v"}}
        made = await api.create(CONFIGMAPS, body, namespace=namespace)
        events = api.watch(CONFIGMAPS, namespace=namespace, resource_version="0", timeout_seconds=5)
        async for kind, obj in events:
            if obj["metadata"]["name"] == "transport":
                assert kind == "ADDED" and obj["data"] == {"k": "v"}
                break
        await events.aclose()
        assert made["metadata"]["uid"]


async def test_bearer_token_is_sent_and_rbac_refuses(control_plane: ControlPlane) -> None:
    async with await connect(control_plane.token_kubeconfig(NOBODY)) as http:
        with pytest.raises(ApiError) as refused:
            await Client(http).list(NAMESPACES)
    assert refused.value.status == 403 and NOBODY.name in refused.value.message
