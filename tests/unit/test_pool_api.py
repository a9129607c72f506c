"""GPUNodePool types: the sample round-trips with the server's defaults, durations and Never."""

from __future__ import annotations

import copy
import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from gpuctl.api import (
    NEVER,
    ConsolidationPolicy,
    Disruption,
    GPUNodePool,
    RequirementKey,
    RequirementOperator,
    ScaleAction,
    ScaleDecision,
)
from gpuctl.api.crdgen import crds

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "manifests" / "samples" / "pool-gpu.yaml"
(SCHEMA,) = [
    c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for c in crds()
    if c["spec"]["names"]["kind"] == "GPUNodePool"
]


def with_defaults(schema: dict[str, Any], value: Any) -> Any:
    if isinstance(value, dict) and "properties" in schema:
        out = dict(value)
        for name, prop in schema["properties"].items():
            if name not in out and "default" in prop:
                out[name] = copy.deepcopy(prop["default"])
            if name in out:
                out[name] = with_defaults(prop, out[name])
        return out
    if isinstance(value, list) and "items" in schema:
        return [with_defaults(schema["items"], v) for v in value]
    return value


def test_sample_round_trips_with_defaults() -> None:
    sample = yaml.safe_load(SAMPLE.read_text())
    pool = GPUNodePool.from_dict(sample)
    written = pool.to_dict()
    written.pop("status", None)
    assert written == with_defaults(SCHEMA, sample)
    assert pool.spec.template.requirements[0].key is RequirementKey.GPU_TYPE
    assert pool.spec.template.requirements[2].operator is RequirementOperator.LT
    assert pool.spec.limits is not None and pool.spec.limits.price_per_hour == Decimal("150")
    assert pool.spec.disruption.budgets[1].reasons == ["Underutilized"]


def test_a_minimal_pool_gets_karpenters_disruption_defaults() -> None:
    pool = GPUNodePool.from_dict({"metadata": {"name": "p"}, "spec": {"template": {}}})
    d = pool.spec.disruption
    assert d.consolidation_policy is ConsolidationPolicy.WHEN_EMPTY_OR_UNDERUTILIZED
    assert d.consolidate_after_delta() == datetime.timedelta(0)
    assert d.expire_after_delta() == datetime.timedelta(hours=720)
    assert d.budgets == []  # means one budget of 10%
    # Defaults equal to the server's are left out, so what the user omitted stays omitted.
    assert "disruption" not in pool.to_dict()["spec"]
    never = Disruption(consolidate_after=NEVER, expire_after=NEVER)
    assert never.consolidate_after_delta() is None and never.expire_after_delta() is None


def test_status_carries_the_last_decision() -> None:
    pool = GPUNodePool.from_dict({"metadata": {"name": "p"}, "spec": {"template": {}}})
    at = datetime.datetime(2026, 11, 29, 20, 0, tzinfo=datetime.UTC)
    pool.status.machines, pool.status.gpus, pool.status.gpus_in_use = 1, 8, 6
    pool.status.price_per_hour = Decimal("23.92")
    pool.status.last_scale_decision = ScaleDecision(
        at=at, action=ScaleAction.SCALE_UP, machines=1, pods=3, price_per_hour=Decimal("23.92")
    )
    status = pool.status_to_dict()
    assert status["gpusInUse"] == 6 and status["pricePerHour"] == "23.92"
    assert status["lastScaleDecision"]["action"] == "ScaleUp"
    assert status["lastScaleDecision"]["at"] == "2026-11-29T20:00:00Z"
