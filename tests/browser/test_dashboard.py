"""The dashboard in a real browser (Debian's chromium, driven by playwright-core).

One module, in order, against one running setup (conftest.py): the fleet table shows
three requests going Ready live (no reload), a spot interruption appears on the
request's timeline, the cost chart grows, the Offers page ranks as `gpuctl plan`,
and hostile strings (a cloud's error message, an Event) render as text. The page's
numbers are checked against the API objects (what kubectl shows), `gpuctl cost`'s
report and the operator's /metrics for the same moment; no page or API answer holds
a credential; the browser reports no CSP violation, script error or dialog.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import sys
from decimal import Decimal

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gpuctl.controllers.ledger import Ledger
from gpuctl.controllers.planning import capacity_from, plan_one
from gpuctl.controllers.resources import GPUNODEREQUESTS
from gpuctl.controllers.spend import build_report
from gpuctl.dashboard import offers
from gpuctl.dashboard.fmt import usd
from gpuctl.dev.controlplane import free_port
from gpuctl.runtime.resources import EVENTS
from tests.browser.conftest import HOSTILE, NAMESPACE, Board
from tests.browser.driver import Browser
from tests.e2e.conftest import ISSUED_KEYS, wait_for
from tests.integration.test_prometheus import promtool, run

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

ROW = "#fleet tbody tr"
NOT_RELOADED = "return window.__gpuctlMarker === 42;"


async def get_json(url: str) -> dict[str, object]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200, url
        data: dict[str, object] = await response.json()
        return data


async def shot(browser: Browser, board: Board, name: str) -> None:
    await browser.call("screenshot", path=str(board.shots / f"dashboard-{name}.png"))


async def test_fleet_shows_three_requests_going_ready_live(browser: Browser, board: Board) -> None:
    answer = await browser.call("goto", url=board.url + "#fleet")
    assert answer["status"] == 200
    assert "default-src 'none'" in answer["headers"]["content-security-policy"]
    await browser.call("waitFor", selector="#live.on")
    await browser.evaluate("window.__gpuctlMarker = 42; return true;")
    lam, runpod = board.env.providers["lambda"], board.env.providers["runpod"]
    names = [
        await board.make_request(
            "h100x8", {"gpu": {"type": "H100-80GB", "count": 8}, "providers": [lam, runpod]}
        ),
        await board.make_request(
            "a10x1", {"gpu": {"type": "A10-24GB", "count": 1}, "providers": [lam]}
        ),
        await board.make_request(
            "rtx4090x2",
            {
                "gpu": {"type": "RTX-4090", "count": 2},
                "capacityType": "spot",
                "providers": [runpod],
            },
        ),
    ]
    # The rows appear and turn Ready while the page stays loaded.
    await browser.wait_until(
        """return arg.every((name) => {
             const row = document.querySelector(`#fleet tbody tr[data-name="${name}"]`);
             return row && row.querySelector('[data-testid=phase]').textContent === 'Ready';
           });""",
        names,
        timeout=90,
    )
    assert await browser.evaluate(NOT_RELOADED), "the page reloaded"
    # Every cell equals the object the API server holds (kubectl get gnr -o yaml).
    for name in names:
        obj = await board.api.get(GPUNODEREQUESTS, name)
        status = obj["status"]
        cells = await browser.evaluate(
            """const row = document.querySelector(`#fleet tbody tr[data-name="${arg}"]`);
               const out = {};
               for (const td of row.querySelectorAll('td')) out[td.dataset.col] = td.textContent;
               return out;""",
            name,
        )
        assert cells["phase"] == status["phase"] == "Ready"
        assert cells["provider"] == status["offer"]["provider"]
        assert cells["region"] == status["offer"]["region"]
        assert Decimal(cells["pricePerHour"]) == Decimal(status["offer"]["pricePerHour"])
        assert cells["node"] == status["nodeName"]
        assert "team=research" in cells["labels"]
    await shot(browser, board, "fleet")
    # Filter by words (name, provider, GPU, labels...) and sort by a column.
    await browser.call("fill", selector="#filter", value=f"A10-24GB {board.env.suffix}")
    await browser.wait_until(
        "return [...document.querySelectorAll(arg)].map((r) => r.dataset.name).join() === "
        f"'{names[1]}';",
        ROW,
        timeout=10,
    )
    await browser.call("fill", selector="#filter", value=board.env.suffix)
    await browser.call("click", selector='#fleet th[data-key="pricePerHour"]')
    await browser.call("click", selector='#fleet th[data-key="pricePerHour"]')  # descending
    order = await browser.call("texts", selector='#fleet tbody td[data-col="pricePerHour"]')
    assert [Decimal(p) for p in order] == sorted((Decimal(p) for p in order), reverse=True)
    await browser.call("fill", selector="#filter", value="")


async def test_spot_interruption_appears_on_the_timeline(browser: Browser, board: Board) -> None:
    name = next(n for n in board.made if n.startswith("rtx4090x2"))
    first = (await board.api.get(GPUNODEREQUESTS, name))["status"]
    board.sim.state.interrupt("runpod", first["instance"]["id"])
    await browser.call("click", selector=f'#fleet tbody tr[data-name="{name}"]')
    # The Warning Event, the failed offer and the phase change, each on the timeline.
    await browser.wait_until(
        """const rows = [...document.querySelectorAll('#timeline tbody tr')].map((tr) =>
             [tr.querySelector('[data-col=source]').textContent,
              tr.querySelector('[data-col=reason]').textContent]);
           return arg.every(([source, reason]) =>
             rows.some(([s, r]) => s === source && r === reason));""",
        [["event", "Interrupted"], ["failover", "Interrupted"], ["phase", "phase Interrupted"]],
        timeout=60,
    )
    assert await browser.evaluate(NOT_RELOADED), "the page reloaded"
    await shot(browser, board, "timeline")


async def test_cost_chart_grows_and_equals_gpuctl_cost_and_metrics(
    browser: Browser, board: Board
) -> None:
    await browser.evaluate("location.hash = '#cost'; return true;")
    await browser.call("waitFor", selector="[data-testid=cost-total]")
    first = Decimal(await browser.call("text", selector="[data-testid=cost-total]"))
    # Running machines accrue every second: the total and the chart's last point grow.
    await browser.wait_until(
        "return parseFloat(document.querySelector('[data-testid=cost-total]').textContent) > arg;",
        str(first),
        timeout=30,
    )
    assert await browser.evaluate(NOT_RELOADED), "the page reloaded"
    await shot(browser, board, "cost")
    # The same moment: the snapshot's `now` and objects, against gpuctl cost's report
    # computed from the API server's objects and the ledger at that `now`, and against
    # /metrics. A request may move between the reads (the replaced spot machine joins):
    # compare until a round where nothing moved in between, for at most 30 s.
    differences: list[str] = []
    for _ in range(30):
        differences = await same_moment_differences(board)
        if not differences:
            break
        await asyncio.sleep(1)
    assert differences == []


async def same_moment_differences(board: Board) -> list[str]:
    """What differs between the dashboard's snapshot, `gpuctl cost` and /metrics now."""
    snap = await get_json(board.url + "api/snapshot")
    now = datetime.datetime.fromisoformat(str(snap["now"]).replace("Z", "+00:00"))
    objs = (await board.api.list(GPUNODEREQUESTS))["items"]
    entries = await Ledger(board.api, NAMESPACE).read()
    async with aiohttp.ClientSession() as session, session.get(board.metrics_url) as response:
        families = {f.name: f for f in text_string_to_metric_families(await response.text())}
    again = await get_json(board.url + "api/snapshot")
    report = build_report(objs, entries, now)
    page, fleet = snap["cost"], snap["fleet"]
    assert isinstance(page, dict) and isinstance(fleet, dict)
    burn = sum(s.value for s in families["gpuctl_running_price_per_hour_usd"].samples)
    phases = {s.labels["phase"]: int(s.value) for s in families["gpuctl_requests"].samples}
    chart_end = {s["name"]: s["points"][-1][1] for s in page["series"]["provider"]}
    by_provider = {g.key or "-": usd(g.accrued_usd) for g in report.by("provider")}
    checks = {
        "total": (page["total"]["accruedUSD"], usd(report.total)),
        "by provider": ({g["provider"]: g["accruedUSD"] for g in page["byProvider"]}, by_provider),
        "chart end": (chart_end, by_provider),
        "burn rate": (
            Decimal(page["burnRatePerHour"]),
            Decimal(str(burn)).quantize(Decimal("0.0001")).normalize(),
        ),
        "phases": (
            {k: v for k, v in fleet["byPhase"].items() if v},
            {k: v for k, v in phases.items() if v},
        ),
        "unchanged fleet": (fleet["byPhase"], again["fleet"]["byPhase"]),  # type: ignore[index]
    }
    return [f"{what}: page {a} != {b}" for what, (a, b) in checks.items() if a != b]


