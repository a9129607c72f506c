"""The HTTP machinery every simulated cloud shares: routing, auth, spec checks, faults, ledger.

One aiohttp application per cloud, with a single catch-all handler that runs
each request through the same pipeline:

1. authentication (`CloudApi.authorized`): a wrong or missing key gets the
   cloud's own 401, and nothing else happens; then rate limiting where the
   cloud enforces it (`CloudApi.admit`);
2. request validation against the spec: a path not in the spec gets the cloud's
   404, an invalid request the cloud's validation error, and both are recorded
   as request violations;
3. routing to an implemented operation (a spec operation the sim does not
   implement gets the cloud's 404, which is not a violation);
4. injected faults (see gpuctl.sim.faults), armed or drawn from rates, around the
   operation's handler (before it: 500, 502, 503, 504, 429, reset, timeout-before,
   slow; after it: timeout, drop, 500-after, 502-after, 504-after, malformed);
5. response validation against the spec (or, for statuses the operation does
   not document, against the cloud's error model): a mismatch is a sim bug and
   recorded as a response violation (a gateway's 502/504 page is not the API's
   answer and is not checked);
6. one ledger entry per request.

Handlers are synchronous functions of a `Call` returning a `Reply` (or raising
`ApiError` with one); the state they touch is in-memory, so nothing awaits.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs
from aiohttp import web
from multidict import CIMultiDictProxy, MultiMapping

from gpuctl.sim.clock import Clock
from gpuctl.sim.config import SimConfig
from gpuctl.sim.faults import GATEWAY, Fault, Faults
from gpuctl.sim.model import LedgerEntry, Violation
from gpuctl.sim.specs import Spec, SpecRequest, SpecResponse, is_json
from gpuctl.sim.state import SimState

log = logging.getLogger(__name__)

# Lambda's user_data may be 1 MB; leave room for the rest of the request.
MAX_REQUEST_BYTES = 8 * 1024 * 1024
# Fault kinds answered instead of running the operation, and after running it.
BEFORE_REPLIES = frozenset({"500", "502", "503", "504", "429"})
AFTER_REPLIES = frozenset({"500-after", "502-after", "504-after"})


@attrs.frozen
class Reply:
    status: int
    body: Any = None  # JSON-serialisable; None: empty body
    content_type: str = "application/json"
    headers: Mapping[str, str] = attrs.field(factory=dict)
    raw: bytes | None = None  # a body that is not JSON (a gateway's HTML page)


class ApiError(Exception):
    """Raised by a handler to answer with an error reply."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(f"HTTP {reply.status}")
        self.reply = reply


@attrs.frozen
class Call:
    """What a handler gets: the request's parameters and decoded body."""

    path_params: Mapping[str, str]
    query: MultiMapping[str]
    headers: CIMultiDictProxy[str]
    body: Any  # decoded JSON (validated against the spec) or None

    def values(self, name: str) -> list[str]:
        """All values of a query parameter; form-exploded arrays arrive repeated."""
        return [v for raw in self.query.getall(name, []) for v in raw.split(",") if v]

    def flag(self, name: str) -> bool:
        return self.query.get(name, "false").lower() == "true"


Handler = Callable[[Call], Reply]


@attrs.frozen
class Route:
    method: str
    spec: Spec
    template: str  # the spec's path template, e.g. /pods/{podId}
    handler: Handler

    @property
    def served(self) -> str:
        return self.spec.served_path(self.template)

    @property
    def operation(self) -> str | None:
        return self.spec.operation_id(self.method, self.template)


class Router:
    def __init__(self, routes: Iterable[Route]) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Route]] = []
        for route in routes:
            pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(route.served))
            self._routes.append((route.method.upper(), re.compile(f"^{pattern}$"), route))

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        for route_method, pattern, route in self._routes:
            if route_method == method.upper() and (found := pattern.match(path)):
                return route, found.groupdict()
        return None


