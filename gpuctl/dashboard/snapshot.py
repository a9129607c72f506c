"""One snapshot of every page's data, computed once and shared by all viewers.

`build(sources, now)` reads only the in-memory sources. The cost report is
`gpuctl cost`'s (`spend.build_report`) over the cached requests and ledger; the
Fleet rows take their accrued cost from that same report, and the phase counts
are computed as the `gpuctl_requests` gauge computes them.
"""

from __future__ import annotations

import datetime
from collections import Counter
from typing import Any

from gpuctl.controllers.spend import build_report
from gpuctl.dashboard import costs, fleet, providers
from gpuctl.dashboard.fmt import parse_time, price, timestamp
from gpuctl.dashboard.sources import Sources

JSON = dict[str, Any]


def _pools(sources: Sources, now: datetime.datetime) -> list[JSON]:
    if sources.pools is None:
        return []
    rows = []
    for obj in sorted(sources.pools.list(), key=lambda o: str(o["metadata"]["name"])):
        meta, status = obj["metadata"], obj.get("status") or {}
        created = parse_time(meta.get("creationTimestamp"))
        ready = [c for c in status.get("conditions") or [] if c.get("type") == "Ready"]
        rows.append(
            {
                "kind": "GPUNodePool",
                "name": str(meta["name"]),
                "machines": int(status.get("machines") or 0),
                "launching": int(status.get("launching") or 0),
                "gpus": int(status.get("gpus") or 0),
                "gpusInUse": int(status.get("gpusInUse") or 0),
                "pricePerHour": price(status.get("pricePerHour")),
                "ready": str(ready[0].get("status")) if ready else None,
                "message": str(ready[0].get("message") or "") if ready else "",
                "created": timestamp(created),
                "ageSeconds": int((now - created).total_seconds()) if created else None,
            }
        )
    return rows


def build(sources: Sources, now: datetime.datetime) -> JSON:
    requests = sources.requests.list()
    report = build_report(requests, sources.ledger.entries, now)
    spends = {s.entry.uid: s for s in report.spends}
    nodes = {str(n["metadata"]["name"]): n for n in sources.nodes.list()}
    events = fleet.events_by_object(e for store in sources.events for e in store.list())
    rows = sorted(
        (
            fleet.row(obj, spends.get(str(obj["metadata"].get("uid"))), nodes, now)
            for obj in requests
        ),
        key=lambda r: r["name"],
    )
    timelines = {
        str(obj["metadata"].get("uid")): fleet.timeline(
            obj, events, sources.phases.of(str(obj["metadata"].get("uid")))
        )
        for obj in requests
    }
    phases = Counter(str((o.get("status") or {}).get("phase") or "Pending") for o in requests)
    return {
        "now": timestamp(now),
        "mode": sources.mode,
        "fleet": {
            "requests": rows,
            "pools": _pools(sources, now),
            "timelines": timelines,
            "byPhase": dict(sorted(phases.items())),
        },
        "cost": costs.view(report, requests),
        "providers": providers.view(sources.providers.list(), requests, events, sources.metrics()),
        "health": {
            "eventsSynced": sources.events_synced(),
            "ledgerReadAt": timestamp(sources.ledger.read_at),
            "ledgerError": sources.ledger.error,
            "ledgerEntries": len(sources.ledger.entries),
        },
    }
