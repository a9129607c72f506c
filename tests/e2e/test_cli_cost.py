"""The cost ledger on the real API server, and `gpuctl cost` after requests ran and went.

Ledger mechanics (append, idempotency by uid, concurrent writers, the bounded ring
of archived segments) run in a fresh namespace. The end-to-end test lets the
operator run requests on the simulated clouds, deletes some, and reads the spend
back with `gpuctl cost`: entries for the deleted ones, the running one current to
now, sums exact, `--since` keeping only what ended after the cutoff.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from decimal import Decimal
from typing import Any

from kubernetes_asyncio import client as k8s

from gpuctl.controllers.ledger import LEDGER_NAME, Entry, Ledger, slot_name
from gpuctl.controllers.resources import GPUNODEREQUESTS
from gpuctl.dev.controlplane import ControlPlane
from gpuctl.runtime.client import Client
from gpuctl.runtime.resources import CONFIGMAPS
from tests.e2e.conftest import NAMESPACE, Env, MakeRequest, delete_and_wait, wait_phase
from tests.e2e.test_cli_offers import cli

T0 = datetime.datetime(2025, 6, 1, tzinfo=datetime.UTC)


def entry(n: int) -> Entry:
    return Entry(
        request=f"r{n}",
        uid=f"uid-{n}",
        provider="lambda",
        cloud="lambda",
        region="us-east",
        instance_type="gpu_8x_h100_sxm5",
        gpu_type="H100-80GB",
        gpu_count=8,
        capacity_type="on-demand",
        price_per_hour=Decimal("23.92"),
        accrued_usd=Decimal(n),
        since=T0,
        until=T0 + datetime.timedelta(minutes=n),
        attempts=1,
        interruptions=0,
    )


async def test_ledger_appends_once_per_uid_even_when_written_concurrently(
    kube: k8s.ApiClient, namespace: str
) -> None:
    ledger = Ledger(Client(kube), namespace)
    assert await ledger.read() == []
    assert await ledger.append(entry(1)) is True
    assert await ledger.append(entry(1)) is False  # a retried termination
    results = await asyncio.gather(*(ledger.append(entry(n)) for n in range(2, 14)))
    assert all(results)
    # Group commit: the twelve concurrent appends went in one head write.
    assert ledger.head_writes == 2
    found = await ledger.read()
    assert sorted(e.uid for e in found) == sorted(f"uid-{n}" for n in range(1, 14))
    assert found[0] == entry(1)


async def test_ledger_is_a_bounded_ring_of_segments(kube: k8s.ApiClient, namespace: str) -> None:
    api = Client(kube)
    ledger = Ledger(api, namespace, segment_entries=3, slots=2)
    for n in range(1, 11):
        assert await ledger.append(entry(n))
    # head [10]; slot 1 holds segment 3 [7, 8, 9] (segment 1 overwritten); slot 2 segment 2
    assert [e.uid for e in await ledger.read()] == [f"uid-{n}" for n in range(4, 11)]
    head = await api.get(CONFIGMAPS, LEDGER_NAME, namespace=namespace)
    assert head["metadata"]["annotations"]["gpuctl.io/ledger-next-segment"] == "4"
    ring = await api.get(CONFIGMAPS, slot_name(3, 2), namespace=namespace)
    assert ring["metadata"]["annotations"]["gpuctl.io/ledger-segment"] == "3"
    # A retry after a roll still finds its entry in the newest archived segment.
    assert await ledger.append(entry(9)) is False


async def test_ledger_segments_are_bounded_in_bytes(kube: k8s.ApiClient, namespace: str) -> None:
    api = Client(kube)
    ledger = Ledger(api, namespace, segment_bytes=500)  # an entry is ~370 bytes
    for n in range(1, 4):
        assert await ledger.append(entry(n))
    head = await api.get(CONFIGMAPS, LEDGER_NAME, namespace=namespace)
    assert head["data"]["entries.jsonl"].count("\n") == 1
    assert [e.uid for e in await ledger.read()] == ["uid-1", "uid-2", "uid-3"]


async def _status(api: Client, name: str) -> dict[str, Any]:
    status: dict[str, Any] = (await api.get(GPUNODEREQUESTS, name))["status"]
    return status


def _mine(data: dict[str, Any], uids: set[str]) -> dict[str, dict[str, Any]]:
    return {r["uid"]: r for r in data["requests"] if r["uid"] in uids}


async def test_cost_after_requests_ran_and_were_deleted(
    api: Client, env: Env, make_request: MakeRequest, control_plane: ControlPlane
) -> None:
    lam, runpod = env.providers["lambda"], env.providers["runpod"]
    h100x8 = {"gpu": {"type": "H100-80GB", "count": 8}}
    names = {
        "a": await make_request("cost-a", {**h100x8, "providers": [lam]}),
        "b": await make_request(
            "cost-b", {**h100x8, "providers": [runpod], "capacityType": "spot"}
        ),
        "c": await make_request(
            "cost-c", {"gpu": {"type": "H100-80GB", "count": 1}, "providers": [lam]}
        ),
    }
    objs = {k: await wait_phase(api, n, "Ready") for k, n in names.items()}
    uids = {k: o["metadata"]["uid"] for k, o in objs.items()}
    # Costs accrue at whole seconds: let every machine run for more than one.
    await asyncio.sleep(2.1)
    before = {k: await _status(api, n) for k, n in names.items()}

    await delete_and_wait(api, names["a"])
    # Ledger times are whole seconds, and a machine seen gone is billed until that
    # answer rounded up to the next second: a ends before the second after next, b at
    # or after it.
    cutoff = datetime.datetime.now(datetime.UTC).replace(microsecond=0) + datetime.timedelta(
        seconds=2
    )
    await asyncio.sleep((cutoff - datetime.datetime.now(datetime.UTC)).total_seconds())
    await delete_and_wait(api, names["b"])

    kubeconfig = str(control_plane.kubeconfig)
    code, out = await cli("cost", "--kubeconfig", kubeconfig, "-o", "json")
    assert code == 0
    data = json.loads(out)
    now = datetime.datetime.fromisoformat(data["now"].replace("Z", "+00:00"))
    rows = _mine(data, set(uids.values()))
    a, b, c = rows[uids["a"]], rows[uids["b"]], rows[uids["c"]]
    assert (a["state"], b["state"], c["state"]) == ("finished", "finished", "running")
    assert (a["provider"], a["cloud"], a["gpuType"], a["gpuCount"]) == (
        lam,
        "lambda",
        "H100-80GB",
        8,
    )
    assert (b["provider"], b["capacityType"], b["attempts"], b["interruptions"]) == (
        runpod,
        "spot",
        1,
        0,
    )
    for key, row in (("a", a), ("b", b)):
        price = Decimal(row["pricePerHour"])
        since = datetime.datetime.fromisoformat(row["since"].replace("Z", "+00:00"))
        until = datetime.datetime.fromisoformat(row["until"].replace("Z", "+00:00"))
        billed = Decimal((until - since).total_seconds()) / 3600
        accrued = Decimal(row["accruedUSD"])
        # status.cost.accruedUSD is rounded to 4 places (half up) at every status write
        # that brings it up to date: each may add up to $0.00005; a request has ~6.
        assert (
            Decimal(before[key]["cost"]["accruedUSD"])
            <= accrued
            <= price * billed + Decimal("0.0005")
        )
        assert accrued > 0  # the machine ran: it cost something
    assert c["until"] is None
    shown = Decimal(before["c"]["cost"]["accruedUSD"])
    updated = datetime.datetime.fromisoformat(
        before["c"]["cost"]["updatedAt"].replace("Z", "+00:00")
    )
    extra = Decimal("2.49") * Decimal((now - updated).total_seconds() + 1) / 3600
    assert shown <= Decimal(c["accruedUSD"]) <= shown + extra + Decimal("0.0001")

    assert Decimal(data["total"]["accruedUSD"]) == sum(
        Decimal(r["accruedUSD"]) for r in data["requests"]
    )
    by_provider = {g["provider"]: g for g in data["byProvider"]}
    assert Decimal(by_provider[lam]["accruedUSD"]) == Decimal(a["accruedUSD"]) + Decimal(
        c["accruedUSD"]
    )
    assert by_provider[lam]["requests"] == 2 and by_provider[runpod]["requests"] == 1
    assert sum(g["requests"] for g in data["byGpuType"]) == data["total"]["requests"]

    after = cutoff.strftime("%Y-%m-%dT%H:%M:%SZ")
    code, out = await cli("cost", "--kubeconfig", kubeconfig, "--since", after, "-o", "json")
    recent = _mine(json.loads(out), set(uids.values()))
    assert set(recent) == {uids["b"], uids["c"]}  # a ended before the cutoff; c runs
    code, text = await cli("cost", "--kubeconfig", kubeconfig, "--since", "1h")
    assert code == 0 and names["b"] in text and "TOTAL" in text.splitlines()[-1]
    ledger = await Ledger(api, NAMESPACE).read()
    assert [e.uid for e in ledger].count(uids["a"]) == 1