class CloudApi:
    """One simulated cloud's API: its routes, authentication and error formats."""

    cloud: str = ""
    # Whether the cloud documents `Retry-After` on its 429s (RunPod does): rated 429
    # faults carry one only then.
    retry_after_documented: bool = False

    def __init__(self, state: SimState, config: SimConfig) -> None:
        self.state = state
        self.config = config
        self.api_key = config.api_key(self.cloud)

    def routes(self) -> Sequence[Route]:
        raise NotImplementedError

    def spec_for(self, path: str) -> Spec:
        """The spec a path belongs to (for clouds serving more than one)."""
        raise NotImplementedError

    def authorized(self, headers: CIMultiDictProxy[str]) -> bool:
        return headers.get("Authorization", "") == f"Bearer {self.api_key}"

    def authenticate(
        self, method: str, path: str, query: MultiMapping[str], headers: CIMultiDictProxy[str]
    ) -> bool:
        """Whether this request is authenticated: the key alone (`authorized`), unless the
        cloud signs whole requests (Crusoe: method, path, query and a timestamp)."""
        return self.authorized(headers)

    def admit(self) -> Reply | None:
        """Count an authenticated request; a 429 when an enforced rate limit is used up."""
        return None

    def headers(self) -> Mapping[str, str]:
        """Headers the cloud adds to every authenticated answer."""
        return {}

    # The cloud's error formats.
    def unauthorized(self) -> Reply:
        raise NotImplementedError

    def not_found(self, message: str) -> Reply:
        raise NotImplementedError

    def invalid(self, spec: Spec, problems: Sequence[str]) -> Reply:
        raise NotImplementedError

    def internal_error(self) -> Reply:
        raise NotImplementedError

    def rate_limited(self, retry_after: int) -> Reply:
        raise NotImplementedError

    def unavailable(self) -> Reply:
        """503 in the cloud's error format (default: its internal error, status 503)."""
        reply = self.internal_error()
        body = reply.body
        if isinstance(body, dict) and body.get("status") == reply.status:
            body = {**body, "status": 503}  # problem+json repeats the status
        return attrs.evolve(reply, status=503, body=body)

    def error_model_problems(self, reply: Reply) -> list[str]:
        """Check an answer with a status the operation does not document."""
        raise NotImplementedError


@attrs.define
class Context:
    """What the servers share with the simulator."""

    config: SimConfig
    clock: Clock
    state: SimState
    faults: Faults
    ledger: list[LedgerEntry]
    violations: list[Violation]
    stopping: asyncio.Event
    # cloud -> until when its API is down (`Simulator.outage`): the listening socket is
    # closed (new connections are refused) and a request on a connection opened before
    # is reset unanswered, before anything runs.
    outages: dict[str, float] = attrs.field(factory=dict)


@attrs.define
class _Exchange:
    """One request on its way through the pipeline."""

    method: str
    path: str
    query: MultiMapping[str]
    headers: CIMultiDictProxy[str]
    raw: bytes
    content_type: str
    started: float
    spec: Spec
    route: Route | None = None
    path_params: dict[str, str] = attrs.field(factory=dict)
    operation: str | None = None  # the spec's operationId, implemented or not
    authenticated: bool = False
    violation: str | None = None
    fault: Fault | None = None
    aborted: bool = False  # the connection is dropped without an answer

    @functools.cached_property
    def spec_request(self) -> SpecRequest:
        return self.spec.request(
            path=self.path,
            method=self.method,
            query=self.query.items(),
            headers=self.headers.items(),
            body=self.raw if self.raw else None,
            content_type=self.content_type,
        )


