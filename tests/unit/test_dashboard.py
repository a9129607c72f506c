"""The dashboard's pages compute what `gpuctl cost`, `gpuctl plan` and /metrics say,
and its server is read-only, locked down (CSP, Host check) and never renders markup."""

from __future__ import annotations

import asyncio
import datetime
import json
import re
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, Counter

from gpuctl.cli import cost
from gpuctl.cli.main import build_parser
from gpuctl.controllers.metrics import RequestCollector
from gpuctl.controllers.planning import capacity_from, plan_one
from gpuctl.dashboard import costs, fleet, offers, providers, server
from gpuctl.dashboard.fleet import PhaseHistory
from gpuctl.dashboard.snapshot import build
from gpuctl.dashboard.sources import Changes, LedgerCache, Sources
from gpuctl.runtime.health import HealthServer
from gpuctl.runtime.store import Store
from tests.unit.test_cli_cost import HOUR, NOW, entry, request_obj
from tests.unit.test_cli_offers import FakeDriver, FakeDrivers, offer

HOSTILE = '<img src=x onerror="alert(1)"><script>alert(2)</script>&amp;"\''


def store(*objects: dict[str, Any]) -> Store:
    found = Store()
    for obj in objects:
        found.add(obj)
    return found


def requests() -> list[dict[str, Any]]:
    running = request_obj("running", price="23.92")
    running["metadata"]["creationTimestamp"] = "2025-06-01T08:00:00Z"
    running["metadata"]["labels"] = {"team": HOSTILE}
    running["status"]["phase"] = "Ready"
    running["status"]["nodeName"] = "node-1"
    running["status"]["conditions"] = [
        {
            "type": "Ready",
            "status": "True",
            "reason": "NodeReady",
            "message": HOSTILE,
            "lastTransitionTime": "2025-06-01T09:00:00Z",
        }
    ]
    interrupted = request_obj("spotty", offer=False, instance=False, provider="runpod")
    interrupted["status"]["phase"] = "Interrupted"
    idle = request_obj("no-offer", attempt=0, offer=False, instance=False)
    return [running, interrupted, idle]


class FakeLedger(LedgerCache):
    def __init__(self, entries: list[Any]) -> None:
        super().__init__(None, "gpuctl-system", Changes())  # type: ignore[arg-type]
        self.entries = entries


def sources(objs: list[dict[str, Any]], ledger: list[Any], **kw: Any) -> Sources:
    node = {
        "metadata": {"name": "node-1"},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }
    event = {
        "metadata": {"name": "e1", "namespace": "default"},
        "involvedObject": {"kind": "GPUNodeRequest", "name": "spotty", "uid": "uid-spotty"},
        "type": "Warning",
        "reason": "Interrupted",
        "message": "spot machine reclaimed",
        "lastTimestamp": "2025-06-01T11:00:00Z",
        "count": 1,
    }
    return Sources(
        requests=store(*objs),
        providers=kw.get("providers", store()),
        nodes=store(node),
        events=[store(event)],
        ledger=FakeLedger(ledger),
        drivers=kw.get("drivers", FakeDrivers({})),
        metrics=kw.get("metrics", lambda: []),
        phases=PhaseHistory(),
        changes=Changes(),
        mode="standalone",
    )


LEDGER = [entry("old", "5.0000", NOW - 2 * HOUR), entry("older", "1.2345", NOW - 5 * HOUR)]


