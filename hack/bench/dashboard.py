"""Dashboard benchmark: the cost of one snapshot, and of many viewers, at fleet sizes.

    PYTHONPATH=hack .venv/bin/python -m bench.dashboard [--requests 100,1000,5000] [--viewers 50]

In this process, no cluster: for each size, that many GPUNodeRequests as the operator
keeps them (an offer, an instance, a cost, three conditions, one failed offer, a Node
each, five Events each) and a ledger of as many finished requests go into the
dashboard's sources. Printed per size: the wall and CPU time one snapshot takes
(`snapshot.build` and its JSON encoding, median of 5) and the snapshot's JSON size.
Then, at the smallest size, `--viewers` event streams read from one server over
loopback while `--publishes` snapshots are published: the snapshots computed (one per
publish, whatever the number of viewers) and the time from publish until every viewer
had the new one (median).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import statistics
import time
from decimal import Decimal
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from gpuctl.controllers.ledger import Entry
from gpuctl.dashboard.fleet import PhaseHistory
from gpuctl.dashboard.server import Dashboard
from gpuctl.dashboard.snapshot import build
from gpuctl.dashboard.sources import Changes, LedgerCache, Sources
from gpuctl.runtime.store import Store

NOW = datetime.datetime(2026, 1, 1, 12, tzinfo=datetime.UTC)
JSON = dict[str, Any]


def stamp(seconds_ago: float) -> str:
    return (NOW - datetime.timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def request(n: int) -> JSON:
    return {
        "metadata": {"name": f"r-{n}", "uid": f"u-{n}", "creationTimestamp": stamp(7200),
                     "labels": {"team": "research"}},
        "spec": {"gpu": {"type": "H100-80GB", "count": 8}, "capacityType": "spot-or-on-demand"},
        "status": {
            "phase": "Ready", "attempt": 2, "interruptions": 1, "nodeName": f"node-{n}",
            "offer": {"provider": "runpod", "cloud": "runpod", "region": "us-east",
                      "nativeRegion": "US-GA-1", "instanceType": "NVIDIA H100 80GB HBM3",
                      "gpuType": "H100-80GB", "gpuCount": 8, "capacityType": "spot",
                      "pricePerHour": "9.552"},
            "instance": {"id": f"i-{n}", "name": f"m-{n}"},
            "cost": {"accruedUSD": "12.3456", "since": stamp(7000), "updatedAt": stamp(60)},
            "conditions": [
                {"type": t, "status": "True", "reason": t, "message": "ok",
                 "lastTransitionTime": stamp(6000)} for t in ("OfferAvailable", "Launched", "Ready")
            ],
            "failedOffers": [{"provider": "runpod", "region": "US-CA-2", "instanceType": "x",
                              "capacityType": "spot", "reason": "Interrupted",
                              "message": "gone", "at": stamp(6500)}],
        },
    }  # fmt: skip


def event(n: int, k: int) -> JSON:
    return {
        "metadata": {"name": f"e-{n}-{k}", "namespace": "default"},
        "involvedObject": {"kind": "GPUNodeRequest", "name": f"r-{n}", "uid": f"u-{n}"},
        "type": "Normal", "reason": "PhaseChanged", "message": "Joining -> Ready",
        "lastTimestamp": stamp(6000 - k), "count": 1,
    }  # fmt: skip


def entry(n: int) -> Entry:
    return Entry(
        f"old-{n}", f"o-{n}", "lambda", "lambda", "us-east", "gpu_8x_h100_sxm5", "H100-80GB",
        8, "on-demand", Decimal("23.92"), Decimal("47.84"),
        NOW - datetime.timedelta(hours=30), NOW - datetime.timedelta(hours=28), 1, 0,
    )  # fmt: skip


class Ledger(LedgerCache):
    def __init__(self, entries: list[Entry]) -> None:
        super().__init__(None, "gpuctl-system", Changes())  # type: ignore[arg-type]
        self.entries = entries


def sources(size: int) -> Sources:
    requests, nodes, events = Store(), Store(), Store()
    for n in range(size):
        requests.add(request(n))
        nodes.add({"metadata": {"name": f"node-{n}"},
                   "status": {"conditions": [{"type": "Ready", "status": "True"}]}})  # fmt: skip
        for k in range(5):
            events.add(event(n, k))
    return Sources(
        requests=requests, providers=Store(), nodes=nodes, events=[events],
        ledger=Ledger([entry(n) for n in range(size)]), drivers=None,  # type: ignore[arg-type]
        metrics=lambda: [], phases=PhaseHistory(), changes=Changes(), mode="bench",
    )  # fmt: skip


def measure_build(size: int) -> tuple[float, float, int]:
    """Median wall and CPU seconds of one snapshot (built and encoded), and its size."""
    found = sources(size)
    walls, cpus, body = [], [], b""
    for _ in range(5):
        wall, cpu = time.perf_counter(), time.process_time()
        body = json.dumps(build(found, NOW), separators=(",", ":")).encode()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus), len(body)


async def measure_viewers(size: int, viewers: int, publishes: int) -> tuple[int, float]:
    board = Dashboard(sources(size), clock=lambda: NOW)
    server = TestServer(board.app())
    await server.start_server()
    delays: list[float] = []
    try:
        async with aiohttp.ClientSession() as session:
            streams = [await session.get(server.make_url("/api/stream")) for _ in range(viewers)]
            for stream in streams:  # the first snapshot each
                await stream.content.readuntil(b"\n\n")
            built = board.version
            for _ in range(publishes):
                started = time.perf_counter()
                board.publish()
                for stream in streams:
                    await stream.content.readuntil(b"\n\n")
                delays.append(time.perf_counter() - started)
            for stream in streams:
                stream.close()
    finally:
        await server.close()
    return board.version - built, statistics.median(delays)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", default="100,1000,5000")
    parser.add_argument("--viewers", type=int, default=50)
    parser.add_argument("--publishes", type=int, default=10)
    args = parser.parse_args()
    sizes = [int(s) for s in args.requests.split(",")]
    print(f"load average {os.getloadavg()[0]:.1f}")
    print("requests  build_wall_ms  build_cpu_ms  snapshot_kB")
    for size in sizes:
        wall, cpu, length = measure_build(size)
        print(f"{size:8d}  {wall * 1000:13.1f}  {cpu * 1000:12.1f}  {length / 1024:11.1f}")
    built, delay = asyncio.run(measure_viewers(min(sizes), args.viewers, args.publishes))
    print(
        f"{args.viewers} viewers, {args.publishes} publishes at {min(sizes)} requests: "
        f"{built} snapshots built, every viewer had each after {delay * 1000:.1f} ms (median)"
    )


if __name__ == "__main__":
    main()
