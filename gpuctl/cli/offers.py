"""`gpuctl offers`: live prices of the configured clouds, cheapest first.

Asks every provider (or only the `--provider` ones) for its offers concurrently,
through the drivers the operator uses (`config.open_source`: the cluster's
GPUProviders or a `--config` file), filtered by `--gpu` and `--count` at the
driver as the offer step does, then by `--spot`, `--region` and `--available`
here. Sorted by price, then on-demand before spot (same money, no
interruptions), then provider, region and instance type.

A provider that cannot answer (bad key, outage, missing Secret, timeout after
`--timeout` seconds) is listed under `errors` with its reason and message; the
others are still printed. Exit status: 0 when at least one provider answered,
1 when none did (or none is configured), 2 for bad flags or config.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from typing import Any

import attrs

from gpuctl.api import Region
from gpuctl.cli import output
from gpuctl.cli.config import ConfigError, add_source_flags, open_source
from gpuctl.controllers.drivers import ProviderUnavailableError
from gpuctl.controllers.request.offer import Drivers
from gpuctl.providers import catalog
from gpuctl.providers.base import CapacityType, Offer, ProviderError

DEFAULT_TIMEOUT = 30.0


@attrs.frozen
class ProviderFailure:
    provider: str
    reason: str  # a condition reason (SecretNotFound) or the error type (AuthError)
    message: str

    def to_json(self) -> dict[str, str]:
        return {"provider": self.provider, "reason": self.reason, "message": self.message}


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "offers",
        help="compare live GPU prices across the configured clouds",
        description="List what the configured clouds rent now, cheapest first, with "
        "availability. Providers come from the cluster's GPUProviders (and their Secrets "
        "in --namespace) or from a --config file. A provider that fails is listed with "
        "its error.",
    )
    add = parser.add_argument
    add("--gpu", metavar="TYPE", help="normalised GPU type, e.g. H100-80GB (default: all)")
    add("--count", type=int, metavar="N", help="GPUs per machine (default: any)")
    add("--spot", action="store_true", help="only spot (interruptible) offers")
    add(
        "--region",
        action="append",
        default=[],
        choices=[r.value for r in Region],
        metavar="REGION",
        help="only this normalised region, e.g. us-east (repeatable)",
    )
    add("--provider", action="append", default=[], metavar="NAME", help="only this provider")
    add("--available", action="store_true", help="only offers with capacity now")
    add("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS", help="per provider")
    add_source_flags(parser)
    output.add_output_flag(parser)
    parser.set_defaults(handler=_run)


async def gather(
    drivers: Drivers,
    names: Sequence[str],
    *,
    gpu_type: str | None,
    gpu_count: int | None,
    wait: float,
) -> tuple[list[Offer], list[ProviderFailure]]:
    """Offers of `names`, and one failure per provider that failed or took over `wait` s."""

    async def one(name: str) -> list[Offer] | ProviderFailure:
        try:
            driver = drivers.get(name)
            listing = driver.list_offers(gpu_type=gpu_type, gpu_count=gpu_count)
            return await asyncio.wait_for(listing, wait)
        except ProviderUnavailableError as err:
            return ProviderFailure(name, err.reason, err.message)
        except ProviderError as err:
            return ProviderFailure(name, type(err).__name__, err.message)
        except TimeoutError:
            return ProviderFailure(name, "Timeout", f"no answer within {wait:g}s")
        except Exception as err:  # a CLI lists a broken provider; it does not crash on it
            return ProviderFailure(name, type(err).__name__, str(err))

    offers: list[Offer] = []
    failures: list[ProviderFailure] = []
    for answer in await asyncio.gather(*(one(n) for n in names)):
        if isinstance(answer, ProviderFailure):
            failures.append(answer)
        else:
            offers.extend(answer)
    return offers, failures


def keep(
    offers: Sequence[Offer], *, spot: bool, regions: Sequence[str], available: bool
) -> list[Offer]:
    """The offers that pass the filters, cheapest first (see the module docstring)."""
    kept = [
        o
        for o in offers
        if (not spot or o.capacity_type is CapacityType.SPOT)
        and (not regions or o.region in regions)
        and (not available or o.available)
    ]
    return sorted(
        kept,
        key=lambda o: (
            o.price_per_hour,
            o.capacity_type is CapacityType.SPOT,
            o.provider,
            o.region,
            o.native_region,
            o.instance_type,
            o.gpu_count,
        ),
    )


def offer_json(offer: Offer) -> dict[str, Any]:
    return {
        "provider": offer.provider,
        "cloud": offer.cloud,
        "region": offer.region,
        "nativeRegion": offer.native_region,
        "gpuType": offer.gpu_type,
        "gpuCount": offer.gpu_count,
        "instanceType": offer.instance_type,
        "capacityType": offer.capacity_type.value,
        "pricePerHour": output.price(offer.price_per_hour),
        "available": offer.available,
    }


OFFER_COLUMNS = (
    "provider",
    "region",
    "native-region",
    "instance-type",
    "gpu",
    "count",
    "capacity",
    "$/hour",
    "available",
)


def offer_row(offer: Offer) -> list[object]:
    return [
        offer.provider,
        offer.region,
        offer.native_region,
        offer.instance_type,
        offer.gpu_type,
        offer.gpu_count,
        offer.capacity_type.value,
        offer.price_per_hour,
        offer.available,
    ]


def render(offers: Sequence[Offer], failures: Sequence[ProviderFailure]) -> str:
    text = output.table(OFFER_COLUMNS, (offer_row(o) for o in offers)) if offers else ""
    if not offers:
        text += "No offers.\n"
    if failures:
        rows = ([f.provider, f.reason, f.message] for f in failures)
        text += "\n" + output.table(("provider", "error", "message"), rows)
    return text


async def _main(args: argparse.Namespace) -> int:
    async with open_source(args) as source:
        names = args.provider or source.drivers.names()
        if not names:
            output.error("no providers configured")
            return 1
        offers, failures = await gather(
            source.drivers,
            names,
            gpu_type=args.gpu,
            gpu_count=args.count,
            wait=args.timeout,
        )
    shown = keep(offers, spot=args.spot, regions=args.region, available=args.available)
    if args.output == "json":
        output.write_json(
            {
                "offers": [offer_json(o) for o in shown],
                "errors": [f.to_json() for f in failures],
            }
        )
    else:
        output.write(render(shown, failures))
    return 0 if len(failures) < len(names) else 1


def _run(args: argparse.Namespace) -> int:
    if args.gpu is not None and args.gpu not in catalog.gpu_types():
        output.error(f"unknown GPU type {args.gpu!r}; known: {', '.join(catalog.gpu_types())}")
        return 2
    if args.count is not None and args.count < 1:
        output.error("--count must be at least 1")
        return 2
    try:
        return asyncio.run(_main(args))
    except ConfigError as err:
        output.error(str(err))
        return 2
