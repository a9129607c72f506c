"""The dashboard's HTTP side: one aiohttp application, read-only, served under `/ui/`.

Routes (relative to the mount point):
- `GET /`                the page (Fleet, Offers, Cost, Providers tabs; static/index.html)
- `GET /static/{file}`   the page's script, style sheet and icon, bundled in the package
- `GET /api/snapshot`    the latest snapshot (snapshot.py) as JSON
- `GET /api/stream`      server-sent events: a `snapshot` event whenever something
                         changed (at most every `tick` seconds while costs accrue)
- `GET /api/offers`      every provider's offers (offers.catalog)
- `GET /api/plan?gpu=&count=&capacity=&hours=`  what `gpuctl plan` would choose
Security: only GET and HEAD; every answer carries a strict Content-Security-Policy
(scripts, styles and connections from this origin only, no inline code, no
framing), nosniff, no referrer and no caching; with `allowed_hosts` (set when bound
to loopback) a request whose Host header names another host is refused, so a web
page elsewhere cannot read the dashboard through DNS rebinding. The page renders
every value with textContent: names, labels and cloud errors are never markup.

Snapshots are computed by `run()` (a manager runnable), one per change or tick, and
only while someone is watching; every viewer gets the same bytes.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
from collections.abc import Awaitable, Callable
from importlib import resources

from aiohttp import web

from gpuctl.dashboard import offers
from gpuctl.dashboard.snapshot import build
from gpuctl.dashboard.sources import Sources

log = logging.getLogger(__name__)

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Cross-Origin-Resource-Policy": "same-origin",
}
STATIC_TYPES = {
    "app.js": "text/javascript",
    "app.css": "text/css",
    "favicon.svg": "image/svg+xml",
}
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
KEEPALIVE = 15.0
MIN_INTERVAL = 0.5  # seconds between two snapshots, at least
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _static(name: str) -> bytes:
    return (resources.files("gpuctl.dashboard") / "static" / name).read_bytes()


def host_of(header: str) -> str:
    """The host part of a Host header: `[::1]:8090` -> `[::1]`, `a:1` -> `a`."""
    if header.startswith("["):
        return header.split("]", 1)[0] + "]"
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class Dashboard:
    def __init__(
        self,
        sources: Sources,
        *,
        tick: float = 2.0,
        allowed_hosts: frozenset[str] | None = None,
        clock: Callable[[], datetime.datetime] | None = None,
    ) -> None:
        self.sources = sources
        self.tick = tick
        self.allowed_hosts = allowed_hosts
        self.clock = clock or (lambda: datetime.datetime.now(datetime.UTC))
        self.version = 0
        self.body = b"{}"
        self.viewers = 0
        self._published_at: datetime.datetime | None = None
        self._published = asyncio.Event()
        self._closing = False
        self._plan_lock = asyncio.Lock()
        self._index = _static("index.html")
        self._files = {name: _static(name) for name in STATIC_TYPES}

    # -- snapshots -----------------------------------------------------------------

    def publish(self) -> None:
        """Compute a snapshot now and wake every stream."""
        # Whole seconds: the snapshot's `now` is printed to the second, and the same
        # figures must come out of `gpuctl cost` computed at that printed moment.
        now = self.clock().replace(microsecond=0)
        self.body = json.dumps(build(self.sources, now), separators=(",", ":")).encode()
        self.version += 1
        self._published_at = now
        published, self._published = self._published, asyncio.Event()
        published.set()

    def _stale(self) -> bool:
        at = self._published_at
        return at is None or (self.clock() - at).total_seconds() >= self.tick

    async def run(self) -> None:
        """Publish on every change (and every tick: costs grow) while anyone watches;
        a burst of informer events makes one snapshot per `MIN_INTERVAL`, not one each."""
        seen = -1
        loop = asyncio.get_running_loop()
        last = loop.time() - MIN_INTERVAL
        while True:
            await self.sources.changes.wait(self.tick)
            if self.viewers and (self.sources.changes.version != seen or self._stale()):
                await asyncio.sleep(max(0.0, last + MIN_INTERVAL - loop.time()))
                seen = self.sources.changes.version
                self.publish()
                last = loop.time()

    # -- the application -----------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/", self._page)
        app.router.add_get("/static/{name}", self._file)
        app.router.add_get("/api/snapshot", self._snapshot)
        app.router.add_get("/api/stream", self._stream)
        app.router.add_get("/api/offers", self._offers)
        app.router.add_get("/api/plan", self._plan)
        app.on_shutdown.append(self._close_streams)
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            response: web.StreamResponse = web.Response(status=405, text="read-only\n")
        elif self.allowed_hosts is not None and (
            host_of(request.headers.get("Host", "")) not in self.allowed_hosts
        ):
            response = web.Response(status=421, text="unexpected Host\n")
        else:
            try:
                response = await handler(request)
            except web.HTTPException as err:
                response = web.Response(status=err.status, text=f"{err.reason}\n")
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    async def _page(self, request: web.Request) -> web.Response:
        return web.Response(body=self._index, content_type="text/html", charset="utf-8")

    async def _file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self._files:
            raise web.HTTPNotFound()
        return web.Response(body=self._files[name], content_type=STATIC_TYPES[name])

    async def _snapshot(self, request: web.Request) -> web.Response:
        if self._stale():
            self.publish()
        return web.Response(body=self.body, content_type="application/json")

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        # The headers go out at prepare(), before the middleware could add its own.
        response = web.StreamResponse(
            headers={**SECURITY_HEADERS, "Content-Type": "text/event-stream"}
        )
        await response.prepare(request)
        self.viewers += 1
        try:
            if self._stale():
                self.publish()
            sent = 0
            while not self._closing:
                if sent != self.version:
                    sent = self.version
                    await response.write(b"event: snapshot\ndata: " + self.body + b"\n\n")
                else:
                    await response.write(b": keepalive\n\n")
                published = self._published
                try:
                    async with asyncio.timeout(KEEPALIVE):
                        await published.wait()
                except TimeoutError:
                    pass
        except (ConnectionResetError, ConnectionError):
            pass  # the viewer left
        finally:
            self.viewers -= 1
        return response

    async def _close_streams(self, app: web.Application) -> None:
        self._closing = True
        self._published.set()

    async def _offers(self, request: web.Request) -> web.Response:
        async with self._plan_lock:  # one catalog walk at a time, whatever the viewers
            data = await offers.catalog(self.sources.drivers)
        return web.json_response(data)

    async def _plan(self, request: web.Request) -> web.Response:
        query = request.query
        try:
            wanted = offers.form_request(
                query.get("gpu", ""), query.get("count", "1"), query.get("capacity", "")
            )
            hours = offers.parse_hours(query.get("hours", "1"))
        except offers.FormError as err:
            return web.json_response({"error": str(err)}, status=400)
        async with self._plan_lock:
            data = await offers.plan(
                wanted, hours, self.sources.drivers, self.sources.requests.list(), self.clock()
            )
        return web.json_response(data)
