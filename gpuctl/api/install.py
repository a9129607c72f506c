"""Install gpuctl's CRDs into a cluster and wait until they are served.

`install_crds` creates each CRD, or replaces it when it exists (so a changed
schema is rolled out), then waits until every CRD is Established and its
resource answers a list: only then can custom objects be created without a
404 race. Idempotent; safe to call again in the same cluster. Gives up with
TimeoutError after INSTALL_TIMEOUT seconds (wrap the call in `asyncio.timeout`
for a shorter limit).
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from gpuctl.api.constants import GROUP, VERSION
from gpuctl.api.crdgen import crds

INSTALL_TIMEOUT = 60.0
_POLL_SECONDS = 0.05


class CRDNamesNotAcceptedError(RuntimeError):
    """The API server refused a CRD's names (they clash with another resource's)."""


async def install_crds(api_client: client.ApiClient) -> None:
    """Create or replace both gpuctl CRDs, then wait until they are Established and served."""
    extensions = client.ApiextensionsV1Api(api_client)
    definitions = crds()
    async with asyncio.timeout(INSTALL_TIMEOUT):
        for definition in definitions:
            await _apply(extensions, definition)
        for definition in definitions:
            await _wait_established(extensions, definition["metadata"]["name"])
            await _wait_served(api_client, definition["spec"]["names"]["plural"])


async def _apply(extensions: client.ApiextensionsV1Api, definition: dict[str, Any]) -> None:
    name = definition["metadata"]["name"]
    try:
        # The client sends a dict body as it is; no need for the generated model.
        await extensions.create_custom_resource_definition(cast(Any, definition))
        return
    except ApiException as exc:
        if exc.status != 409:
            raise
    # Replace with the current resourceVersion; retry if someone wrote in between.
    while True:
        current = await extensions.read_custom_resource_definition(name)
        body = {
            **definition,
            "metadata": {
                **definition["metadata"],
                "resourceVersion": current.metadata.resource_version,
            },
        }
        try:
            await extensions.replace_custom_resource_definition(name, cast(Any, body))
            return
        except ApiException as exc:
            if exc.status != 409:
                raise


async def _wait_established(extensions: client.ApiextensionsV1Api, name: str) -> None:
    while True:
        current = await extensions.read_custom_resource_definition(name)
        conditions = {c.type: c for c in (current.status.conditions or [])}
        names_accepted = conditions.get("NamesAccepted")
        if names_accepted is not None and names_accepted.status == "False":
            raise CRDNamesNotAcceptedError(f"CRD {name}: {names_accepted.message}")
        established = conditions.get("Established")
        if established is not None and established.status == "True":
            return
        await asyncio.sleep(_POLL_SECONDS)


async def _wait_served(api_client: client.ApiClient, plural: str) -> None:
    custom = client.CustomObjectsApi(api_client)
    while True:
        try:
            await custom.list_cluster_custom_object(GROUP, VERSION, plural, limit=1)
            return
        except ApiException as exc:
            if exc.status != 404:
                raise
        await asyncio.sleep(_POLL_SECONDS)
