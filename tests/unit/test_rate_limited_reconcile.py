"""A provider's rate limit is a requeue at the token's time, never an error or a wait.

The request and provider reconcilers run in `ratelimit.nonblocking`: a driver call whose
token is not there raises `RateLimitedError` before anything is sent, and the reconcile
returns `Result(requeue_after=<token time>)` — no error (so no back-off escalation), no
Warning Event, and a GPUProvider's conditions are left as they were.
"""

from __future__ import annotations

import copy
import datetime
from typing import Any

from gpuctl.api import FINALIZER, GPUNodeRequest
from gpuctl.controllers.provider import ProviderReconciler
from gpuctl.controllers.request import liveness
from gpuctl.controllers.request.context import Ctx, Services, Settings
from gpuctl.controllers.request.controller import RequestReconciler
from gpuctl.providers.base import RateLimitedError
from gpuctl.providers.capacity import CapacityCache
from gpuctl.providers.ratelimit import current_holder
from gpuctl.runtime.store import Store

NOW = datetime.datetime(2026, 11, 29, 12, 0, tzinfo=datetime.UTC)


class LimitedDriver:
    """Every call is out of tokens for 2.5 s; remembers who asked."""

    name = "p"
    holders: list[str | None]

    def __init__(self) -> None:
        self.holders = []

    def _limited(self) -> RateLimitedError:
        self.holders.append(current_holder())
        return RateLimitedError("p GetPod: rate limit", retry_after=2.5, provider="p")

    async def get(self, instance_id: str, since: Any = None, listed_by: Any = None) -> Any:
        raise self._limited()

    async def terminate(self, instance_id: str) -> None:
        raise self._limited()

    async def validate_credentials(self) -> None:
        raise self._limited()


class Drivers:
    def __init__(self, driver: LimitedDriver) -> None:
        self.driver = driver

    def get(self, name: str) -> LimitedDriver:
        return self.driver


class Writer:
    def __init__(self) -> None:
        self.written: list[dict[str, Any]] = []

    async def update_status(self, resource: Any, obj: Any, status: Any) -> None:
        if obj.get("status") != status:
            self.written.append(status)

    def written_last(self, resource: Any, obj: Any) -> bool:
        return False

    def behind(self, resource: Any, obj: Any) -> bool:
        return False


class Events:
    def __init__(self) -> None:
        self.recorded: list[tuple[str, str]] = []

    async def record(self, obj: Any, type_: str, reason: str, message: str) -> None:
        self.recorded.append((type_, reason))


def deleted_request() -> dict[str, Any]:
    return {
        "apiVersion": "gpuctl.io/v1alpha1",
        "kind": "GPUNodeRequest",
        "metadata": {
            "name": "r1",
            "uid": "0b0e5a3c-1111-2222-3333-444455556666",
            "generation": 1,
            "resourceVersion": "7",
            "deletionTimestamp": "2026-11-29T11:59:00Z",
            "finalizers": [FINALIZER],
        },
        "spec": {"gpu": {"type": "RTX-4090", "count": 1}},
        "status": {
            "phase": "Ready",
            "attempt": 1,
            "offer": {
                "provider": "p",
                "cloud": "runpod",
                "region": "us-east",
                "nativeRegion": "US-GA-1",
                "instanceType": "NVIDIA GeForce RTX 4090",
                "gpuType": "RTX-4090",
                "gpuCount": 1,
                "capacityType": "on-demand",
                "pricePerHour": "0.69",
            },
            "instance": {"id": "pod-1", "name": "n", "launchedAt": "2026-11-29T11:00:00Z"},
        },
    }


async def test_a_rate_limited_teardown_is_requeued_for_the_token_not_an_error() -> None:
    requests = Store()
    requests.add(deleted_request())
    driver, writer, events = LimitedDriver(), Writer(), Events()
    services = Services(
        client=None,  # type: ignore[arg-type]
        events=events,  # type: ignore[arg-type]
        drivers=Drivers(driver),  # type: ignore[arg-type]
        capacity=CapacityCache(60),
        nodes=Store(),
        settings=Settings("c1", "gpuctl-system", "https://k:6443", "sha256:x"),
        clock=lambda: NOW,
    )
    reconciler = RequestReconciler(requests, services, writer)  # type: ignore[arg-type]
    result = await reconciler.reconcile("r1")  # raises nothing: not an error
    assert result.requeue_after == 2.5
    assert driver.holders == ["gpunoderequest/r1"]
    assert [w["phase"] for w in writer.written] == ["Terminating"]  # progress kept
    assert not [e for e in events.recorded if e[0] == "Warning"]
    assert current_holder() is None


async def test_a_rate_limited_provider_check_leaves_its_status_alone() -> None:
    provider = {
        "apiVersion": "gpuctl.io/v1alpha1",
        "kind": "GPUProvider",
        "metadata": {"name": "p", "generation": 1, "resourceVersion": "3"},
        "spec": {
            "type": "runpod",
            "credentialsSecretRef": {"namespace": "gpuctl-system", "name": "p"},
            "runpod": {"imageName": "img"},
            "bootstrap": {"method": "kubeadm"},
        },
    }
    providers = Store()
    providers.add(copy.deepcopy(provider))
    driver, writer, events = LimitedDriver(), Writer(), Events()
    reconciler = ProviderReconciler(
        providers,
        Drivers(driver),  # type: ignore[arg-type]
        writer,  # type: ignore[arg-type]
        events,  # type: ignore[arg-type]
    )
    result = await reconciler.reconcile("p")
    assert result.requeue_after == 2.5
    assert driver.holders == ["gpuprovider/p"]
    assert writer.written == [] and events.recorded == []


async def test_a_rate_limited_poll_is_put_off_and_the_other_steps_go_on() -> None:
    obj = deleted_request()
    del obj["metadata"]["deletionTimestamp"]
    obj["status"]["phase"] = "Joining"
    request = GPUNodeRequest.from_dict(obj)
    services = Services(
        client=None,  # type: ignore[arg-type]
        events=Events(),  # type: ignore[arg-type]
        drivers=Drivers(LimitedDriver()),  # type: ignore[arg-type]
        capacity=CapacityCache(60),
        nodes=Store(),
        settings=Settings("c1", "gpuctl-system", "https://k:6443", "sha256:x"),
        clock=lambda: NOW,
    )
    ctx = Ctx(obj, request, copy.deepcopy(request.status), NOW, services)
    result = await liveness.reconcile(ctx)
    assert result is not None and result.requeue_after == 2.5
    assert not ctx.stopped  # registration and the rest still run in this reconcile
    assert services.last_poll == {}  # not polled: due again when the token is there