def test_cost_page_equals_gpuctl_cost_and_metrics() -> None:
    objs = requests()
    snap = build(sources(objs, LEDGER), NOW)
    report = cost.report_json(cost.build_report(objs, LEDGER, NOW))
    page = snap["cost"]
    assert page["total"] == report["total"]
    assert page["byProvider"] == report["byProvider"]
    assert page["byGpuType"] == report["byGpuType"]
    assert [(r["request"], r["accruedUSD"], r["state"]) for r in page["requests"]] == [
        (r["request"], r["accruedUSD"], r["state"]) for r in report["requests"]
    ]
    # The fleet's per-request figure is the same report's.
    by_name = {r["request"]: r["accruedUSD"] for r in report["requests"]}
    for row in snap["fleet"]["requests"]:
        assert row["accruedUSD"] == by_name.get(row["name"], "0.0000")
    # Burn rate and phases: what the scrape-time gauges compute from the same cache.
    families = {f.name: f for f in RequestCollector(lambda: objs).collect()}
    burn = sum(s.value for s in families["gpuctl_running_price_per_hour_usd"].samples)
    assert Decimal(page["burnRatePerHour"]) == Decimal(str(burn)) == Decimal("23.92")
    phases = {s.labels["phase"]: int(s.value) for s in families["gpuctl_requests"].samples}
    assert snap["fleet"]["byPhase"] == phases


def test_chart_ends_at_the_report_figures_and_grows() -> None:
    objs = requests()
    report = cost.build_report(objs, LEDGER, NOW)
    for key, attr in (("provider", "provider"), ("gpuType", "gpu_type")):
        series = costs.view(report, objs)["series"][key]
        last = {s["name"]: s["points"][-1][1] for s in series}
        assert last == {g.key or "-": cost.output.usd(g.accrued_usd) for g in report.by(attr)}
        for s in series:
            values = [Decimal(v) for _, v in s["points"]]
            assert values == sorted(values)  # cumulative: never shrinks
            assert s["points"][-1][0] == "2025-06-01T12:00:00.000Z"
    later = cost.build_report(objs, LEDGER, NOW + HOUR)
    assert later.total - report.total == Decimal("23.92")  # an hour of the running machine


def test_fleet_rows_and_timeline_carry_hostile_text_as_data() -> None:
    objs = requests()
    snap = build(sources(objs, LEDGER), NOW)
    rows = {r["name"]: r for r in snap["fleet"]["requests"]}
    ready = rows["running"]
    assert ready["phase"] == "Ready" and ready["node"] == "node-1" and ready["nodeReady"] is True
    assert ready["pricePerHour"] == "23.92" and ready["provider"] == "lambda"
    assert ready["labels"] == {"team": HOSTILE}
    assert ready["ageSeconds"] == 4 * 3600
    timeline = snap["fleet"]["timelines"]["uid-running"]
    assert any(item["message"] == f"NodeReady: {HOSTILE}" for item in timeline)
    spotty = snap["fleet"]["timelines"]["uid-spotty"]
    assert [i["reason"] for i in spotty if i["source"] in ("event", "failover")] == [
        "Interrupted",
        "Interrupted",
    ]
    assert spotty == sorted(spotty, key=lambda i: i["time"] or "")


def test_phase_history_notes_each_change_once() -> None:
    clock = iter(NOW + datetime.timedelta(seconds=s) for s in range(10))
    history = PhaseHistory(lambda: next(clock))
    obj = {"metadata": {"uid": "u"}, "status": {"phase": "Pending"}}
    history.on_add(obj)
    history.on_update(obj, obj)
    history.on_update(obj, {"metadata": {"uid": "u"}, "status": {"phase": "Ready"}})
    assert [p for _, p in history.of("u")] == ["Pending", "Ready"]
    history.on_delete(obj)
    assert history.of("u") == []


def test_providers_page_counts_calls_throttles_and_errors_from_metrics() -> None:
    registry = CollectorRegistry()
    calls = Counter(
        "gpuctl_provider_api_calls",
        "c",
        ["provider", "cloud", "operation", "code"],
        registry=registry,
    )
    errors = Counter(
        "gpuctl_provider_api_errors",
        "e",
        ["provider", "cloud", "operation", "error"],
        registry=registry,
    )
    calls.labels("lambda", "lambda", "list", "200").inc(7)
    calls.labels("lambda", "lambda", "launch", "429").inc(2)
    errors.labels("lambda", "lambda", "launch", "RateLimitedError").inc(2)
    provider = {
        "metadata": {"name": "lambda", "uid": "p1"},
        "spec": {"type": "lambda", "rateLimit": {"requestsPerSecond": 1}},
        "status": {
            "offerCount": 12,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "AuthError",
                    "message": HOSTILE,
                    "lastTransitionTime": "2025-06-01T10:00:00Z",
                }
            ],
        },
    }
    objs = requests()
    (row,) = providers.view([provider], objs, {}, registry.collect())
    assert row["apiCalls"] == 9 and row["throttled"] == 2
    assert row["callsByCode"] == {"200": 7, "429": 2}
    assert row["errorsByType"] == {"RateLimitedError": 2}
    assert row["conditions"][0]["message"] == HOSTILE
    assert row["rateLimit"] == {"requestsPerSecond": 1, "launchesPerMinute": None}