async def test_offers_page_ranks_as_gpuctl_plan(browser: Browser, board: Board) -> None:
    await browser.evaluate("location.hash = '#offers'; return true;")
    await browser.call("waitFor", selector="#catalog tbody tr")
    await browser.call("select", selector="#plan-gpu", value="H100-80GB")
    await browser.call("fill", selector="#plan-count", value="8")
    await browser.call("select", selector="#plan-capacity", value="spot-or-on-demand")
    await browser.call("fill", selector="#plan-hours", value="10")
    await browser.call("click", selector="#plan-form button")
    await browser.call("waitFor", selector="#plan-verdict", text="H100-80GB x8")
    rows = await browser.evaluate(
        """return [...document.querySelectorAll('#plan tbody tr')]
             .filter((tr) => tr.querySelector('[data-col=rank]').textContent !== '-')
             .map((tr) => [tr.querySelector('[data-col=provider]').textContent,
                           tr.querySelector('[data-col=instanceType]').textContent,
                           tr.querySelector('[data-col=pricePerHour]').textContent]);"""
    )
    services = board.running.operator.services
    assert services is not None
    objs = (await board.api.list(GPUNODEREQUESTS))["items"]
    now = datetime.datetime.now(datetime.UTC)
    request = offers.form_request("H100-80GB", "8", "spot-or-on-demand")
    expected = await plan_one(request, services.drivers, capacity_from(objs, 180, now))
    assert rows == [
        [o.provider, o.instance_type, str(o.price_per_hour)] for o in expected.selection.ranked
    ]
    assert rows, "some provider offers H100-80GB x8"
    await shot(browser, board, "offers")


