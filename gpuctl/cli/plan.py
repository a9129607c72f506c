"""`gpuctl plan -f request.yaml`: the offer the controller would choose, and why.

For pods (a Pod, Deployment, ReplicaSet, StatefulSet, Job or CronJob in the file) plan
answers which GPUNodePool and offer the provisioner would choose, through the
provisioner's own decision (gpuctl/cli/plan_pods.py). For each GPUNodeRequest in the
file (other kinds are skipped; `-f -` reads stdin),
read as the controller reads it (`GPUNodeRequest.from_dict`), plan runs the
controller's own code: `offer.unknown_gpu_type`, then `offer.choose` — the function
the offer step calls — with the same providers (the cluster's GPUProviders through
the operator's `DriverPool`, or a `--config` file) and the same capacity cache
semantics. Nothing is created or launched; no object is written.

The capacity cache: the operator keeps it in memory, so plan rebuilds it from what
the cluster records. The operator marks an offer exactly when it fails over from
it (launch errors, registration timeout, spot interruption — an on-demand
interruption is not marked), and each of those failures is kept in the request's
`status.failedOffers`. Plan marks a `CapacityCache` with every such failure younger
than `--capacity-ttl` (the operator's default, 180 s), at the time it happened,
keyed like `Offer.key` by (provider, native region, the request's GPU type,
capacity type). With `--config` there is no cluster and the cache is empty.

Exit status: 0 when every request has an offer and every pod a machine, 1 when one
has none, 2 for bad input (file, flags, config).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from gpuctl.api import GNR_KIND, GPUNodeRequest, ObjectError
from gpuctl.cli import output, plan_pods
from gpuctl.cli.config import ConfigError, add_source_flags, open_source
from gpuctl.cli.offers import OFFER_COLUMNS, offer_json, offer_row
from gpuctl.controllers.planning import Plan, capacity_from, plan_one
from gpuctl.controllers.pool.binpack import Plan as PoolPlan
from gpuctl.controllers.resources import GPUNODEREQUESTS
from gpuctl.controllers.selection import Want
from gpuctl.providers.capacity import DEFAULT_TTL_SECONDS, CapacityCache
from gpuctl.runtime.client import ApiError, Client, TransportError

JSON = dict[str, Any]


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "plan",
        help="show which offer the controller would choose for a request (or which pool and "
        "offer for pods), without launching",
        description="Run the controller's offer selection for the GPUNodeRequests in a file: "
        "the chosen offer, every other fitting offer in rank order and every rejected "
        "offer with its reason; for Pods and workloads (Deployment, Job, ...), the "
        "GPUNodePool and offer the provisioner would choose. Nothing is launched.",
    )
    parser.add_argument(
        "-f",
        "--filename",
        required=True,
        metavar="FILE",
        help="YAML with GPUNodeRequests, or Pods/Deployments/Jobs (and optionally "
        "GPUNodePools) (- for stdin)",
    )
    parser.add_argument(
        "--capacity-ttl",
        type=float,
        default=DEFAULT_TTL_SECONDS,
        metavar="SECONDS",
        help=f"how long a failed offer stays blocked (operator default {DEFAULT_TTL_SECONDS:g})",
    )
    add_source_flags(parser)
    output.add_output_flag(parser)
    parser.set_defaults(handler=_run)


# -- input -----------------------------------------------------------------------------


def read_documents(text: str) -> list[Any]:
    try:
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        raise ConfigError(f"not YAML: {err}") from err


def read_requests(text: str) -> list[GPUNodeRequest]:
    """The GPUNodeRequests of a YAML stream; ConfigError for bad YAML or a bad request."""
    requests = gpunoderequests(read_documents(text))
    if not requests:
        raise ConfigError(f"no {GNR_KIND} in the input")
    return requests


def gpunoderequests(documents: Sequence[Any]) -> list[GPUNodeRequest]:
    requests = []
    for index, document in enumerate(documents):
        if not isinstance(document, dict) or document.get("kind") != GNR_KIND:
            continue
        try:
            requests.append(GPUNodeRequest.from_dict(document))
        except ObjectError as err:
            raise ConfigError(f"document {index + 1}: {err}") from err
    return requests


def _read(filename: str) -> str:
    if filename == "-":
        return sys.stdin.read()
    try:
        return Path(filename).read_text()
    except OSError as err:
        raise ConfigError(f"cannot read {filename}: {err.strerror or err}") from err


# -- the capacity cache ------------------------------------------------------------------


async def _capacity(client: Client | None, ttl: float) -> CapacityCache:
    if client is None:
        return CapacityCache(ttl)
    try:
        listed = await client.list_all(GPUNODEREQUESTS)
    except (ApiError, TransportError) as err:
        raise ConfigError(f"cannot list GPUNodeRequests (for the capacity cache): {err}") from err
    return capacity_from(listed.items, ttl, datetime.datetime.now(datetime.UTC))


# -- output ----------------------------------------------------------------------------


def want_json(want: Want) -> JSON:
    return {
        "gpuType": want.gpu_type,
        "gpuCount": want.gpu_count,
        "capacityType": want.capacity.value,
        "maxPricePerHour": output.price(want.max_price),
        "providers": list(want.providers),
        "regions": list(want.regions),
        "placement": want.placement.value,
    }


def plan_json(plan: Plan) -> JSON:
    chosen = plan.selection.chosen
    return {
        "request": plan.request.name,
        "want": want_json(plan.want),
        "chosen": offer_json(chosen) if chosen is not None else None,
        "message": plan.selection.message,
        "ranked": [offer_json(o) for o in plan.selection.ranked],
        "rejected": [{**offer_json(r.offer), "reason": r.reason} for r in plan.selection.rejected],
        "unavailable": [{"provider": p, "message": m} for p, m in plan.unavailable],
        "blocked": [
            {
                "provider": e.provider,
                "nativeRegion": e.native_region,
                "gpuType": e.gpu_type,
                "capacityType": e.capacity_type,
                "reason": e.reason,
                "expiresInSeconds": round(e.expires_in),
            }
            for e in plan.blocked
        ],
    }


def render(plan: Plan) -> str:
    selection = plan.selection
    verdict = "CHOSEN" if selection.chosen is not None else "NO OFFER"
    text = f"{plan.request.name}: {plan.want.describe()}\n{verdict}: {selection.message}\n"
    rows: list[list[object]] = []
    for rank, offer in enumerate(selection.ranked, 1):
        rows.append([rank, *offer_row(offer), "chosen" if rank == 1 else "fits"])
    for rejection in selection.rejected:
        rows.append(["-", *offer_row(rejection.offer), rejection.reason])
    if rows:
        text += "\n" + output.table(("rank", *OFFER_COLUMNS, "verdict"), rows)
    for provider, why in plan.unavailable:
        text += f"unavailable: {provider}: {why}\n"
    for entry in plan.blocked:
        text += (
            f"blocked: {entry.provider} {entry.native_region} {entry.gpu_type} "
            f"{entry.capacity_type} ({entry.reason}, {entry.expires_in:.0f}s left)\n"
        )
    return text


def _print(plans: Sequence[Plan], pods: PodsPlan | None, fmt: str) -> None:
    if fmt == "json":
        found: JSON = {"plans": [plan_json(p) for p in plans]}
        if pods is not None:
            found["pods"] = plan_pods.plan_json(pods[0])
        output.write_json(found)
        return
    texts = [render(p) for p in plans]
    if pods is not None:
        texts.append(plan_pods.render(*pods))
    output.write("\n".join(texts))


PodsPlan = tuple[PoolPlan, list[JSON]]


async def _main(args: argparse.Namespace) -> int:
    documents = read_documents(_read(args.filename))
    requests = gpunoderequests(documents)
    pods = plan_pods.read_pods(documents)
    if not requests and not pods:
        raise ConfigError(f"no {GNR_KIND}, nor a Pod or workload asking for GPUs, in the input")
    pools = plan_pods.read_pools(documents)
    async with open_source(args) as source:
        capacity = await _capacity(source.client, args.capacity_ttl)
        plans = [await plan_one(r, source.drivers, capacity) for r in requests]
        pods_plan = None
        if pods:
            pods_plan = (await plan_pods.plan_pods(source, pods, pools, capacity.blocked), pods)
    _print(plans, pods_plan, args.output)
    served = pods_plan is None or not pods_plan[0].unserved
    return 0 if served and all(p.selection.chosen is not None for p in plans) else 1


def _run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_main(args))
    except ConfigError as err:
        output.error(str(err))
        return 2
