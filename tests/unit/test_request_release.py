"""A request whose finalizer this process released is not torn down again from the
cached copy the watch has not removed yet (the Node its teardown deleted wakes it)."""

from __future__ import annotations

from typing import Any

from gpuctl.controllers.request.context import Services, Settings
from gpuctl.controllers.request.controller import RequestReconciler
from gpuctl.controllers.request.nodes import REQUEST_INDEX
from gpuctl.providers.capacity import CapacityCache
from gpuctl.runtime.store import Store, label_index
from tests.unit.test_rate_limited_reconcile import NOW, Events, Writer, deleted_request


class Client:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def patch(self, resource: Any, name: str, body: Any, **kwargs: Any) -> Any:
        self.calls.append(("patch", name))
        return {}


def deleted(rv: str) -> dict[str, Any]:
    """A deleted request that never got an offer: nothing at any cloud to wait for."""
    obj = deleted_request()
    obj["metadata"]["resourceVersion"] = rv
    obj["status"] = {"phase": "Pending"}
    return obj


async def test_the_released_copy_is_not_torn_down_again() -> None:
    requests, client, nodes = Store(), Client(), Store()
    nodes.add_indexer(REQUEST_INDEX, label_index("gpuctl.io/request"))
    requests.add(deleted("7"))
    services = Services(
        client=client,  # type: ignore[arg-type]
        events=Events(),  # type: ignore[arg-type]
        drivers=None,  # type: ignore[arg-type]
        capacity=CapacityCache(60),
        nodes=nodes,
        settings=Settings("c1", "gpuctl-system", "https://k:6443", "sha256:x"),
        clock=lambda: NOW,
    )
    reconciler = RequestReconciler(requests, services, Writer())  # type: ignore[arg-type]
    await reconciler.reconcile("r1")
    assert client.calls == [("patch", "r1")]
    await reconciler.reconcile("r1")  # woken again before the watch's DELETED event
    assert client.calls == [("patch", "r1")]
    requests.add(deleted("9"))  # a newer copy (another finalizer kept it) is reconciled
    await reconciler.reconcile("r1")
    assert client.calls == [("patch", "r1"), ("patch", "r1")]
