from decimal import Decimal

from gpuctl.controllers.selection import CapacityPolicy, Placement, Want, select
from gpuctl.providers.base import CapacityType, Offer


def offer(
    provider: str,
    price: str,
    *,
    capacity: CapacityType = CapacityType.ON_DEMAND,
    region: str = "us-east",
    native: str = "r1",
    gpu: str = "H100-80GB",
    count: int = 8,
    available: bool = True,
) -> Offer:
    return Offer(
        provider=provider,
        cloud=provider,
        region=region,
        native_region=native,
        gpu_type=gpu,
        gpu_count=count,
        instance_type=f"{provider}-{gpu}-{count}",
        capacity_type=capacity,
        price_per_hour=Decimal(price),
        available=available,
    )


H100x8 = Want("H100-80GB", 8, CapacityPolicy.SPOT_OR_ON_DEMAND, Decimal("25"))


def test_cheapest_picks_spot_only_when_cheaper() -> None:
    od, spot = offer("lambda", "23.92"), offer("runpod", "14.00", capacity=CapacityType.SPOT)
    assert select(H100x8, [od, spot]).chosen == spot
    same = offer("runpod", "23.92", capacity=CapacityType.SPOT)
    assert select(H100x8, [same, od]).chosen == od


def test_on_demand_policy_never_takes_spot() -> None:
    want = Want("H100-80GB", 8, CapacityPolicy.ON_DEMAND, Decimal("25"))
    spot = offer("runpod", "14", capacity=CapacityType.SPOT)
    od = offer("lambda", "23.92")
    assert select(want, [spot, od]).ranked == (od,)


def test_ordered_follows_provider_list() -> None:
    want = Want(
        "H100-80GB",
        8,
        CapacityPolicy.ON_DEMAND,
        providers=("paperspace", "lambda"),
        placement=Placement.ORDERED,
    )
    cheap, dear = offer("lambda", "20"), offer("paperspace", "47.60")
    assert select(want, [cheap, dear]).ranked == (dear, cheap)


def test_blocked_and_unavailable_offers_are_skipped_with_reasons() -> None:
    a, b, c = (
        offer("lambda", "20", native="r1"),
        offer("lambda", "21", native="r2"),
        offer("lambda", "22", native="r3", available=False),
    )
    result = select(H100x8, [a, b, c], blocked=lambda o: o.native_region == "r1")
    assert result.chosen == b
    reasons = {r.offer.native_region: r.reason for r in result.rejected}
    assert reasons == {
        "r1": "recent capacity error (cached)",
        "r3": "no capacity reported by the provider",
    }


def test_no_offer_message_names_the_cheapest_over_the_cap() -> None:
    want = Want(
        "H100-80GB", 8, CapacityPolicy.SPOT_OR_ON_DEMAND, Decimal("20"), regions=("us-east",)
    )
    result = select(
        want, [offer("runpod", "23.92"), offer("lambda", "27.92"), offer("x", "1", gpu="A10-24GB")]
    )
    assert result.chosen is None
    assert (
        result.message
        == "no H100-80GB x8 under $20.00/h in us-east; cheapest is runpod at $23.92/h"
    )


def test_no_allowed_provider_message() -> None:
    want = Want("RTX-4090", 2, providers=("lambda",))
    result = select(want, [offer("runpod", "1", gpu="RTX-4090", count=2)])
    assert result.message == "no RTX-4090 x2 on-demand; no allowed provider offers it"
