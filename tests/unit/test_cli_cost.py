"""`gpuctl cost` and the ledger's entries: --since, the final figure, grouping, totals."""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any

import pytest

from gpuctl.api import GPUNodeRequest
from gpuctl.cli import cost
from gpuctl.cli.config import ConfigError
from gpuctl.controllers import ledger
from gpuctl.controllers.ledger import Entry, entry_of

NOW = datetime.datetime(2025, 6, 1, 12, 0, tzinfo=datetime.UTC)
HOUR = datetime.timedelta(hours=1)


def stamp(t: datetime.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def request_obj(
    name: str,
    *,
    attempt: int = 1,
    accrued: str = "10.0000",
    updated: datetime.datetime = NOW - HOUR,
    instance: bool = True,
    offer: bool = True,
    gpu: str = "H100-80GB",
    provider: str = "lambda",
    price: str = "23.92",
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "attempt": attempt,
        "interruptions": 1,
        "cost": {
            "accruedUSD": accrued,
            "since": stamp(NOW - 3 * HOUR),
            "updatedAt": stamp(updated),
        },
    }
    if offer:
        status["offer"] = {
            "provider": provider,
            "cloud": "lambda",
            "region": "us-east",
            "nativeRegion": "us-east-1",
            "instanceType": "gpu_8x_h100_sxm5",
            "gpuType": gpu,
            "gpuCount": 8,
            "capacityType": "on-demand",
            "pricePerHour": price,
        }
    else:
        status["failedOffers"] = [
            {
                "provider": "runpod",
                "region": "US-GA-1",
                "instanceType": "NVIDIA H100 80GB HBM3",
                "capacityType": "spot",
                "reason": "Interrupted",
                "at": stamp(NOW - HOUR),
            }
        ]
    if instance:
        status["instance"] = {"id": "i-1", "name": "m"}
    return {
        "apiVersion": "gpuctl.io/v1alpha1",
        "kind": "GPUNodeRequest",
        "metadata": {"name": name, "uid": f"uid-{name}"},
        "spec": {"gpu": {"type": gpu, "count": 8}},
        "status": status,
    }


def entry(name: str, usd: str, until: datetime.datetime, **kw: Any) -> Entry:
    fields: dict[str, Any] = {
        "request": name,
        "uid": f"uid-{name}",
        "provider": "runpod",
        "cloud": "runpod",
        "region": "us-east",
        "instance_type": "NVIDIA H100 80GB HBM3",
        "gpu_type": "H100-80GB",
        "gpu_count": 8,
        "capacity_type": "spot",
        "price_per_hour": Decimal("9.552"),
        "accrued_usd": Decimal(usd),
        "since": until - HOUR,
        "until": until,
        "attempts": 1,
        "interruptions": 0,
    }
    fields.update(kw)
    return Entry(**fields)


@pytest.mark.parametrize(
    ("text", "cutoff"),
    [
        ("7d", NOW - datetime.timedelta(days=7)),
        ("2w", NOW - datetime.timedelta(days=14)),
        ("1.5d", NOW - datetime.timedelta(hours=36)),
        ("12h", NOW - 12 * HOUR),
        ("90m", NOW - datetime.timedelta(minutes=90)),
        ("2025-05-30T00:00:00Z", datetime.datetime(2025, 5, 30, tzinfo=datetime.UTC)),
        ("2025-05-30T00:00:00", datetime.datetime(2025, 5, 30, tzinfo=datetime.UTC)),
    ],
)
def test_since(text: str, cutoff: datetime.datetime) -> None:
    assert cost.parse_since(text, NOW) == cutoff


def test_since_rejects_nonsense() -> None:
    with pytest.raises(ConfigError, match="not a duration"):
        cost.parse_since("last week", NOW)


def test_entry_json_round_trip_and_malformed_lines() -> None:
    one = entry("a", "1.2345", NOW)
    assert one.to_json() == {
        "request": "a",
        "uid": "uid-a",
        "provider": "runpod",
        "cloud": "runpod",
        "region": "us-east",
        "instanceType": "NVIDIA H100 80GB HBM3",
        "gpuType": "H100-80GB",
        "gpuCount": 8,
        "capacityType": "spot",
        "pricePerHour": "9.552",
        "accruedUSD": "1.2345",
        "since": "2025-06-01T11:00:00Z",
        "until": "2025-06-01T12:00:00Z",
        "attempts": 1,
        "interruptions": 0,
    }
    text = ledger.render_lines([one]) + "not json\n{}\n\n" + ledger.render_lines([one])
    assert ledger.parse_lines(text) == [one, one]
    assert (
        Entry.from_json(entry("b", "0", NOW, price_per_hour=None).to_json()).price_per_hour is None
    )


def test_final_cost_bills_to_now_while_an_instance_is_recorded() -> None:
    running = GPUNodeRequest.from_dict(request_obj("a"))
    found = entry_of(running, running.status, NOW)
    assert found is not None
    assert found.accrued_usd == Decimal("33.9200")  # 10 + 23.92 * 1h
    assert (found.provider, found.cloud, found.price_per_hour) == (
        "lambda",
        "lambda",
        Decimal("23.92"),
    )
    assert (found.since, found.until, found.attempts, found.interruptions) == (
        NOW - 3 * HOUR,
        NOW,
        1,
        1,
    )
    idle = GPUNodeRequest.from_dict(request_obj("b", instance=False))
    assert ledger.final_cost(idle.status, NOW) == Decimal("10.0000")


def test_entry_without_a_current_offer_names_the_last_failed_one() -> None:
    request = GPUNodeRequest.from_dict(request_obj("a", offer=False, instance=False))
    found = entry_of(request, request.status, NOW)
    assert found is not None
    assert (found.provider, found.capacity_type, found.region, found.price_per_hour) == (
        "runpod",
        "spot",
        "",
        None,
    )
    never = GPUNodeRequest.from_dict(request_obj("b", attempt=0, offer=False, instance=False))
    assert entry_of(never, never.status, NOW) is None


def test_report_counts_each_request_once_and_sums_exactly() -> None:
    entries = [
        entry("old", "100.0001", NOW - 10 * 24 * HOUR),
        entry("done", "9.5520", NOW - 2 * HOUR),
        entry("closing", "5.0000", NOW - 60 * datetime.timedelta(seconds=1), provider="lambda"),
    ]
    requests = [
        request_obj("live", gpu="A100-80GB", price="1.49"),
        request_obj("closing"),  # recorded already: the ledger's figure counts
        request_obj("never", attempt=0, offer=False, instance=False),
    ]
    report = cost.build_report(requests, entries, NOW)
    names = [(s.entry.request, s.running) for s in report.spends]
    assert names == [("old", False), ("live", True), ("done", False), ("closing", False)]
    assert report.total == Decimal("100.0001") + Decimal("11.4900") + Decimal("9.5520") + 5
    data = cost.report_json(report)
    assert data["total"] == {"requests": 4, "running": 1, "finished": 3, "accruedUSD": "126.0421"}
    assert data["byProvider"] == [
        {"provider": "runpod", "requests": 2, "accruedUSD": "109.5521"},
        {"provider": "lambda", "requests": 2, "accruedUSD": "16.4900"},
    ]
    assert data["byGpuType"] == [
        {"gpuType": "H100-80GB", "requests": 3, "accruedUSD": "114.5521"},
        {"gpuType": "A100-80GB", "requests": 1, "accruedUSD": "11.4900"},
    ]
    live = data["requests"][1]
    assert (live["state"], live["until"], live["accruedUSD"]) == ("running", None, "11.4900")
    assert data["requests"][0]["state"] == "finished"

    recent = cost.build_report(requests, entries, NOW, NOW - 7 * 24 * HOUR)
    assert [s.entry.request for s in recent.spends] == ["live", "done", "closing"]
    assert cost.report_json(recent)["since"] == "2025-05-25T12:00:00Z"
    text = cost.render(recent)
    assert "TOTAL  26.0420 USD over 3 requests (finished since 2025-05-25T12:00:00Z)" in text
    assert text.splitlines()[0].split() == [
        "REQUEST",
        "STATE",
        "PROVIDER",
        "GPU",
        "COUNT",
        "CAPACITY",
        "$/HOUR",
        "SINCE",
        "UNTIL",
        "USD",
    ]
    assert cost.render(cost.build_report([], [], NOW)) == "No spend recorded.\n"
