"""The cost of a simulated request, spec validation included (figures in docs/sim.md)."""

from __future__ import annotations

import statistics
import time

import aiohttp

from gpuctl.sim import SimConfig, Simulator
from gpuctl.sim.specs import SpecRequest, SpecResponse, spec

# Polled reads, as a controller issues them.
CALLS = [
    ("lambda", "/api/v1/instances"),
    ("lambda", "/api/v1/instance-types"),
    ("runpod", "/v1/pods"),
    ("runpod", "/v2/catalog/gpus?include=AVAILABILITY&product=POD"),
    ("paperspace", "/v1/machines"),
]
# Generous bounds: the machine is shared; typical figures are 10x lower.
MAX_MEAN_SECONDS = 0.010
MAX_UNCACHED_CHECK_SECONDS = 0.050


async def test_requests_stay_cheap() -> None:
    async with Simulator(SimConfig(boot_seconds=0.0)) as sim, aiohttp.ClientSession() as session:
        started = time.perf_counter()
        for n in range(300):
            cloud, path = CALLS[n % len(CALLS)]
            headers = {"Authorization": f"Bearer {sim.api_key(cloud)}"}
            async with session.get(sim.endpoint(cloud) + path, headers=headers) as response:
                assert response.status == 200
                await response.read()
        wall = time.perf_counter() - started
        server = statistics.mean(e.duration for e in sim.ledger)
    assert not sim.violations
    assert server < MAX_MEAN_SECONDS, f"{server * 1000:.2f} ms per request in the server"
    assert wall / 300 < 3 * MAX_MEAN_SECONDS


def test_uncached_validation_cost() -> None:
    """A never-seen exchange pays full openapi-core validation."""
    lam = spec("lambda")
    costs = []
    for n in range(20):
        body = f'{{"data": [], "n": {n}}}'.encode()  # unique, and off-spec on purpose
        request = SpecRequest(
            host_url=lam.host_url,
            path="/api/v1/instances",
            method="get",
            query=[("q", str(n))],
            headers=[("Authorization", "Bearer k")],
            body=None,
            content_type="",
        )
        started = time.perf_counter()
        assert lam.check_request(request) == (True, [])
        problems = lam.check_response(request, SpecResponse(200, body, "application/json", []))
        costs.append(time.perf_counter() - started)
        assert problems  # additionalProperties: false at the top level
    assert statistics.median(costs) < MAX_UNCACHED_CHECK_SECONDS
