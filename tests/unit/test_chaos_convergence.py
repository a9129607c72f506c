"""`chaos.convergence`: which requests a convergence goal judges, and how (docs/reliability.md)."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hack"))  # the chaos suite is a tool under hack/, not in gpuctl

from chaos import schedule  # noqa: E402
from chaos.convergence import judged, kind  # noqa: E402


def request(name: str, created: float, ready: float | None, deleted: float) -> dict[str, Any]:
    seen = [{"at": created, "phase": "Pending"}]
    if ready is not None:
        seen.append({"at": ready, "phase": "Ready"})
    return {"name": name, "created": created, "deleted": deleted, "observed": seen}


def test_early_deletions_are_left_out_and_never_ready_counts_past_the_goal() -> None:
    plans = schedule.build(schedule.Options(seed=5)).requests
    early = next(p.name for p in plans if p.early)
    kept = [p.name for p in plans if not p.early][:3]
    requests = [
        request(early, 0.0, None, 500.0),
        request(kept[0], 10.0, 40.0, 360.0),  # Ready in 30 s
        request(kept[1], 10.0, None, 100.0),  # never Ready, 90 s of life: past 67 s
        request(kept[2], 300.0, None, 360.0),  # never Ready in 60 s: left out
    ]
    assert judged(requests, 5, 67.0) == {kept[0]: 30.0, kept[1]: math.inf}


def test_calls_are_told_apart_by_kind() -> None:
    def call(method: str, path: str) -> dict[str, str]:
        return {"method": method, "path": path}

    assert kind(call("POST", "/v1/pods")) == "create"
    assert kind(call("GET", "/v1/pods?includeMachine=true")) == "list"
    assert kind(call("GET", "/v1/pods/abc")) == "get"
    assert kind(call("DELETE", "/v1/pods/abc")) == "delete"
    assert kind(call("GET", "/v2/catalog/gpus")) == "catalog"
