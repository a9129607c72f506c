"""The Cost page: `gpuctl cost`'s report, the burn rate and spend over time.

The report is `gpuctl.controllers.spend.build_report` — the function `gpuctl cost`
runs — over the same ledger and requests, so totals, groups and per-request figures
are the same to the cent at the same `now`. The burn rate is the summed $/h of the
requests with a billed machine (an offer and an instance), exactly what the
`gpuctl_running_price_per_hour_usd` gauge sums.

Spend over time: the cumulative spend at `CHART_POINTS` times from the earliest
billing start to now, per provider, GPU type and request. A request's spend is
spread evenly over its billed interval (`since` to `until`, or to now while it
runs): the ledger keeps one total per request, not its hourly history, so a price
change between attempts is averaged. The last point of every series is the
report's figure, so the chart's end equals `gpuctl cost`.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from gpuctl.controllers.spend import Report, Spend
from gpuctl.dashboard.fmt import timestamp, usd

JSON = dict[str, Any]
CHART_POINTS = 60
TOP_REQUESTS = 8  # request series drawn; the rest are summed as "other"


def burn_rate(requests: Iterable[JSON]) -> Decimal:
    """$/h of the machines billed now: requests with an offer and an instance."""
    total = Decimal(0)
    for obj in requests:
        status = obj.get("status") or {}
        offer = status.get("offer") or {}
        if offer and status.get("instance"):
            total += Decimal(str(offer.get("pricePerHour", "0")))
    return total


def _ramp(spend: Spend, now: datetime.datetime) -> tuple[float, float, float]:
    """(start, end, amount) of a request's spend, spread evenly from start to end."""
    end = (spend.until or now).timestamp()
    start = spend.entry.since.timestamp() if spend.entry.since is not None else end
    return min(start, end), end, float(spend.entry.accrued_usd)


def _accrued_by(ramps: list[tuple[float, float, float]], at: float) -> float:
    total = 0.0
    for start, end, amount in ramps:
        if at >= end:
            total += amount
        elif at > start:
            total += amount * (at - start) / (end - start)
    return total


def _times(report: Report) -> list[datetime.datetime]:
    starts = [s.entry.since or s.until or report.now for s in report.spends]
    first = min(starts, default=report.now)
    if first >= report.now:
        return [report.now]
    step = (report.now - first) / (CHART_POINTS - 1)
    return [first + step * i for i in range(CHART_POINTS - 1)] + [report.now]


def _ms(when: datetime.datetime) -> str:
    """A chart time to the millisecond (points are often less than a second apart)."""
    return when.astimezone(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def series(report: Report, key: str) -> list[JSON]:
    """Cumulative spend per value of an Entry attribute (provider, gpu_type, request)."""
    times = _times(report)
    groups: dict[str, list[Spend]] = {}
    for spend in report.spends:
        groups.setdefault(str(getattr(spend.entry, key)) or "-", []).append(spend)
    ranked = sorted(groups.items(), key=lambda kv: -sum(s.entry.accrued_usd for s in kv[1]))
    if key == "request" and len(ranked) > TOP_REQUESTS:
        rest = [s for _, spends in ranked[TOP_REQUESTS:] for s in spends]
        ranked = [*ranked[:TOP_REQUESTS], ("other", rest)]
    labels = [_ms(t) for t in times]
    found = []
    for name, spends in ranked:
        # Points before now in floats (they are an even spread anyway); the last one is
        # the report's exact sum, so the chart ends at `gpuctl cost`'s figure.
        ramps = [_ramp(s, report.now) for s in spends]
        exact = usd(sum((s.entry.accrued_usd for s in spends), Decimal(0)))
        points = [
            [label, f"{min(_accrued_by(ramps, t.timestamp()), float(exact)):.4f}"]
            for label, t in zip(labels[:-1], times[:-1], strict=True)
        ]
        found.append({"name": name, "points": [*points, [labels[-1], exact]]})
    return found


def view(report: Report, requests: Iterable[JSON]) -> JSON:
    """The Cost page's data; `requests` are the objects the report was built from."""
    spends = report.spends
    return {
        "now": timestamp(report.now),
        "burnRatePerHour": str(burn_rate(requests)),
        "total": {
            "requests": len(spends),
            "running": sum(1 for s in spends if s.running),
            "finished": sum(1 for s in spends if not s.running),
            "accruedUSD": usd(report.total),
        },
        "byProvider": [
            {"provider": g.key, "requests": g.requests, "accruedUSD": usd(g.accrued_usd)}
            for g in report.by("provider")
        ],
        "byGpuType": [
            {"gpuType": g.key, "requests": g.requests, "accruedUSD": usd(g.accrued_usd)}
            for g in report.by("gpu_type")
        ],
        "requests": [
            {
                "request": s.entry.request,
                "uid": s.entry.uid,
                "state": "running" if s.running else "finished",
                "provider": s.entry.provider,
                "gpuType": s.entry.gpu_type,
                "gpuCount": s.entry.gpu_count,
                "capacityType": s.entry.capacity_type,
                "since": timestamp(s.entry.since),
                "until": timestamp(s.until),
                "accruedUSD": usd(s.entry.accrued_usd),
            }
            for s in spends
        ],
        "series": {
            "provider": series(report, "provider"),
            "gpuType": series(report, "gpu_type"),
            "request": series(report, "request"),
        },
    }
