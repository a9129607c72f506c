"""Building a kubernetes-asyncio ApiClient from a kubeconfig or the in-cluster config."""

from __future__ import annotations

import os
from pathlib import Path

from kubernetes_asyncio import client, config


async def load_configuration(kubeconfig: Path | str | None = None) -> client.Configuration:
    """Kubeconfig if given (or $KUBECONFIG), otherwise the in-cluster service account."""
    configuration = client.Configuration()
    path = kubeconfig or os.environ.get("KUBECONFIG")
    if path:
        await config.load_kube_config(
            config_file=str(path), client_configuration=configuration, persist_config=False
        )
    else:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return configuration


async def api_client(kubeconfig: Path | str | None = None) -> client.ApiClient:
    """An ApiClient; the caller closes it (`async with` or `await c.close()`)."""
    return client.ApiClient(configuration=await load_configuration(kubeconfig))
