"""Every operator metric is on /metrics and moves as requests are driven through their lives."""

from __future__ import annotations

import re

import aiohttp

from gpuctl.runtime.client import Client
from gpuctl.sim import Simulator
from tests.e2e.conftest import Env, MakeRequest, Running, wait_for, wait_phase
from tests.e2e.test_collect_and_credentials import launch_behind_our_back
from tests.e2e.test_interruption import replaced

# metric (sample name) -> must its summed value grow during the test?
METRICS = {
    "gpuctl_requests": False,  # gauge by phase
    "gpuctl_reconcile_total": True,
    "gpuctl_reconcile_duration_seconds_count": True,
    "gpuctl_reconcile_errors_total": True,
    "gpuctl_workqueue_depth": False,
    "gpuctl_workqueue_retries_total": True,
    "gpuctl_provider_api_calls_total": True,
    "gpuctl_provider_api_duration_seconds_count": True,
    "gpuctl_provider_api_errors_total": True,
    "gpuctl_launches_total": True,
    "gpuctl_launch_to_ready_seconds_count": True,
    "gpuctl_interruptions_total": True,
    "gpuctl_running_price_per_hour_usd": True,
    "gpuctl_accrued_cost_usd": False,
    "gpuctl_price_cache_hits_total": True,
    "gpuctl_price_cache_misses_total": True,
    "gpuctl_leaked_instances_collected_total": True,
    "gpuctl_provider_ready": False,  # gauge; this test's providers must read 1 (below)
}
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


async def scrape(operator: Running, samples: dict[str, float] | None = None) -> dict[str, float]:
    manager = operator.operator.manager
    assert manager is not None
    await wait_for(lambda: _serving(operator), 10, "health server")
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{manager.health_port}/metrics") as response,
    ):
        text = await response.text()
    totals: dict[str, float] = {}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match:
            if samples is not None:
                samples[match.group(1) + (match.group(2) or "")] = float(match.group(3))
            totals[match.group(1)] = totals.get(match.group(1), 0.0) + float(match.group(3))
    return totals


async def _serving(operator: Running) -> bool:
    manager = operator.operator.manager
    return manager is not None and bool(manager.health_port)


async def test_every_metric_is_exposed_and_moves(
    api: Client, env: Env, make_request: MakeRequest, sim: Simulator, operator: Running
) -> None:
    before = await scrape(operator)
    # A 500 on create moves provider errors (gpuctl settles the unknown outcome by
    # look-ups, no reconcile error); 500s on every try of the interrupted pod's DELETE
    # move reconcile errors (a poll no longer does: RunPod's polls are served by one
    # shared list of the account's pods, which the leak collector and look-ups share).
    sim.faults.add("runpod", operation="CreatePod", kind="500", count=1)
    sim.faults.add("runpod", operation="DeletePod", kind="500", count=4)  # > the 4 tries
    name = await make_request(
        "metrics",
        {"gpu": {"type": "RTX-4090", "count": 1}, "capacityType": "spot",
         "providers": [env.providers["runpod"]]},
    )  # fmt: skip
    first = (await wait_phase(api, name, "Ready"))["status"]
    during = await scrape(operator)
    sim.state.interrupt("runpod", first["instance"]["id"])
    await replaced(api, name, 2)
    await launch_behind_our_back(sim, f"gpuctl-{env.cluster}-0123456789ab-1")

    async def leak_counted() -> bool:
        return (await scrape(operator)).get("gpuctl_leaked_instances_collected_total", 0) > (
            before.get("gpuctl_leaked_instances_collected_total", 0)
        )

    await wait_for(leak_counted, 30, "the leak collected")
    samples: dict[str, float] = {}
    after = await scrape(operator, samples)
    runpod = env.providers["runpod"]
    assert samples[f'gpuctl_provider_ready{{provider="{runpod}"}}'] == 1.0
    missing = [m for m in METRICS if m not in after]
    assert missing == []
    still = [m for m, moves in METRICS.items() if moves and after[m] <= before.get(m, 0.0)]
    still = [m for m in still if not (m == "gpuctl_running_price_per_hour_usd" and during[m] > 0)]
    assert still == []
    assert after["gpuctl_requests"] >= 1
