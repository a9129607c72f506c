"""Disruption metrics (`gpuctl_pool_disruption_*`), on `gpuctl.runtime.metrics.REGISTRY`.

- `gpuctl_pool_disruption_decisions_total{pool,reason,action}`: machines whose
  disruption started; `reason` Empty, Underutilized or Expired; `action` delete or replace.
- `gpuctl_pool_disruption_abandoned_total{pool,reason}`: disruptions given up (a
  replacement failed or was not Ready in time, or a pod got do-not-disrupt).
- `gpuctl_pool_disruption_savings_usd_per_hour_total{pool,reason}`: USD per hour
  the started disruptions save (summed at decision time).
- `gpuctl_pool_disruption_allowed{pool,reason}`: disruptions the budgets allow now.
- `gpuctl_pool_disruption_blocked{pool}`: machines that would be disrupted but are
  blocked (do-not-disrupt, a PodDisruptionBudget).
- `gpuctl_pool_evictions_total{result}`: eviction requests; `result` evicted,
  refused (429: a PodDisruptionBudget forbids it now) or deleted (grace period over).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from gpuctl.runtime.metrics import REGISTRY

DECISIONS = Counter(
    "gpuctl_pool_disruption_decisions_total",
    "Machines whose disruption started, by pool, reason and action.",
    ["pool", "reason", "action"],
    registry=REGISTRY,
)
ABANDONED = Counter(
    "gpuctl_pool_disruption_abandoned_total",
    "Disruptions given up, by pool and reason.",
    ["pool", "reason"],
    registry=REGISTRY,
)
SAVINGS = Counter(
    "gpuctl_pool_disruption_savings_usd_per_hour_total",
    "USD per hour saved by the disruptions started, by pool and reason.",
    ["pool", "reason"],
    registry=REGISTRY,
)
ALLOWED = Gauge(
    "gpuctl_pool_disruption_allowed",
    "Disruptions the pool's budgets allow now, by reason.",
    ["pool", "reason"],
    registry=REGISTRY,
)
BLOCKED = Gauge(
    "gpuctl_pool_disruption_blocked",
    "Machines due for disruption but blocked (do-not-disrupt, PodDisruptionBudget).",
    ["pool"],
    registry=REGISTRY,
)
EVICTIONS = Counter(
    "gpuctl_pool_evictions_total",
    "Eviction requests by result: evicted, refused (PDB) or deleted (grace period over).",
    ["result"],
    registry=REGISTRY,
)
