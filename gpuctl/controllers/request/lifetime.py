"""`spec.lifetime.maxLifetime`: when a request has lived that long, gpuctl deletes it.

Deleting the request (rather than just the machine) makes the end explicit and runs
the same termination as a user's delete: the finalizer tears the machine down.
"""

from __future__ import annotations

from gpuctl.controllers.request.context import Ctx
from gpuctl.controllers.resources import GPUNODEREQUESTS
from gpuctl.runtime.reconcile import Result


async def reconcile(ctx: Ctx) -> Result | None:
    lifetime = ctx.request.spec.lifetime
    limit = lifetime.max_lifetime_delta() if lifetime else None
    created = ctx.request.metadata.creation_timestamp
    if limit is None or created is None:
        return None
    left = (created + limit - ctx.now).total_seconds()
    if left > 0:
        return Result(requeue_after=left)
    ctx.event(
        "Normal", "Expired", f"maxLifetime {lifetime.max_lifetime if lifetime else ''} reached"
    )
    await ctx.services.client.delete(GPUNODEREQUESTS, ctx.name, uid=ctx.request.metadata.uid)
    return Result()
