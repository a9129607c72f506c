"""Pool metrics (`gpuctl_pool_*`), on `gpuctl.runtime.metrics.REGISTRY`.

Gauges, set by the pool status reconcile from the cluster's objects:
- `gpuctl_pool_machines{pool}`, `gpuctl_pool_machines_launching{pool}`;
- `gpuctl_pool_gpus{pool}` (GPUs of its machines), `gpuctl_pool_gpus_in_use{pool}`;
- `gpuctl_pool_price_per_hour_usd{pool}`: USD/h of its machines (launching at their cap);
- `gpuctl_pool_limit{pool,resource}`: the limit for `gpus`, `machines`, `price_per_hour_usd`
  (absent when unset);
- `gpuctl_pool_pending_pods`: provisionable pods at the last provisioning round.

Counters and histograms, moved by the provisioner:
- `gpuctl_pool_machines_created_total{pool}`: GPUNodeRequests created for pending pods;
- `gpuctl_pool_unserved_pods_total{reason}`: pods a round could not serve, `reason` one of
  `limit`, `no_offer`, `constraints` (selector, affinity, taint, size), `no_pool`;
- `gpuctl_pool_provisioning_rounds_total{result}`: `scale_up`, `none`, `blocked`, `error`;
- `gpuctl_pool_provisioning_duration_seconds`: one round, offers to the last create;
- `gpuctl_pool_batch_pods`: provisionable pods per round.
"""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge, Histogram

from gpuctl.runtime.metrics import REGISTRY

MACHINES = Gauge(
    "gpuctl_pool_machines", "Machines of the pool, launching ones included.", ["pool"],
    registry=REGISTRY,
)  # fmt: skip
LAUNCHING = Gauge(
    "gpuctl_pool_machines_launching", "Machines of the pool whose Node is not Ready yet.",
    ["pool"], registry=REGISTRY,
)  # fmt: skip
GPUS = Gauge("gpuctl_pool_gpus", "GPUs of the pool's machines.", ["pool"], registry=REGISTRY)
GPUS_IN_USE = Gauge(
    "gpuctl_pool_gpus_in_use", "GPUs requested by pods bound to the pool's Nodes.", ["pool"],
    registry=REGISTRY,
)  # fmt: skip
PRICE = Gauge(
    "gpuctl_pool_price_per_hour_usd", "USD per hour of the pool's machines.", ["pool"],
    registry=REGISTRY,
)  # fmt: skip
LIMIT = Gauge(
    "gpuctl_pool_limit", "The pool's limit by resource (gpus, machines, price_per_hour_usd).",
    ["pool", "resource"], registry=REGISTRY,
)  # fmt: skip
PENDING = Gauge(
    "gpuctl_pool_pending_pods", "Provisionable pods at the last provisioning round.",
    registry=REGISTRY,
)  # fmt: skip
CREATED = Counter(
    "gpuctl_pool_machines_created_total", "GPUNodeRequests created for pending pods.", ["pool"],
    registry=REGISTRY,
)  # fmt: skip
UNSERVED = Counter(
    "gpuctl_pool_unserved_pods_total", "Pods a provisioning round could not serve, by reason.",
    ["reason"], registry=REGISTRY,
)  # fmt: skip
ROUNDS = Counter(
    "gpuctl_pool_provisioning_rounds_total", "Provisioning rounds by result.", ["result"],
    registry=REGISTRY,
)  # fmt: skip
DURATION = Histogram(
    "gpuctl_pool_provisioning_duration_seconds", "Seconds one provisioning round took.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=REGISTRY,
)  # fmt: skip
BATCH = Histogram(
    "gpuctl_pool_batch_pods", "Provisionable pods per provisioning round.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000), registry=REGISTRY,
)  # fmt: skip


def forget(pool: str) -> None:
    """Drop a deleted pool's series."""
    for gauge in (MACHINES, LAUNCHING, GPUS, GPUS_IN_USE, PRICE):
        with contextlib.suppress(KeyError):
            gauge.remove(pool)
    for resource in ("gpus", "machines", "price_per_hour_usd"):
        forget_limit(pool, resource)


def forget_limit(pool: str, resource: str) -> None:
    with contextlib.suppress(KeyError):
        LIMIT.remove(pool, resource)
