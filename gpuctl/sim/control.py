"""The simulator's control API: HTTP JSON on `Simulator.control_url`, for other processes.

It mirrors the Python API one to one (no authentication; it binds 127.0.0.1):

  GET  /                 {"endpoints": {cloud: url}, "api_keys": {cloud: key}, "control_url"}
  GET  /ledger           ledger entries; ?cloud= filters, ?since=N skips the first N
  GET  /instances        instance snapshots; ?cloud= filters
  GET  /console          ?cloud=&instance_id=: {"console": the machine's console log}
  GET  /violations       spec violations seen
  GET  /faults           armed faults
  GET  /fault-rates      fault rates per cloud and operation class
  GET  /fault-stats      faults fired per cloud, operation class and kind
  GET  /billing          per instance: what its cloud billed so far; ?cloud= filters
  POST /capacity         {"cloud", "region", "instance_type", "count"}
  POST /prices           {"cloud", "instance_type", "usd_per_hour", "capacity_type"?}
  POST /interrupt        {"cloud", "instance_id"}          -> the preempted instance
  POST /outage           {"cloud", "seconds"}: the cloud's API refuses connections for that long
  POST /faults           {"cloud", "kind", "operation"?, "path"?, "count"?, "retry_after"?,
                          "seconds"?, "variant"?}           -> the armed fault
  POST /fault-rates      {"cloud", "rates": {kind: probability}, "operations"?, "seconds"?,
                          "retry_after"?, "seed"?}   -> the rates (replacing that class's)
  DELETE /faults         disarm every fault and remove every rate
  POST /reset            Simulator.reset()

Errors: 400 `{"error": message}` for bad input, 404 for an unknown cloud,
region, type or instance, 409 when an instance cannot be interrupted.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gpuctl.sim.config import CLOUDS
from gpuctl.sim.state import InvalidTransitionError, UnknownObjectError

if TYPE_CHECKING:
    from gpuctl.sim.simulator import Simulator

Endpoint = Callable[[web.Request], Awaitable[Any]]


def application(sim: Simulator) -> web.Application:
    app = web.Application()
    routes = [
        ("GET", "/", _info),
        ("GET", "/ledger", _ledger),
        ("GET", "/instances", _instances),
        ("GET", "/console", _console),
        ("GET", "/violations", _violations),
        ("GET", "/faults", _faults),
        ("GET", "/fault-rates", _fault_rates),
        ("GET", "/fault-stats", _fault_stats),
        ("GET", "/billing", _billing),
        ("POST", "/fault-rates", _set_fault_rates),
        ("POST", "/capacity", _capacity),
        ("POST", "/prices", _prices),
        ("POST", "/interrupt", _interrupt),
        ("POST", "/outage", _outage),
        ("POST", "/faults", _add_fault),
        ("DELETE", "/faults", _clear_faults),
        ("POST", "/reset", _reset),
    ]
    for method, path, endpoint in routes:
        app.router.add_route(method, path, _json_endpoint(sim, endpoint))
    return app


def _json_endpoint(
    sim: Simulator, endpoint: Callable[[Simulator, web.Request], Awaitable[Any]]
) -> Endpoint:
    async def handle(request: web.Request) -> web.Response:
        try:
            result = await endpoint(sim, request)
        except UnknownObjectError as error:
            return _error(404, str(error.args[0]) if error.args else "not found")
        except InvalidTransitionError as error:
            return _error(409, str(error))
        except (KeyError, TypeError, ValueError) as error:
            return _error(400, f"bad request: {error!r}")
        return web.json_response(result, dumps=_dumps)

    return handle


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except json.JSONDecodeError as error:
        raise ValueError("the body must be a JSON object") from error
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    return body


def _clouds(request: web.Request) -> tuple[str, ...]:
    cloud = request.query.get("cloud")
    if cloud is None:
        return CLOUDS
    if cloud not in CLOUDS:
        raise UnknownObjectError(f"unknown cloud {cloud!r}")
    return (cloud,)


async def _info(sim: Simulator, request: web.Request) -> Any:
    return {
        "endpoints": {c: sim.endpoint(c) for c in CLOUDS},
        "api_keys": {c: sim.api_key(c) for c in CLOUDS},
        "control_url": sim.control_url,
    }


async def _ledger(sim: Simulator, request: web.Request) -> Any:
    since = int(request.query.get("since", "0"))
    clouds = _clouds(request)
    return [e.as_json() for e in sim.ledger[since:] if e.cloud in clouds]


async def _instances(sim: Simulator, request: web.Request) -> Any:
    return [i.as_json() for cloud in _clouds(request) for i in sim.instances(cloud)]


async def _console(sim: Simulator, request: web.Request) -> Any:
    (cloud,) = _clouds(request) if "cloud" in request.query else ("",)
    if not cloud:
        raise ValueError("cloud= is required")
    return {"console": sim.console(cloud, request.query["instance_id"])}


async def _violations(sim: Simulator, request: web.Request) -> Any:
    return [v.as_json() for v in sim.violations]


async def _faults(sim: Simulator, request: web.Request) -> Any:
    return [f.as_json() for f in sim.faults.pending()]


async def _fault_rates(sim: Simulator, request: web.Request) -> Any:
    return [r.as_json() for r in sim.faults.rates()]


async def _fault_stats(sim: Simulator, request: web.Request) -> Any:
    return sim.faults.stats()


async def _billing(sim: Simulator, request: web.Request) -> Any:
    return [
        {
            "cloud": i.cloud,
            "id": i.id,
            "name": i.name,
            "phase": i.phase.value,
            "price_per_hour": i.price_per_hour,
            "created_at": i.created_at,
            "terminated_at": i.terminated_at if not i.phase.live else None,
            "billed_usd": sim.state.billed_usd(i.cloud, i.id),
        }
        for cloud in _clouds(request)
        for i in sim.instances(cloud)
    ]


async def _set_fault_rates(sim: Simulator, request: web.Request) -> Any:
    body = await _body(request)
    if body["cloud"] not in CLOUDS:
        raise UnknownObjectError(f"unknown cloud {body['cloud']!r}")
    rates = body["rates"]
    if not isinstance(rates, dict):
        raise ValueError("rates must be an object of kind -> probability")
    seconds = body.get("seconds")
    entry = sim.faults.set_rates(
        body["cloud"],
        {str(k): float(v) for k, v in rates.items()},
        str(body.get("operations", "*")),
        seconds=None if seconds is None else float(seconds),
        retry_after=float(body.get("retry_after", 1.0)),
        seed=None if body.get("seed") is None else int(body["seed"]),
    )
    return entry.as_json()


async def _capacity(sim: Simulator, request: web.Request) -> Any:
    body = await _body(request)
    sim.state.set_capacity(body["cloud"], body["region"], body["instance_type"], int(body["count"]))
    return {"ok": True}


async def _prices(sim: Simulator, request: web.Request) -> Any:
    body = await _body(request)
    sim.state.set_price(
        body["cloud"],
        body["instance_type"],
        float(body["usd_per_hour"]),
        body.get("capacity_type", "on-demand"),
    )
    return {"ok": True}


async def _interrupt(sim: Simulator, request: web.Request) -> Any:
    body = await _body(request)
    sim.state.interrupt(body["cloud"], body["instance_id"])
    return next(i.as_json() for i in sim.instances(body["cloud"]) if i.id == body["instance_id"])


async def _outage(sim: Simulator, request: web.Request) -> Any:
    body = await _body(request)
    if body["cloud"] not in CLOUDS:
        raise UnknownObjectError(f"unknown cloud {body['cloud']!r}")
    seconds = float(body["seconds"])
    if not 0 < seconds <= 3600:
        raise ValueError("seconds must be within (0, 3600]")
    await sim.outage(body["cloud"], seconds)
    return {"ok": True}


async def _add_fault(sim: Simulator, request: web.Request) -> Any:
    body = await _body(request)
    if body["cloud"] not in CLOUDS:
        raise UnknownObjectError(f"unknown cloud {body['cloud']!r}")
    fault = sim.faults.add(
        body["cloud"],
        operation=body.get("operation"),
        path=body.get("path"),
        kind=body.get("kind", "500"),
        count=body.get("count", 1),
        retry_after=_optional_float(body.get("retry_after", 1.0)),
        seconds=body.get("seconds"),
        variant=body.get("variant", "truncated"),
    )
    return fault.as_json()


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


async def _clear_faults(sim: Simulator, request: web.Request) -> Any:
    sim.faults.clear()
    return {"ok": True}


async def _reset(sim: Simulator, request: web.Request) -> Any:
    sim.reset()
    return {"ok": True}
