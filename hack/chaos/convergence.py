"""Convergence of a kept chaos run (issue 12 item 4), from its work directory:

    PYTHONPATH=hack .venv/bin/python -m chaos.convergence WORKDIR --seed 5 --goal 67

Requests judged: those the schedule does not delete while provisioning. create -> Ready
is from the harness's own watch (`requests.json`); a request never Ready counts as never
(infinite) when it lived longer than the goal, and is left out when it did not.
Percentiles are nearest-rank, as the run's report. Then, for every request over the
goal, its timeline (states seen, the cloud calls that named its machines), and the calls
of each rate-limited cloud per wall-clock minute by kind (`calls.json`), which is where a
spent minute shows.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chaos import schedule
from chaos.measure import percentile

JSON = dict[str, Any]
KINDS = (
    (re.compile(r"^POST .*/pods$"), "create"),
    (re.compile(r"^GET .*/pods$"), "list"),
    (re.compile(r"^GET .*/pods/[^/]+$"), "get"),
    (re.compile(r"^DELETE "), "delete"),
    (re.compile(r"catalog"), "catalog"),
)


def latency(request: JSON) -> float | None:
    """create -> first seen Ready; None when never Ready."""
    ready = next((o["at"] for o in request["observed"] if o["phase"] == "Ready"), None)
    return None if ready is None else float(ready) - float(request["created"])


def judged(requests: Sequence[JSON], seed: int, goal: float) -> dict[str, float]:
    """name -> create -> Ready seconds (math.inf: never, having lived past the goal)."""
    early = {p.name for p in schedule.build(schedule.Options(seed=seed)).requests if p.early}
    found: dict[str, float] = {}
    for request in requests:
        if request["name"] in early or request["created"] is None:
            continue
        seconds = latency(request)
        if seconds is not None:
            found[request["name"]] = seconds
            continue
        lived = float(request["deleted"] or math.inf) - float(request["created"])
        if lived > goal:
            found[request["name"]] = math.inf
    return found


def kind(call: JSON) -> str:
    line = f"{call['method']} {call['path'].split('?')[0]}"
    return next((name for pattern, name in KINDS if pattern.search(line)), "other")


def per_minute(calls: Sequence[JSON], cloud: str) -> list[str]:
    """One line per wall-clock minute: how many calls of each kind `cloud` got."""
    minutes: dict[int, Counter[str]] = {}
    for call in calls:
        if call["cloud"] == cloud and call["time"]:
            minutes.setdefault(int(call["time"] // 60), Counter())[kind(call)] += 1
    first = min(minutes, default=0)
    return [
        f"  minute {m - first:2d}: {sum(c.values()):3d}  "
        + ", ".join(f"{k} {n}" for k, n in c.most_common())
        for m, c in sorted(minutes.items())
    ]


def timeline(request: JSON, t0: float) -> list[str]:
    lines = [f"{request['name']}: created {request['created'] - t0:.1f} s"]
    for o in request["observed"]:
        lines.append(f"  {o['at'] - t0:7.1f} seen {o['phase']} attempt {o['attempt']}")
    for c in request["calls"]:
        fault = f" ({c['fault']})" if c["fault"] else ""
        lines.append(f"  {c['time'] - t0:7.1f} {c['method']} {c['path']} {c['status']}{fault}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos.convergence")
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--goal", type=float, default=67.0)
    args = parser.parse_args(argv)
    requests = json.loads((args.workdir / "requests.json").read_text())
    t0 = min(float(r["created"]) for r in requests if r["created"] is not None)
    found = judged(requests, args.seed, args.goal)
    values = sorted(found.values())
    figures = " / ".join(f"{percentile(values, q) or 0:.1f}" for q in (50, 90, 99, 100))
    over = sorted((s, n) for n, s in found.items() if s > args.goal)
    print(f"judged {len(values)}; create -> Ready p50 / p90 / p99 / max {figures} s")
    print(f"never Ready (lived > {args.goal:g} s): {sum(math.isinf(s) for s in values)}")
    print(f"over {args.goal:g} s: {len(over)}")
    by_name = {r["name"]: r for r in requests}
    for _, name in over:
        print("\n".join(timeline(by_name[name], t0)))
    calls_file = args.workdir / "calls.json"
    if calls_file.exists():
        calls = json.loads(calls_file.read_text())
        print(f"runpod calls per wall-clock minute (run start {t0 % 60:.1f} s into one):")
        print("\n".join(per_minute(calls, "runpod")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