async def test_offers_page_plans_with_gpuctl_plans_code() -> None:
    listed = [
        offer("a", "23.92"),
        offer("a", "30"),
        offer("b", "9.552", "spot", native_region="US-GA-1"),
    ]
    drivers = FakeDrivers({"a": FakeDriver("a", listed[:2]), "b": FakeDriver("b", listed[2:])})
    request = offers.form_request("H100-80GB", "8", "spot-or-on-demand")
    page = await offers.plan(request, Decimal("10"), drivers, [], NOW)
    expected = await plan_one(request, drivers, capacity_from([], 180, NOW))
    assert [(o["provider"], o["pricePerHour"]) for o in page["ranked"]] == [
        (o.provider, str(o.price_per_hour)) for o in expected.selection.ranked
    ]
    assert page["chosen"]["pricePerHour"] == "9.552"
    assert page["costUSD"] == "95.5200"
    assert page["message"] == expected.selection.message
    with pytest.raises(offers.FormError, match="capacity"):
        offers.form_request("H100-80GB", "8", "cheap")
    with pytest.raises(offers.FormError, match="count"):
        offers.form_request("H100-80GB", "eight", "spot")
    with pytest.raises(offers.FormError, match="hours"):
        offers.parse_hours("NaN")


def test_page_has_no_inline_code_and_the_script_never_writes_markup() -> None:
    static = resources.files("gpuctl.dashboard") / "static"
    page = (static / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", page), "inline script"
    assert "<style" not in page and " style=" not in page and not re.search(r"\son[a-z]+=", page)
    assert "http://" not in page.replace('xmlns="http://www.w3.org', "") and "https://" not in page
    script = (static / "app.js").read_text()
    for sink in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        'setAttribute("style',
    ):
        assert sink not in script, sink
    assert "http://" not in script.replace("http://www.w3.org/2000/svg", "")


async def _client(app: web.Application) -> TestClient:
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_server_is_read_only_locked_down_and_streams_snapshots() -> None:
    objs = requests()
    board = server.Dashboard(
        sources(objs, LEDGER), allowed_hosts=server.LOOPBACK_HOSTS, clock=lambda: NOW
    )
    client = await _client(board.app())
    try:
        for path in (
            "/",
            "/static/app.js",
            "/static/app.css",
            "/static/favicon.svg",
            "/api/snapshot",
            "/nope",
        ):
            response = await client.get(path)
            assert response.headers["Content-Security-Policy"] == server.CSP, path
            assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert (await client.get("/static/app.js")).content_type == "text/javascript"
        assert (await client.post("/api/snapshot")).status == 405
        assert (await client.get("/", headers={"Host": "evil.example:8090"})).status == 421
        assert (await client.get("/", headers={"Host": "localhost:8090"})).status == 200
        snap = await (await client.get("/api/snapshot")).json()
        assert (
            snap["cost"]["total"]["accruedUSD"]
            == cost.report_json(cost.build_report(objs, LEDGER, NOW))["total"]["accruedUSD"]
        )
        bad = await client.get(
            "/api/plan", params={"gpu": "H100-80GB", "count": "1", "capacity": HOSTILE}
        )
        assert bad.status == 400 and "capacity" in (await bad.json())["error"]
        async with client.get("/api/stream") as stream:
            assert stream.headers["Content-Security-Policy"] == server.CSP
            assert stream.headers["Content-Type"] == "text/event-stream"
            first = await asyncio.wait_for(stream.content.readuntil(b"\n\n"), 5)
            assert first.startswith(b"event: snapshot\ndata: ")
            assert json.loads(first.split(b"data: ", 1)[1])["now"] == "2025-06-01T12:00:00Z"
            assert board.viewers == 1
            board.publish()
            second = await asyncio.wait_for(stream.content.readuntil(b"\n\n"), 5)
            assert second.startswith(b"event: snapshot")
    finally:
        await client.close()
    assert board.viewers == 0


