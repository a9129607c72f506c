"""The Fleet page: one row per GPUNodeRequest and a timeline of each.

A row holds what `kubectl get gnr -o wide` shows (phase, provider, region, GPU, $/h,
Node, age) plus the accrued cost as `gpuctl cost` computes it at the same moment
(the caller passes the spend of each request by uid). The timeline merges, oldest
first: the request's creation, each condition's last transition, each failed offer
(`status.failedOffers`: interruptions, launch errors, registration timeouts), the
phase changes this process saw (`PhaseHistory`) and the Kubernetes Events about it.
Everything is data: the page renders every string as text.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from gpuctl.controllers.spend import Spend
from gpuctl.dashboard.fmt import parse_time, price, timestamp, usd

JSON = dict[str, Any]
MAX_EVENTS = 50  # per request, newest kept
MAX_PHASES = 50  # observed phase changes kept per request


class PhaseHistory:
    """Phase changes of GPUNodeRequests as this process's informer saw them.

    An informer event handler: `on_add`/`on_update` note a phase the first time it
    is seen for a uid, at the time it was seen (the API keeps no phase history).
    """

    def __init__(self, clock: Any = None) -> None:
        self._clock = clock or (lambda: datetime.datetime.now(datetime.UTC))
        self._seen: dict[str, list[tuple[datetime.datetime, str]]] = {}

    def on_add(self, obj: JSON) -> None:
        self._note(obj)

    def on_update(self, old: JSON, new: JSON) -> None:
        self._note(new)

    def on_delete(self, obj: JSON) -> None:
        self._seen.pop(str(obj["metadata"].get("uid", "")), None)

    def of(self, uid: str) -> list[tuple[datetime.datetime, str]]:
        return list(self._seen.get(uid, ()))

    def _note(self, obj: JSON) -> None:
        phase = (obj.get("status") or {}).get("phase") or "Pending"
        seen = self._seen.setdefault(str(obj["metadata"].get("uid", "")), [])
        if not seen or seen[-1][1] != phase:
            seen.append((self._clock(), str(phase)))
            del seen[:-MAX_PHASES]


def events_by_object(events: Iterable[JSON]) -> dict[str, list[JSON]]:
    """Events keyed by involvedObject uid (and by kind/name for events without one)."""
    found: dict[str, list[JSON]] = {}
    for event in events:
        involved = event.get("involvedObject") or {}
        keys = {str(involved.get("uid") or ""), f"{involved.get('kind')}/{involved.get('name')}"}
        for key in keys - {""}:
            found.setdefault(key, []).append(event)
    return found


def event_time(event: JSON) -> datetime.datetime | None:
    """When an Event last happened: lastTimestamp, else eventTime, else firstTimestamp."""
    for field in ("lastTimestamp", "eventTime", "firstTimestamp"):
        when = parse_time(event.get(field))
        if when is not None:
            return when
    return parse_time((event.get("metadata") or {}).get("creationTimestamp"))


def event_json(event: JSON) -> JSON:
    return {
        "time": timestamp(event_time(event)),
        "source": "event",
        "type": str(event.get("type") or "Normal"),
        "reason": str(event.get("reason") or ""),
        "message": str(event.get("message") or ""),
        "count": int(event.get("count") or 1),
    }


def _events_of(obj: JSON, kind: str, events: Mapping[str, list[JSON]]) -> list[JSON]:
    meta = obj["metadata"]
    found = {
        id(e): e
        for key in (str(meta.get("uid") or ""), f"{kind}/{meta['name']}")
        for e in events.get(key, ())
    }
    ordered = sorted(found.values(), key=lambda e: event_time(e) or _EPOCH)
    return ordered[-MAX_EVENTS:]


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def timeline(
    obj: JSON, events: Mapping[str, list[JSON]], phases: list[tuple[datetime.datetime, str]]
) -> list[JSON]:
    """The request's history, oldest first (see the module docstring)."""
    meta, status = obj["metadata"], obj.get("status") or {}
    items: list[JSON] = [
        {
            "time": timestamp(parse_time(meta.get("creationTimestamp"))),
            "source": "request",
            "type": "Normal",
            "reason": "Created",
            "message": "GPUNodeRequest created",
        }
    ]
    for condition in status.get("conditions") or []:
        items.append(
            {
                "time": timestamp(parse_time(condition.get("lastTransitionTime"))),
                "source": "condition",
                "type": "Normal" if condition.get("status") == "True" else "Warning",
                "reason": f"{condition.get('type')}={condition.get('status')}",
                "message": f"{condition.get('reason') or ''}: {condition.get('message') or ''}",
            }
        )
    for failed in status.get("failedOffers") or []:
        items.append(
            {
                "time": timestamp(parse_time(failed.get("at"))),
                "source": "failover",
                "type": "Warning",
                "reason": str(failed.get("reason") or ""),
                "message": f"{failed.get('provider')} {failed.get('instanceType') or ''} "
                f"{failed.get('region') or ''} ({failed.get('capacityType') or ''}): "
                f"{failed.get('message') or ''}",
            }
        )
    for when, phase in phases:
        items.append(
            {
                "time": timestamp(when),
                "source": "phase",
                "type": "Warning" if phase in ("Interrupted", "Failed") else "Normal",
                "reason": f"phase {phase}",
                "message": "phase change seen by the dashboard",
            }
        )
    items += [event_json(e) for e in _events_of(obj, "GPUNodeRequest", events)]
    return sorted(items, key=lambda item: item["time"] or "")


def _node_ready(node: JSON | None) -> bool | None:
    if node is None:
        return None
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return False


def row(
    obj: JSON,
    spend: Spend | None,
    nodes: Mapping[str, JSON],
    now: datetime.datetime,
) -> JSON:
    """One request's row; `spend` is its entry in the cost report (None: never billed)."""
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    offer = status.get("offer") or {}
    gpu = spec.get("gpu") or {}
    created = parse_time(meta.get("creationTimestamp"))
    node_name = status.get("nodeName")
    accrued = spend.entry.accrued_usd if spend is not None else Decimal(0)
    return {
        "kind": "GPUNodeRequest",
        "name": str(meta["name"]),
        "uid": str(meta.get("uid") or ""),
        "phase": str(status.get("phase") or "Pending"),
        "provider": offer.get("provider"),
        "cloud": offer.get("cloud"),
        "region": offer.get("region"),
        "nativeRegion": offer.get("nativeRegion"),
        "instanceType": offer.get("instanceType"),
        "gpuType": str(gpu.get("type") or ""),
        "gpuCount": int(gpu.get("count") or 0),
        "capacityType": offer.get("capacityType") or spec.get("capacityType"),
        "pricePerHour": price(Decimal(str(offer["pricePerHour"])))
        if offer.get("pricePerHour") is not None
        else None,
        "billing": bool(offer and status.get("instance")),
        "created": timestamp(created),
        "ageSeconds": int((now - created).total_seconds()) if created else None,
        "node": node_name,
        "nodeReady": _node_ready(nodes.get(node_name)) if node_name else None,
        "accruedUSD": usd(accrued),
        "attempt": int(status.get("attempt") or 0),
        "interruptions": int(status.get("interruptions") or 0),
        "message": str(status.get("message") or ""),
        "labels": {str(k): str(v) for k, v in (meta.get("labels") or {}).items()},
        "nodeLabels": {
            str(k): str(v) for k, v in ((spec.get("node") or {}).get("labels") or {}).items()
        },
    }
