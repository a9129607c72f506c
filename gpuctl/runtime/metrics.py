"""gpuctl's own Prometheus registry and the engine's metrics.

`REGISTRY` is a private `CollectorRegistry` (not prometheus_client's global one):
the manager's `/metrics` endpoint serves exactly it, tests read it, and importing
gpuctl never registers anything in a host process's default registry. Every
gpuctl metric, including those defined in other modules, goes on `REGISTRY`.

Names and meanings follow controller-runtime (`controller_runtime_reconcile_*`)
and client-go's workqueue metrics (`workqueue_*`), with a `gpuctl_` prefix:

- `gpuctl_reconcile_total{controller,result}`: reconciles by outcome, `result` in
  `success`, `error`, `terminal`, `requeue`, `requeue_after`.
- `gpuctl_reconcile_errors_total{controller}`: reconciles that raised (terminal or not).
- `gpuctl_reconcile_duration_seconds{controller}`: time spent in `reconcile()`.
- `gpuctl_controller_active_workers{controller}`: workers inside `reconcile()` now.
- `gpuctl_workqueue_depth{name}`: items waiting (dirty, not yet handed out).
- `gpuctl_workqueue_adds_total{name}`: adds that were not collapsed into a pending one.
- `gpuctl_workqueue_retries_total{name}`: delayed and rate-limited adds.
- `gpuctl_workqueue_queue_duration_seconds{name}`: time from add to get.
- `gpuctl_workqueue_work_duration_seconds{name}`: time from get to done.
- `gpuctl_workqueue_unfinished_work_seconds{name}`: summed age of in-flight items.
- `gpuctl_workqueue_longest_running_processor_seconds{name}`: age of the oldest
  in-flight item.
- `gpuctl_leader_election_master_status{name}`: 1 while this process leads the lease.

The last three workqueue gauges are computed when scraped (`Gauge.set_function`),
where client-go refreshes them from a 500 ms ticker.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

# controller-runtime's reconcile-time buckets (pkg/internal/controller/metrics).
_RECONCILE_BUCKETS = (
    *(0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5),
    *(0.6, 0.7, 0.8, 0.9, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0),
    *(6.0, 7.0, 8.0, 9.0, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 60.0),
)
# client-go/controller-runtime workqueue buckets: ExponentialBuckets(10e-9, 10, 12).
_QUEUE_BUCKETS = tuple(1e-8 * 10**i for i in range(12))

RECONCILE_TOTAL = Counter(
    "gpuctl_reconcile_total",
    "Reconciles per controller and outcome.",
    ["controller", "result"],
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "gpuctl_reconcile_errors_total",
    "Reconciles that raised, per controller.",
    ["controller"],
    registry=REGISTRY,
)
RECONCILE_DURATION = Histogram(
    "gpuctl_reconcile_duration_seconds",
    "Time spent in one reconcile, per controller.",
    ["controller"],
    buckets=_RECONCILE_BUCKETS,
    registry=REGISTRY,
)
ACTIVE_WORKERS = Gauge(
    "gpuctl_controller_active_workers",
    "Workers currently running a reconcile, per controller.",
    ["controller"],
    registry=REGISTRY,
)

WORKQUEUE_DEPTH = Gauge(
    "gpuctl_workqueue_depth",
    "Items waiting in the work queue.",
    ["name"],
    registry=REGISTRY,
)
WORKQUEUE_ADDS = Counter(
    "gpuctl_workqueue_adds_total",
    "Adds handled by the work queue (collapsed duplicates not counted).",
    ["name"],
    registry=REGISTRY,
)
WORKQUEUE_RETRIES = Counter(
    "gpuctl_workqueue_retries_total",
    "Delayed and rate-limited adds handled by the work queue.",
    ["name"],
    registry=REGISTRY,
)
WORKQUEUE_QUEUE_DURATION = Histogram(
    "gpuctl_workqueue_queue_duration_seconds",
    "Time an item waits in the work queue before it is handed out.",
    ["name"],
    buckets=_QUEUE_BUCKETS,
    registry=REGISTRY,
)
WORKQUEUE_WORK_DURATION = Histogram(
    "gpuctl_workqueue_work_duration_seconds",
    "Time from handing an item out to its done().",
    ["name"],
    buckets=_QUEUE_BUCKETS,
    registry=REGISTRY,
)
WORKQUEUE_UNFINISHED_WORK = Gauge(
    "gpuctl_workqueue_unfinished_work_seconds",
    "Summed age of the items being processed; grows if a worker is stuck.",
    ["name"],
    registry=REGISTRY,
)
WORKQUEUE_LONGEST_RUNNING = Gauge(
    "gpuctl_workqueue_longest_running_processor_seconds",
    "Age of the longest-running item being processed.",
    ["name"],
    registry=REGISTRY,
)

LEADER_STATUS = Gauge(
    "gpuctl_leader_election_master_status",
    "1 while this process holds the named leader-election lease, else 0.",
    ["name"],
    registry=REGISTRY,
)
