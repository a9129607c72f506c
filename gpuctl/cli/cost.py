"""`gpuctl cost [--since 7d]`: what the GPU machines cost, per request, provider and GPU type.

Two sources, each request counted once:
- finished requests: the cost ledger (`gpuctl.controllers.ledger`) in the operator's
  namespace, one entry per request whose machine was terminated;
- requests still in the cluster (whose uid is not in the ledger yet) and ever given
  an offer: `status.cost.accruedUSD` plus, while an instance is recorded, the
  offer's price times the time since `status.cost.updatedAt` — the operator's own
  arithmetic (`ledger.final_cost`), so the figure is current to now.

`--since D` (`7d`, `12h`, `90m`, a Go duration, or an RFC 3339 time) keeps the
finished requests whose machine ended at or after now - D; requests still running
always count. Amounts are whole per request (not prorated to the window). The
whole cost of a request is attributed to its last offer's provider and to its GPU
type, as the ledger records it. Sums are exact (decimal, 4 places).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import re
from typing import Any

from gpuctl.api import parse_duration
from gpuctl.cli import output
from gpuctl.cli.config import (
    ConfigError,
    add_kubeconfig_flag,
    add_namespace_flag,
    kube,
)
from gpuctl.controllers.ledger import Ledger
from gpuctl.controllers.resources import GPUNODEREQUESTS
from gpuctl.controllers.spend import Group, Report, Spend, build_report
from gpuctl.runtime.client import ApiError, TransportError

JSON = dict[str, Any]
_DAYS = re.compile(r"^(\d+(?:\.\d+)?)([dw])$")


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "cost",
        help="show what GPU machines cost, per request, provider and GPU type",
        description="Spend of finished requests (from the operator's cost ledger) and of "
        "running ones (from their status), per request, per provider and per GPU type, "
        "with totals.",
    )
    parser.add_argument(
        "--since",
        metavar="WHEN",
        help="only finished requests that ended since then: 7d, 12h, 90m or an RFC 3339 time",
    )
    add_kubeconfig_flag(parser)
    add_namespace_flag(parser)
    output.add_output_flag(parser)
    parser.set_defaults(handler=_run)


def parse_since(text: str, now: datetime.datetime) -> datetime.datetime:
    """The cutoff time of `--since`; ConfigError if it is not a duration or a time."""
    days = _DAYS.match(text.strip())
    if days:
        unit = 7 if days.group(2) == "w" else 1
        return now - datetime.timedelta(days=float(days.group(1)) * unit)
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        when = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--since {text!r}: not a duration (7d, 12h) nor a time") from None
    return when if when.tzinfo else when.replace(tzinfo=datetime.UTC)


# -- output ----------------------------------------------------------------------------


def spend_json(spend: Spend) -> JSON:
    data = spend.entry.to_json()
    data["state"] = "running" if spend.running else "finished"
    data["until"] = output.timestamp(spend.until)
    return data


def report_json(report: Report) -> JSON:
    running = [s for s in report.spends if s.running]
    return {
        "now": output.timestamp(report.now),
        "since": output.timestamp(report.cutoff),
        "requests": [spend_json(s) for s in report.spends],
        "byProvider": [_group_json("provider", g) for g in report.by("provider")],
        "byGpuType": [_group_json("gpuType", g) for g in report.by("gpu_type")],
        "total": {
            "requests": len(report.spends),
            "running": len(running),
            "finished": len(report.spends) - len(running),
            "accruedUSD": output.usd(report.total),
        },
    }


def _group_json(name: str, group: Group) -> JSON:
    return {
        name: group.key,
        "requests": group.requests,
        "accruedUSD": output.usd(group.accrued_usd),
    }


def render(report: Report) -> str:
    if not report.spends:
        return "No spend recorded.\n"
    rows = [
        [
            s.entry.request,
            "running" if s.running else "finished",
            s.entry.provider or None,
            s.entry.gpu_type,
            s.entry.gpu_count,
            s.entry.capacity_type or None,
            s.entry.price_per_hour,
            output.timestamp(s.entry.since),
            output.timestamp(s.until),
            output.usd(s.entry.accrued_usd),
        ]
        for s in report.spends
    ]
    columns = ("request", "state", "provider", "gpu", "count", "capacity", "$/hour")
    text = output.table((*columns, "since", "until", "usd"), rows)
    for title, key in (("provider", "provider"), ("gpu", "gpu_type")):
        groups = [[g.key or None, g.requests, output.usd(g.accrued_usd)] for g in report.by(key)]
        text += "\n" + output.table((title, "requests", "usd"), groups)
    text += f"\nTOTAL  {output.usd(report.total)} USD over {len(report.spends)} requests"
    if report.cutoff is not None:
        text += f" (finished since {output.timestamp(report.cutoff)})"
    return text + "\n"


async def _main(args: argparse.Namespace) -> int:
    now = datetime.datetime.now(datetime.UTC)
    cutoff = parse_since(args.since, now) if args.since else None
    async with kube(args.kubeconfig) as client:
        try:
            entries = await Ledger(client, args.namespace).read()
            requests = (await client.list_all(GPUNODEREQUESTS)).items
        except (ApiError, TransportError) as err:
            raise ConfigError(f"cannot read the cost data: {err}") from err
    report = build_report(requests, entries, now, cutoff)
    if args.output == "json":
        output.write_json(report_json(report))
    else:
        output.write(render(report))
    return 0


def _run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_main(args))
    except ConfigError as err:
        output.error(str(err))
        return 2
