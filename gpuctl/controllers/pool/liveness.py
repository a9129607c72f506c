"""A pool's request that cannot launch is deleted, so its pods are planned again.

A pool's GPUNodeRequest asks for one offer's shape at that offer's price in its
provider and region. If that offer fails (no capacity, a registration timeout) the
request finds nothing else within those bounds: it waits with
`OfferAvailable=False` (reason NoOffer) and no machine. After `grace` (10 s: the
offer step has tried every offer within its bounds by then) it is deleted
(an Event on the request says why); the provisioner then plans its pods again with
the failed offer blocked by the capacity-error cache, as Karpenter deletes a
NodeClaim that cannot launch. A request with a machine (`status.instance`) is never
touched here: tearing machines down is the request lifecycle's and disruption's job.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

from gpuctl.api.convert import parse_time
from gpuctl.controllers.resources import GPUNODEREQUESTS
from gpuctl.runtime.client import Client, is_not_found
from gpuctl.runtime.events import EventRecorder

Obj = dict[str, Any]
GRACE = datetime.timedelta(seconds=10)


def stuck_since(request: Obj) -> datetime.datetime | None:
    """When the request last started waiting without an offer (and machine), or None."""
    meta, status = request["metadata"], request.get("status") or {}
    if meta.get("deletionTimestamp") or status.get("instance") or status.get("offer"):
        return None
    for condition in status.get("conditions") or []:
        kind = (condition.get("type"), condition.get("status"), condition.get("reason"))
        if kind == ("OfferAvailable", "False", "NoOffer"):
            return parse_time(condition["lastTransitionTime"])
    return None


async def remove_stuck(
    client: Client,
    events: EventRecorder,
    requests: Sequence[Obj],
    now: datetime.datetime,
    grace: datetime.timedelta = GRACE,
) -> tuple[int, float]:
    """Delete the stuck requests past `grace`: (how many, seconds until the next is due)."""
    removed, next_due = 0, 0.0
    for request in requests:
        since = stuck_since(request)
        if since is None:
            continue
        left = (since + grace - now).total_seconds()
        if left > 0:
            next_due = min(next_due, left) if next_due else left
            continue
        meta = request["metadata"]
        message = (
            f"no offer within the request's bounds for {grace}; deleted to plan its pods again"
        )
        await events.record(request, "Warning", "CannotLaunch", message)
        try:
            await client.delete(GPUNODEREQUESTS, meta["name"], uid=meta.get("uid"))
            removed += 1
        except Exception as err:
            if not is_not_found(err):
                raise
    return removed, next_due