async def test_health_server_mounts_the_dashboard_beside_the_probes() -> None:
    health = HealthServer()
    board = server.Dashboard(sources(requests(), LEDGER), clock=lambda: NOW)
    health.mount("/ui", board.app())
    await health.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", health.port)
        writer.write(b"GET /ui/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200") and b"Content-Security-Policy" in answer
        with pytest.raises(RuntimeError):
            health.mount("/other", web.Application())
    finally:
        await health.stop()


def test_host_of() -> None:
    assert server.host_of("[::1]:8090") == "[::1]"
    assert server.host_of("localhost:1") == "localhost"
    assert server.host_of("127.0.0.1") == "127.0.0.1"


def test_event_index_keys_by_uid_and_name() -> None:
    event = {"involvedObject": {"kind": "GPUProvider", "name": "p", "uid": "u"}}
    assert fleet.events_by_object([event]) == {"u": [event], "GPUProvider/p": [event]}


def test_the_deployment_carries_gpuctl_runs_ui_flag_off() -> None:
    deployment = Path(__file__).parents[2] / "manifests" / "manager" / "deployment.yaml"
    assert "        # - --ui\n" in deployment.read_text()  # there, commented: off by default
    assert build_parser().parse_args(["run", "--ui"]).ui
    assert not build_parser().parse_args(["run"]).ui
    # `gpuctl dashboard` listens on loopback unless told otherwise.
    standalone = build_parser().parse_args(["dashboard"])
    assert (standalone.host, standalone.port) == ("127.0.0.1", 8090)


async def test_an_open_stream_does_not_hold_up_shutdown() -> None:
    health = HealthServer()
    board = server.Dashboard(sources(requests(), LEDGER), clock=lambda: NOW)
    health.mount("/ui", board.app())
    await health.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", health.port)
    writer.write(b"GET /ui/api/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert b"event: snapshot" in await asyncio.wait_for(reader.readuntil(b"data: "), 5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await health.stop()
    assert loop.time() - started < 5  # not aiohttp's 60 s wait for handlers
    writer.close()


def test_pools_table_reads_the_pool_status() -> None:
    pool = {
        "metadata": {"name": "gpu", "creationTimestamp": "2025-06-01T11:00:00Z"},
        "status": {
            "machines": 2,
            "launching": 1,
            "gpus": 16,
            "gpusInUse": 9,
            "pricePerHour": "19.1",
            "conditions": [{"type": "Ready", "status": "True", "message": HOSTILE}],
        },
    }
    found = sources(requests(), LEDGER)
    found.pools = store(pool)
    (row,) = build(found, NOW)["fleet"]["pools"]
    assert row == {
        "kind": "GPUNodePool",
        "name": "gpu",
        "machines": 2,
        "launching": 1,
        "gpus": 16,
        "gpusInUse": 9,
        "pricePerHour": "19.1",
        "ready": "True",
        "message": HOSTILE,
        "created": "2025-06-01T11:00:00Z",
        "ageSeconds": 3600,
    }


async def test_a_burst_of_changes_makes_few_snapshots() -> None:
    found = sources(requests(), LEDGER)
    board = server.Dashboard(found, clock=lambda: NOW)
    board.viewers = 1  # as if a page were open
    runner = asyncio.create_task(board.run())
    try:
        for _ in range(200):
            found.changes.bump()
            await asyncio.sleep(0.005)  # 1 s of informer events
        await asyncio.sleep(0.6)
    finally:
        runner.cancel()
    assert 1 <= board.version <= 4
