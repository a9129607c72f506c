"""A pool's usage and limits: GPUs, machines and USD per hour, launching machines included.

Usage is derived from the pool's GPUNodeRequests as the API server holds them, never
from memory, so an operator killed mid-burst and restarted counts exactly what it
had bought. Every request counts until it is gone (a terminating machine bills until
the cloud confirms it gone), except a Failed one, which never got a machine. A
request's price is its offer's once chosen, else its `maxPricePerHour` (the launcher
always sets it: the planned offer's price), so the USD/h limit holds before the
offer step has even run.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import attrs

from gpuctl.api import Limits

Obj = dict[str, Any]


@attrs.frozen
class Usage:
    machines: int = 0
    gpus: int = 0
    price: Decimal = Decimal(0)

    def plus(self, gpus: int, price: Decimal, machines: int = 1) -> Usage:
        return Usage(self.machines + machines, self.gpus + gpus, self.price + price)


def counts(request: Obj) -> bool:
    return (request.get("status") or {}).get("phase") != "Failed"


def request_price(request: Obj) -> Decimal:
    offer = (request.get("status") or {}).get("offer") or {}
    cap = (request.get("spec") or {}).get("maxPricePerHour")
    return Decimal(str(offer.get("pricePerHour") or cap or 0))


def usage(requests: Iterable[Obj]) -> Usage:
    total = Usage()
    for request in requests:
        if counts(request):
            gpus = int(((request.get("spec") or {}).get("gpu") or {}).get("count") or 0)
            total = total.plus(gpus, request_price(request))
    return total


def exceeded(limits: Limits | None, used: Usage) -> str | None:
    """Which limit `used` is over, as "gpus 72 > 64"; None when within every limit."""
    if limits is None:
        return None
    if limits.gpus is not None and used.gpus > limits.gpus:
        return f"gpus {used.gpus} > {limits.gpus}"
    if limits.machines is not None and used.machines > limits.machines:
        return f"machines {used.machines} > {limits.machines}"
    if limits.price_per_hour is not None and used.price > limits.price_per_hour:
        return f"pricePerHour ${used.price}/h > ${limits.price_per_hour}/h"
    return None


def reached(limits: Limits | None, used: Usage) -> str | None:
    """Which limit `used` has reached (no room for even one more of it), or None."""
    if limits is None:
        return None
    if limits.gpus is not None and used.gpus >= limits.gpus:
        return f"gpus {used.gpus}/{limits.gpus}"
    if limits.machines is not None and used.machines >= limits.machines:
        return f"machines {used.machines}/{limits.machines}"
    if limits.price_per_hour is not None and used.price >= limits.price_per_hour:
        return f"pricePerHour ${used.price}/h of ${limits.price_per_hour}/h"
    return None