class CloudServer:
    """The aiohttp application of one cloud."""

    def __init__(self, api: CloudApi, context: Context) -> None:
        self.api = api
        self.context = context
        self.router = Router(api.routes())

    def application(self) -> web.Application:
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        exchange = _Exchange(
            method=request.method,
            path=request.path,
            query=request.query,
            headers=request.headers,
            raw=await request.read(),
            content_type=request.content_type if request.body_exists else "",
            started=self.context.clock.now(),
            spec=self.api.spec_for(request.path),
        )
        if found := self.router.match(request.method, request.path):
            exchange.route, exchange.path_params = found
        exchange.operation = exchange.spec.find_operation(request.method, request.path)
        self.context.state.advance()
        if self.context.clock.now() < self.context.outages.get(self.api.cloud, 0.0):
            exchange.aborted = True  # the API is down: nothing runs, nothing is answered
            exchange.fault = Fault(self.api.cloud, "outage", exchange.operation, count=0)
        reply = Reply(0) if exchange.aborted else await self._answer(exchange)
        data = None if exchange.aborted else await self._after(exchange, reply, _encode(reply))
        self._record(exchange, reply.status if data is not None else 0, started)
        if data is None:
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError  # aiohttp: the connection is gone, send nothing
        return web.Response(
            status=reply.status,
            body=data,
            headers={**reply.headers, "Content-Type": reply.content_type},
        )

    async def _answer(self, exchange: _Exchange) -> Reply:
        api = self.api
        if not api.authenticate(exchange.method, exchange.path, exchange.query, exchange.headers):
            return self._finish(exchange, api.unauthorized())
        exchange.authenticated = True
        if (throttled := api.admit()) is not None:
            return self._finish(exchange, throttled)
        in_spec, problems = exchange.spec.check_request(exchange.spec_request)
        if not in_spec or problems:
            exchange.violation = "; ".join(problems)
            self._violate(exchange, "request", 0, exchange.violation)
            reply = (
                api.not_found(problems[0]) if not in_spec else api.invalid(exchange.spec, problems)
            )
            return self._finish(exchange, reply)
        if exchange.route is None:
            return self._finish(exchange, api.not_found(f"{exchange.path} is not implemented"))
        exchange.fault = self.context.faults.take(
            api.cloud, exchange.operation, exchange.path, exchange.method
        )
        if (early := await self._fault_before(exchange)) is not None:
            return self._finish(exchange, early)
        reply = self._run(exchange)
        if exchange.fault is not None and exchange.fault.kind in AFTER_REPLIES:
            self._finish(exchange, reply)  # the operation's own answer is checked, then lost
            reply = self._fault_reply(exchange.fault.kind, exchange.fault)
        return self._finish(exchange, reply)

    def _run(self, exchange: _Exchange) -> Reply:
        assert exchange.route is not None
        call = Call(
            path_params=exchange.path_params,
            query=exchange.query,
            headers=exchange.headers,
            body=_decode(exchange.raw, exchange.content_type),
        )
        try:
            return exchange.route.handler(call)
        except ApiError as error:
            return error.reply
        except Exception as error:  # a sim bug: answer like an outage, record it
            log.exception(
                "simulated %s crashed on %s %s", self.api.cloud, exchange.method, exchange.path
            )
            self._violate(exchange, "response", 500, f"simulator error: {error!r}")
            return self.api.internal_error()

    def _finish(self, exchange: _Exchange, reply: Reply) -> Reply:
        """Add the cloud's headers and check the answer against the spec."""
        if reply.raw is not None or exchange.aborted:
            return reply  # a gateway's page or no answer: not the API's to check
        if exchange.authenticated:
            reply = attrs.evolve(reply, headers={**self.api.headers(), **reply.headers})
        problems = self._response_problems(exchange, reply)
        if problems:
            self._violate(exchange, "response", reply.status, "; ".join(problems))
        return reply

    def _response_problems(self, exchange: _Exchange, reply: Reply) -> list[str]:
        spec_response = SpecResponse(
            reply.status, _encode(reply), reply.content_type, reply.headers.items()
        )
        problems = None
        if exchange.route is not None:
            problems = exchange.spec.check_response(exchange.spec_request, spec_response)
        if problems is None:
            problems = self.api.error_model_problems(reply)
        return problems

    async def _fault_before(self, exchange: _Exchange) -> Reply | None:
        """The answer of a fault that strikes before the operation runs, if any."""
        fault = exchange.fault
        if fault is None:
            return None
        if fault.kind in ("reset", "timeout-before"):
            if fault.kind == "timeout-before":
                await self._pause(fault.seconds, self.context.config.hang_seconds)
            exchange.aborted = True
            return Reply(0)
        if fault.kind == "slow":
            await self._pause(fault.seconds, self.context.config.slow_seconds)
            return None
        if fault.kind in BEFORE_REPLIES:
            return self._fault_reply(fault.kind, fault)
        return None

    def _fault_reply(self, kind: str, fault: Fault) -> Reply:
        status = int(kind.partition("-")[0])
        if status == 429:
            return self._rate_limited(fault)
        if status == 503:
            return self.api.unavailable()
        if kind in GATEWAY:
            return gateway_error(status)
        return self.api.internal_error()

    def _rate_limited(self, fault: Fault) -> Reply:
        """429: Retry-After as armed; a rated one only where the cloud documents it."""
        seconds = max(1, math.ceil(fault.retry_after or 1.0))
        reply = self.api.rate_limited(seconds)
        if fault.retry_after is None or (fault.rated and not self.api.retry_after_documented):
            headers = {k: v for k, v in reply.headers.items() if k.lower() != "retry-after"}
            reply = attrs.evolve(reply, headers=headers)
        return reply

    async def _after(self, exchange: _Exchange, reply: Reply, data: bytes) -> bytes | None:
        """Faults that strike after the operation ran: hang-and-drop, malformed body."""
        fault = exchange.fault
        if fault is None:
            return data
        if fault.kind == "timeout":
            await self._pause(fault.seconds, self.context.config.hang_seconds)
            return None
        if fault.kind == "drop":
            return None
        if fault.kind == "malformed":
            return _malform(data, fault.variant)
        return data

    async def _pause(self, seconds: float | None, default: float) -> None:
        """Sleep, cut short when the simulator stops."""
        delay = default if seconds is None else seconds
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.context.stopping.wait(), delay)

    def _violate(self, exchange: _Exchange, direction: str, status: int, message: str) -> None:
        self.context.violations.append(
            Violation(
                cloud=self.api.cloud,
                direction=direction,
                method=exchange.method,
                path=exchange.path,
                operation=exchange.operation,
                status=status,
                message=message,
                time=self.context.clock.now(),
            )
        )
        if direction == "response":
            log.error("simulated %s answered off-spec: %s", self.api.cloud, message)

    def _record(self, exchange: _Exchange, status: int, started: float) -> None:
        self.context.ledger.append(
            LedgerEntry(
                cloud=self.api.cloud,
                method=exchange.method,
                path=exchange.path,
                operation=exchange.operation,
                status=status,
                body=_decode(exchange.raw, exchange.content_type, lenient=True),
                time=exchange.started,
                query=dict(exchange.query.items()),
                violation=exchange.violation,
                fault=exchange.fault.kind if exchange.fault else None,
                duration=time.perf_counter() - started,
            )
        )


