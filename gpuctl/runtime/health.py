"""The probe and metrics endpoint: `/healthz`, `/readyz`, `/metrics` on one aiohttp port.

Checks are named functions returning True when healthy (controller-runtime's
`healthz.Checker`, synchronous here: they must only read in-memory state).

- `GET /healthz`: liveness. 200 `ok` while every liveness check passes (by
  default only `ping`, i.e. the event loop answers), else 500.
- `GET /readyz`: readiness. 200 `ok` while every readiness check passes, else 500
  (the manager adds `informers-synced`).
- With `?verbose`, the body lists each check as `[+]name ok` / `[-]name failed`,
  the format of kube-apiserver and controller-runtime; failures are always listed.
- `GET /metrics`: the given Prometheus registry (gpuctl's `REGISTRY` by default)
  in the text format, or OpenMetrics when the scraper asks for it.
- `mount(prefix, app)` before `start()` serves another aiohttp application under a
  path prefix on the same port (the dashboard's `/ui/`, when enabled).

`port=0` binds a free port; `port` reports the bound one after `start()`. The
default host is 127.0.0.1; in a pod the manager is told to bind 0.0.0.0 so the
kubelet can probe it. Access logs are off: probes arrive every few seconds.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from gpuctl.runtime.metrics import REGISTRY

Check = Callable[[], bool]


class HealthServer:
    """Serves the probes and the metrics; see the module docstring."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, registry: CollectorRegistry = REGISTRY
    ) -> None:
        self.host = host
        self._requested_port = port
        self.registry = registry
        self._liveness: dict[str, Check] = {"ping": lambda: True}
        self._readiness: dict[str, Check] = {"ping": lambda: True}
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._mounts: list[tuple[str, web.Application]] = []

    def add_healthz_check(self, name: str, check: Check) -> None:
        self._liveness[name] = check

    def add_readyz_check(self, name: str, check: Check) -> None:
        self._readiness[name] = check

    def mount(self, prefix: str, app: web.Application) -> None:
        """Serve `app` under `prefix` (e.g. "/ui") once started."""
        if self._runner is not None:
            raise RuntimeError("mount() after start()")
        self._mounts.append((prefix, app))

    @property
    def port(self) -> int | None:
        """The bound port once started, else None."""
        return self._port

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._handle_healthz)
        app.router.add_get("/readyz", self._handle_readyz)
        app.router.add_get("/metrics", self._handle_metrics)
        for prefix, sub in self._mounts:
            app.add_subapp(prefix, sub)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._requested_port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self._port = None

    async def _handle_healthz(self, request: web.Request) -> web.Response:
        return _report(self._liveness, verbose="verbose" in request.query)

    async def _handle_readyz(self, request: web.Request) -> web.Response:
        return _report(self._readiness, verbose="verbose" in request.query)

    async def _handle_metrics(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(self.registry), headers={"Content-Type": content_type})


def _passes(check: Check) -> bool:
    try:
        return bool(check())
    except Exception:
        return False  # a check that breaks is a failing check


def _report(checks: dict[str, Check], *, verbose: bool) -> web.Response:
    results = {name: _passes(check) for name, check in checks.items()}
    healthy = all(results.values())
    if healthy and not verbose:
        return web.Response(text="ok")
    lines = [
        f"[+]{name} ok" if passed else f"[-]{name} failed"
        for name, passed in results.items()
        if verbose or not passed
    ]
    lines.append("check passed" if healthy else "check failed")
    return web.Response(status=200 if healthy else 500, text="\n".join(lines) + "\n")
