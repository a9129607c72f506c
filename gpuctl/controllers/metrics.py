"""The operator's business metrics (`gpuctl_*`), on `gpuctl.runtime.metrics.REGISTRY`.

Counters and histograms move as reconciles act; gauges derived from the request
cache (requests by phase, hourly price of running machines, accrued cost) are
computed when scraped, so they never drift from the objects.

- `gpuctl_requests{phase}`: GPUNodeRequests by phase.
- `gpuctl_launches_total{provider,capacity_type,result}`: launch attempts; `result` is
  `success`, `adopted` (found by name), `unknown` (a create with no answer), `capacity`,
  `quota`, `auth`, `invalid` or `transient`.
- `gpuctl_launch_to_ready_seconds{provider}`: launch until the Node is Ready.
- `gpuctl_interruptions_total{provider,capacity_type}`: machines lost while in use.
- `gpuctl_running_price_per_hour_usd{provider}`: summed $/h of machines now billed.
- `gpuctl_accrued_cost_usd{provider}`: summed cost of live requests up to the scrape:
  `status.cost.accruedUSD` plus, while a machine is recorded, its price times the time
  since `status.cost.updatedAt` (the status is not rewritten just for the cost).
- `gpuctl_leaked_instances_collected_total{provider}`: orphans the collector terminated.
- `gpuctl_unowned_instance_seconds_total{provider}`: machine-seconds of this cluster's
  instances that no request owned (orphans and twins), as the leak collector saw them;
  `gpuctl_unowned_instances{provider}`: how many its last pass of the provider listed.
- `gpuctl_duplicate_instances_total{provider}`: twins (a second machine under one
  attempt's name) terminated at once, by the launch or termination step or the collector.
- `gpuctl_request_failures_total{reason}`: Warning outcomes on requests (NoOffer,
  CapacityError, RegistrationTimeout, ProviderUnavailableError, ...).
- `gpuctl_provider_ready{provider}`: 1 when the GPUProvider's credentials work and its
  catalog answers, else 0.
"""

from __future__ import annotations

import datetime
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping
from decimal import Decimal
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gpuctl.controllers.cost import running_total
from gpuctl.runtime.metrics import REGISTRY

LAUNCHES = Counter(
    "gpuctl_launches_total",
    "Launch attempts by provider, capacity type and result.",
    ["provider", "capacity_type", "result"],
    registry=REGISTRY,
)
LAUNCH_TO_READY = Histogram(
    "gpuctl_launch_to_ready_seconds",
    "Seconds from launch until the machine's Node is Ready.",
    ["provider"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 900, 1200, 1800, 2700, 3600),
    registry=REGISTRY,
)
INTERRUPTIONS = Counter(
    "gpuctl_interruptions_total",
    "Machines lost while in use (spot preemption, vanished instance).",
    ["provider", "capacity_type"],
    registry=REGISTRY,
)
LEAKS_COLLECTED = Counter(
    "gpuctl_leaked_instances_collected_total",
    "Instances with this cluster's prefix and no owning request that were terminated.",
    ["provider"],
    registry=REGISTRY,
)
UNOWNED_SECONDS = Counter(
    "gpuctl_unowned_instance_seconds_total",
    "Seconds instances with this cluster's prefix were listed with no owning request.",
    ["provider"],
    registry=REGISTRY,
)
UNOWNED = Gauge(
    "gpuctl_unowned_instances",
    "Instances with no owning request in the leak collector's last pass of the provider.",
    ["provider"],
    registry=REGISTRY,
)
DUPLICATES = Counter(
    "gpuctl_duplicate_instances_total",
    "Second machines found under one request attempt's name, terminated at once.",
    ["provider"],
    registry=REGISTRY,
)
REQUEST_FAILURES = Counter(
    "gpuctl_request_failures_total",
    "Warning outcomes on GPUNodeRequests, by reason.",
    ["reason"],
    registry=REGISTRY,
)
PROVIDER_READY = Gauge(
    "gpuctl_provider_ready",
    "1 when the GPUProvider's credentials work and its catalog answers, else 0.",
    ["provider"],
    registry=REGISTRY,
)

Objects = Callable[[], Iterable[dict[str, Any]]]


class RequestCollector(Collector):
    """Gauges computed from the request cache at scrape time."""

    def __init__(self, requests: Objects) -> None:
        self.source = requests

    def collect(self) -> Iterator[GaugeMetricFamily]:
        phases: Tally[str] = Tally()
        price: dict[str, Decimal] = {}
        accrued: dict[str, Decimal] = {}
        now = datetime.datetime.now(datetime.UTC)
        for obj in self.source():
            status = obj.get("status") or {}
            phases[status.get("phase") or "Pending"] += 1
            offer = status.get("offer") or {}
            provider = offer.get("provider", "")
            if offer and status.get("instance"):
                price[provider] = price.get(provider, Decimal(0)) + Decimal(
                    str(offer.get("pricePerHour", "0"))
                )
            cost = status.get("cost") or {}
            if cost.get("accruedUSD") is not None:
                running = offer.get("pricePerHour") if offer and status.get("instance") else None
                total = running_total(cost["accruedUSD"], cost.get("updatedAt"), running, now)
                accrued[provider] = accrued.get(provider, Decimal(0)) + total
        yield _family("gpuctl_requests", "GPUNodeRequests by phase.", "phase", phases)
        yield _family(
            "gpuctl_running_price_per_hour_usd",
            "Summed USD per hour of the machines billed now.",
            "provider",
            price,
        )
        yield _family(
            "gpuctl_accrued_cost_usd",
            "Summed accrued cost of the requests in the cluster.",
            "provider",
            accrued,
        )


def _family(
    name: str, doc: str, label: str, values: Mapping[str, int | Decimal]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], float(value))
    return family


_collector = RequestCollector(lambda: ())
REGISTRY.register(_collector)


def register_request_collector(requests: Objects) -> RequestCollector:
    """Point the scrape-time gauges at an operator's request cache (the latest one wins)."""
    _collector.source = requests
    return _collector
