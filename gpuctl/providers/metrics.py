"""Prometheus metrics of the cloud drivers.

Series (labels never carry credentials, instance ids or error text):

  gpuctl_provider_api_calls_total{provider,cloud,operation,code}   one per HTTP attempt;
      code is the HTTP status, or "timeout" / "connection" / "cancelled" without one
  gpuctl_provider_api_duration_seconds{cloud,operation}            histogram per attempt
  gpuctl_provider_api_errors_total{provider,cloud,operation,error} one per typed error
      raised to a caller; error is the ProviderError class name
  gpuctl_price_cache_hits_total{provider} / gpuctl_price_cache_misses_total{provider}

The metrics live on the operator's registry, `gpuctl.runtime.metrics.REGISTRY`, when that
module exists, else on prometheus_client's default registry. They are created on first
use, so importing this module registers nothing and the choice of registry is made once,
when the process first talks to a cloud.
"""

from __future__ import annotations

import functools
import importlib

import attrs
from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from prometheus_client import CollectorRegistry, Counter, Histogram

# Cloud API calls take from tens of milliseconds to tens of seconds (a launch).
_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def registry() -> CollectorRegistry:
    """gpuctl.runtime.metrics.REGISTRY if that module exists, else the default registry."""
    try:
        module = importlib.import_module("gpuctl.runtime.metrics")
    except ImportError:
        return DEFAULT_REGISTRY
    found = getattr(module, "REGISTRY", None)
    return found if isinstance(found, CollectorRegistry) else DEFAULT_REGISTRY


@attrs.frozen
class _Metrics:
    calls: Counter
    duration: Histogram
    errors: Counter
    cache_hits: Counter
    cache_misses: Counter


@functools.cache
def _metrics() -> _Metrics:
    reg = registry()
    return _Metrics(
        calls=Counter(
            "gpuctl_provider_api_calls_total",
            "HTTP requests sent to cloud APIs, by response code.",
            ["provider", "cloud", "operation", "code"],
            registry=reg,
        ),
        duration=Histogram(
            "gpuctl_provider_api_duration_seconds",
            "Duration of HTTP requests to cloud APIs.",
            ["cloud", "operation"],
            buckets=_BUCKETS,
            registry=reg,
        ),
        errors=Counter(
            "gpuctl_provider_api_errors_total",
            "Typed errors raised by cloud drivers to their callers.",
            ["provider", "cloud", "operation", "error"],
            registry=reg,
        ),
        cache_hits=Counter(
            "gpuctl_price_cache_hits_total",
            "Offer lookups served from the price cache.",
            ["provider"],
            registry=reg,
        ),
        cache_misses=Counter(
            "gpuctl_price_cache_misses_total",
            "Offer lookups that fetched the cloud's catalog.",
            ["provider"],
            registry=reg,
        ),
    )


def api_call(provider: str, cloud: str, operation: str, code: str, seconds: float) -> None:
    m = _metrics()
    m.calls.labels(provider, cloud, operation, code).inc()
    m.duration.labels(cloud, operation).observe(seconds)


def api_error(provider: str, cloud: str, operation: str, error: str) -> None:
    _metrics().errors.labels(provider, cloud, operation, error).inc()


def price_cache_hit(provider: str) -> None:
    _metrics().cache_hits.labels(provider).inc()


def price_cache_miss(provider: str) -> None:
    _metrics().cache_misses.labels(provider).inc()