def _decode(raw: bytes, content_type: str, *, lenient: bool = False) -> Any:
    if not raw:
        return None
    text = raw.decode("utf-8", errors="replace")
    if is_json(content_type) or lenient:
        try:
            return json.loads(text)
        except ValueError:
            return text if lenient else None
    return text


def gateway_error(status: int) -> Reply:
    """What a load balancer in front of an API answers: an HTML page, not the API's JSON."""
    title = {502: "502 Bad Gateway", 504: "504 Gateway Time-out"}.get(status, str(status))
    page = f"<html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>\n"
    return Reply(status, content_type="text/html", raw=page.encode())


def _encode(reply: Reply) -> bytes:
    if reply.raw is not None:
        return reply.raw
    if reply.body is None:
        return b""
    return json.dumps(reply.body, separators=(",", ":")).encode()


def _malform(data: bytes, variant: str) -> bytes:
    if variant == "wrong-types" and data:
        return json.dumps(_wrong_types(json.loads(data))).encode()
    return data[: max(1, len(data) // 2)]


def _wrong_types(value: Any) -> Any:
    """Every leaf swapped for a value of another JSON type."""
    if isinstance(value, dict):
        return {k: _wrong_types(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_wrong_types(v) for v in value]
    if isinstance(value, str):
        return 12345
    if isinstance(value, bool) or value is None:
        return "oops"
    return str(value)