async def test_hostile_strings_render_as_text_and_no_secret_reaches_a_page(
    browser: Browser, board: Board
) -> None:
    # A cloud error carrying markup reaches the GPUProvider's condition...
    await browser.evaluate("location.hash = '#providers'; return true;")
    selector = f'[data-provider="{board.hostile_provider}"]'
    await browser.call("waitFor", selector=selector, text="<img src=x", timeout=60_000)
    # ...and an Event (anyone allowed to create Events can write any message).
    name = board.made[0]
    obj = await board.api.get(GPUNODEREQUESTS, name)
    await board.api.create(
        EVENTS,
        {
            "metadata": {"generateName": "hostile-", "namespace": "default"},
            "involvedObject": {
                "apiVersion": "gpuctl.io/v1alpha1",
                "kind": "GPUNodeRequest",
                "name": name,
                "uid": obj["metadata"]["uid"],
            },
            "reason": "<b>Hostile</b>",
            "message": HOSTILE,
            "type": "Warning",
            "source": {"component": "someone-else"},
            "firstTimestamp": obj["metadata"]["creationTimestamp"],
            "lastTimestamp": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "count": 1,
        },
        namespace="default",
    )
    await shot(browser, board, "providers")
    await browser.evaluate("location.hash = '#fleet'; return true;")
    await browser.call("click", selector=f'#fleet tbody tr[data-name="{name}"]')
    await browser.call("waitFor", selector="#timeline tbody tr", text="<b>Hostile</b>")
    # Shown as the very characters, never parsed: no element, no script ran.
    injected = await browser.evaluate(
        """return {
             imgs: document.querySelectorAll('main img, main b, main script').length,
             text: document.body.textContent.includes(arg),
           };""",
        HOSTILE,
    )
    assert injected == {"imgs": 0, "text": True}
    assert await browser.call("problems") == []  # no dialog, CSP violation or script error
    # No credential in the page or in any API answer.
    texts = [await browser.evaluate("return document.documentElement.outerHTML;")]
    for path in ("api/snapshot", "api/offers"):
        texts.append(json.dumps(await get_json(board.url + path)))
    leaks = [key for key in ISSUED_KEYS for text in texts if key in text]
    assert leaks == []


async def test_promtool_check_metrics_is_clean_on_a_live_scrape(board: Board) -> None:
    """The operator's /metrics after launches, an interruption and provider errors."""
    async with aiohttp.ClientSession() as session, session.get(board.metrics_url) as response:
        text = await response.read()
    for series in (
        "gpuctl_launches_total",
        "gpuctl_interruptions_total",
        "gpuctl_provider_api_errors_total",
    ):
        assert series.encode() in text, series
    run(promtool(), "check", "metrics", stdin=text)


async def test_gpuctl_dashboard_standalone_shows_the_same_fleet(board: Board) -> None:
    """`gpuctl dashboard` on this machine, with its own informers, against the same cluster."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gpuctl.cli.main", "dashboard",
        "--kubeconfig", str(board.kubeconfig), "--namespace", NAMESPACE,
        "--port", str(port), "--metrics-url", board.metrics_url,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 60)).decode()
        assert line.strip() == f"gpuctl dashboard: http://127.0.0.1:{port}/ui/"
        url = line.split(": ", 1)[1].strip()

        async def same_fleet() -> bool:
            try:
                mine = await get_json(url + "api/snapshot")
            except (aiohttp.ClientError, AssertionError):
                return False
            theirs = await get_json(board.url + "api/snapshot")
            rows = [(r["name"], r["phase"], r["node"]) for r in mine["fleet"]["requests"]]  # type: ignore[index]
            expected = [(r["name"], r["phase"], r["node"]) for r in theirs["fleet"]["requests"]]  # type: ignore[index]
            counters = {p["name"]: p["apiCalls"] > 0 for p in mine["providers"]}  # type: ignore[union-attr]
            return bool(rows) and rows == expected and all(counters.values())

        await wait_for(same_fleet, 60, "gpuctl dashboard shows the operator's fleet")
    finally:
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 30) == 0
