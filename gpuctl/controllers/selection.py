"""Choosing an offer for a request: one pure function shared by the controller and `gpuctl plan`.

Given every offer the allowed providers make, `select()` filters by the request's
GPU type and count, allowed providers and regions, capacity type, price cap,
availability and the capacity-error cache, then ranks what is left:

- `cheapest`: by price; on a tie on-demand before spot (same money, no interruptions),
  then the order of `spec.providers`, then region — so spot wins only when it is cheaper;
- `ordered`: by position in `spec.providers`, then as `cheapest`.

Every rejected offer keeps the reason it was rejected, so `gpuctl plan` and the
controller's "no offer" message explain themselves.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal

import attrs

from gpuctl.providers.base import CapacityType, Offer


class Placement(enum.StrEnum):
    CHEAPEST = "cheapest"
    ORDERED = "ordered"


class CapacityPolicy(enum.StrEnum):
    ON_DEMAND = "on-demand"
    SPOT = "spot"
    SPOT_OR_ON_DEMAND = "spot-or-on-demand"

    def allows(self, capacity: CapacityType) -> bool:
        if self is CapacityPolicy.SPOT_OR_ON_DEMAND:
            return True
        return capacity.value == self.value


@attrs.frozen
class Want:
    """The parts of a GPUNodeRequest's spec that decide which offer fits."""

    gpu_type: str
    gpu_count: int
    capacity: CapacityPolicy = CapacityPolicy.ON_DEMAND
    max_price: Decimal | None = None
    providers: tuple[str, ...] = ()  # empty: every provider
    regions: tuple[str, ...] = ()  # empty: every region
    placement: Placement = Placement.CHEAPEST

    def describe(self) -> str:
        text = f"{self.gpu_type} x{self.gpu_count}"
        if self.capacity is not CapacityPolicy.SPOT_OR_ON_DEMAND:
            text += f" {self.capacity.value}"
        if self.max_price is not None:
            text += f" under ${self.max_price:.2f}/h"
        if self.regions:
            text += " in " + ", ".join(self.regions)
        return text


@attrs.frozen
class Rejection:
    offer: Offer
    reason: str


@attrs.frozen
class Selection:
    ranked: tuple[Offer, ...]  # fitting offers, best first
    rejected: tuple[Rejection, ...]
    message: str  # why this choice, or why nothing fits

    @property
    def chosen(self) -> Offer | None:
        return self.ranked[0] if self.ranked else None


def _rejection(want: Want, offer: Offer, blocked: Callable[[Offer], bool]) -> str | None:
    """Why `offer` does not fit `want`, checked cheapest test first; None when it fits."""
    if offer.gpu_type != want.gpu_type or offer.gpu_count != want.gpu_count:
        return "different GPU type or count"
    if want.providers and offer.provider not in want.providers:
        return "provider not allowed"
    if want.regions and offer.region not in want.regions:
        return "region not allowed"
    if not want.capacity.allows(offer.capacity_type):
        return f"{offer.capacity_type.value} not allowed"
    if want.max_price is not None and offer.price_per_hour > want.max_price:
        return f"${offer.price_per_hour:.2f}/h is over the ${want.max_price:.2f}/h cap"
    if not offer.available:
        return "no capacity reported by the provider"
    if blocked(offer):
        return "recent capacity error (cached)"
    return None


def _rank_key(want: Want) -> Callable[[Offer], tuple[object, ...]]:
    def provider_rank(offer: Offer) -> int:
        if offer.provider in want.providers:
            return want.providers.index(offer.provider)
        return len(want.providers)

    def key(offer: Offer) -> tuple[object, ...]:
        spot_last = offer.capacity_type is CapacityType.SPOT
        cheapest = (offer.price_per_hour, spot_last, provider_rank(offer), offer.region)
        if want.placement is Placement.ORDERED:
            return (provider_rank(offer), *cheapest)
        return (*cheapest, offer.native_region)

    return key


def select(
    want: Want,
    offers: Iterable[Offer],
    blocked: Callable[[Offer], bool] = lambda _: False,
) -> Selection:
    fitting: list[Offer] = []
    rejected: list[Rejection] = []
    for offer in offers:
        reason = _rejection(want, offer, blocked)
        if reason is None:
            fitting.append(offer)
        else:
            rejected.append(Rejection(offer, reason))
    fitting.sort(key=_rank_key(want))
    if fitting:
        best = fitting[0]
        message = (
            f"{best.provider} {best.instance_type} in {best.native_region} "
            f"({best.capacity_type.value}) at ${best.price_per_hour:.2f}/h"
        )
    else:
        message = _nothing_fits(want, rejected)
    return Selection(tuple(fitting), tuple(rejected), message)


_NOT_ALLOWED = ("different GPU type or count", "provider not allowed", "region not allowed")


def _nothing_fits(want: Want, rejected: Sequence[Rejection]) -> str:
    """E.g. "no H100-80GB x8 under $20.00/h in us-east; cheapest is runpod at $23.92/h"."""
    text = f"no {want.describe()}"
    near = [
        r
        for r in rejected
        if r.reason not in _NOT_ALLOWED and not r.reason.endswith(" not allowed")
    ]
    if not near:
        return text + "; no allowed provider offers it"
    cheapest = min(near, key=lambda r: r.offer.price_per_hour)
    text += f"; cheapest is {cheapest.offer.provider} at ${cheapest.offer.price_per_hour:.2f}/h"
    if "cap" not in cheapest.reason:
        text += f" ({cheapest.reason})"
    return text
