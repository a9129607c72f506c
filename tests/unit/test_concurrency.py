"""Request workers sized from the GPUProviders' rate limits (controllers/concurrency.py)."""

from __future__ import annotations

from typing import Any

from gpuctl.controllers.concurrency import (
    MAX_WORKERS,
    MIN_WORKERS,
    SizeFromProviders,
    call_rate,
    provider_limits,
    workers_for,
)
from gpuctl.providers.ratelimit import RateLimits


def provider(name: str, cloud: str, **spec: Any) -> dict[str, Any]:
    blocks = {
        "lambda": {"lambda": {"sshKeyName": "k"}},
        "runpod": {"runpod": {"imageName": "i"}},
        "paperspace": {"paperspace": {"templateId": "t"}},
    }
    return {
        "apiVersion": "gpuctl.io/v1alpha1",
        "kind": "GPUProvider",
        "metadata": {"name": name},
        "spec": {
            "type": cloud,
            "credentialsSecretRef": {"namespace": "gpuctl-system", "name": name},
            "bootstrap": {"method": "kubeadm"},
            **blocks[cloud],
            **spec,
        },
    }


def test_call_rate_is_the_tighter_of_the_two_limits() -> None:
    assert call_rate(RateLimits(overall_per_second=1.0, launch_interval_seconds=12.0)) == 5 / 12
    assert call_rate(RateLimits(overall_per_second=1000, launch_interval_seconds=0.1)) == 50
    assert call_rate(RateLimits(overall_per_second=2.0)) == 2.0
    assert call_rate(RateLimits.unlimited()) == 100.0


def test_documented_defaults_get_the_minimum_and_fast_providers_more() -> None:
    defaults = [provider("l", "lambda"), provider("r", "runpod"), provider("p", "paperspace")]
    assert workers_for(provider_limits(defaults)) == MIN_WORKERS
    fast = {"rateLimit": {"requestsPerSecond": 1000, "launchesPerMinute": 600}}
    bench = [provider("l", "lambda", **fast), provider("p", "paperspace", **fast)]
    assert workers_for(provider_limits(bench)) == 35  # 2 x 50 calls/s x 0.35 s
    assert workers_for([RateLimits.unlimited()] * 10) == MAX_WORKERS
    assert provider_limits([{"kind": "GPUProvider", "metadata": {"name": "bad"}}]) == []


def test_the_handler_resizes_on_provider_changes() -> None:
    class Store:
        objects: list[dict[str, Any]] = []

        def list(self) -> list[dict[str, Any]]:
            return self.objects

    class Controller:
        workers = 0

        def set_workers(self, n: int) -> None:
            self.workers = n

    store, controller = Store(), Controller()
    handler = SizeFromProviders(store, controller)
    fast = {"rateLimit": {"requestsPerSecond": 1000, "launchesPerMinute": 600}}
    store.objects = [provider("l", "lambda", **fast)]
    handler.on_add(store.objects[0])
    assert controller.workers == MIN_WORKERS + 2  # 50 calls/s x 0.35 s = 18
    store.objects = []
    handler.on_delete(provider("l", "lambda"))
    assert controller.workers == MIN_WORKERS
