"""`gpuctl demo`: the whole system on one machine, with a live table, until Ctrl-C.

In order, each step undone in reverse order at the end:

1. a real cluster (`ControlPlane`: etcd, kube-apiserver, kube-controller-manager,
   kube-scheduler, kubeadm's join objects) in `<dir>/controlplane`, emptied first
   so every run starts from a fresh cluster;
2. the simulated clouds (`Simulator`, in this process) whose machines boot by
   running the join data they were given — real `kubeadm join` discovery, TLS
   bootstrap and kubelet code (gpuctl-node-agent): seeded, a few seconds of
   boot, spot interruptions at `--interrupt-rate` per spot instance-hour;
3. the CRDs, the join RBAC of `manifests/join` (kubectl apply -k), namespace
   gpuctl-system;
4. the operator: `gpuctl run --ui` as a child process (demo_operator.py), its log
   in `<dir>/operator.log`, its dashboard at http://127.0.0.1:<port>/ui/ (printed);
5. the objects of `manifests/samples` pointed at the simulator
   (demo_samples.py): Secrets, GPUProviders, then the GPUNodeRequests;
6. a live table of the GPUNodeRequests (demo_board.py, demo_view.py) until all
   of the samples' requests are Ready;
7. the pool act (demo_pool.py, unless `--exit-when-ready`): a GPU Deployment on the
   samples' GPUNodePool scales up (the pool buys the cheapest machine for its pods) and
   back to zero (the empty machine goes, `consolidateAfter` shortened to 10 s); then
   the kubeconfig and commands to try.

It then keeps running (spot interruptions and replacements show in the table)
until SIGINT or SIGTERM, or exits at once with `--exit-when-ready`. Teardown
deletes the pool act's Deployment and the GPUNodePools, then every GPUNodeRequest,
and waits until they are gone — the operator
terminates their machines first — then stops the operator, the simulator and
the control plane. A second Ctrl-C skips the wait for the requests (their
simulated machines end with the simulator anyway); a signal within a second of
the first counts as the same one.

Exit status: 0 after a clean teardown following Ctrl-C/SIGTERM or all-Ready
with `--exit-when-ready`; 1 when `--timeout` passed before all were Ready,
something failed, or requests were left at teardown. The work directory is
removed at a clean exit when it was a temporary one, and kept otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import attrs

from gpuctl.api.install import install_crds
from gpuctl.cli import demo_samples
from gpuctl.cli.demo_board import Board
from gpuctl.cli.demo_operator import OperatorArgs, OperatorError, OperatorProcess
from gpuctl.cli.demo_pool import PoolAct, shorten_consolidation
from gpuctl.cli.demo_view import View, view_for
from gpuctl.controllers.resources import GPUNODEPOOLS, GPUNODEREQUESTS, GPUPROVIDERS
from gpuctl.dev.controlplane import ControlPlane, ControlPlaneError, free_port, repo_root
from gpuctl.dev.manifests import apply_join_rbac
from gpuctl.runtime.client import Client, is_already_exists
from gpuctl.runtime.kubeclient import api_client
from gpuctl.runtime.resources import NAMESPACES, SECRETS
from gpuctl.util.logging import JsonFormatter

if TYPE_CHECKING:  # gpuctl.sim needs the `sim` extra (openapi-core): import it when run
    from gpuctl.sim import Simulator

log = logging.getLogger(__name__)

NAMESPACE = "gpuctl-system"
CLOUDS = ("lambda", "runpod", "paperspace", "crusoe", "hyperstack", "digitalocean")
DEFAULT_SEED = 4  # with 30/h: the first spot machine is interrupted about a minute after boot
DEFAULT_BOOT_SECONDS = 4.0
DEFAULT_INTERRUPT_RATE = 30.0
DEFAULT_TIMEOUT = 300.0
TERMINATE_SECONDS = 2.0
TEARDOWN_TIMEOUT = 90.0
# A second signal this soon after the first is the same Ctrl-C delivered twice (e.g.
# by `timeout`, which signals its child and then its whole process group), not a second.
SIGNAL_DEBOUNCE = 1.0
SIM_REQUESTS_PER_SECOND = 50.0  # the simulator enforces no quota (demo_samples.py)
RESOURCES = {
    "Namespace": NAMESPACES,
    "Secret": SECRETS,
    "GPUProvider": GPUPROVIDERS,
    "GPUNodePool": GPUNODEPOOLS,
    "GPUNodeRequest": GPUNODEREQUESTS,
}


class StopRequestedError(Exception):
    """SIGINT or SIGTERM arrived while the demo was still starting."""


@attrs.frozen
class Options:
    workdir: Path | None
    samples: Path | None
    seed: int = DEFAULT_SEED
    boot_seconds: float = DEFAULT_BOOT_SECONDS
    interrupt_rate: float = DEFAULT_INTERRUPT_RATE
    timeout: float = DEFAULT_TIMEOUT
    exit_when_ready: bool = False
    log_level: str = "info"


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "demo",
        help="run everything locally: control plane, simulated clouds, operator, samples",
        description="Start a local control plane, the simulated GPU clouds and the operator, "
        "apply manifests/samples and show the requests in a live table until all are Ready; "
        "then keep running until Ctrl-C, which tears everything down. See docs/demo.md.",
    )
    add = parser.add_argument
    add("--dir", type=Path, help="work directory, kept at exit (default: a temporary one)")
    add("--samples", type=Path, help="samples directory (default: manifests/samples)")
    add("--seed", type=int, default=DEFAULT_SEED, help=f"simulator seed (default {DEFAULT_SEED})")
    add(
        "--boot-seconds",
        type=float,
        default=DEFAULT_BOOT_SECONDS,
        help=f"simulated launch-to-running time (default {DEFAULT_BOOT_SECONDS:g})",
    )
    add(
        "--interrupt-rate",
        type=float,
        default=DEFAULT_INTERRUPT_RATE,
        help=f"spot interruptions per spot instance-hour (default {DEFAULT_INTERRUPT_RATE:g})",
    )
    add(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds to wait for all requests to be Ready (default {DEFAULT_TIMEOUT:g})",
    )
    add(
        "--exit-when-ready",
        "--no-wait",
        dest="exit_when_ready",
        action="store_true",
        help="tear down and exit 0 once all requests are Ready (for scripts)",
    )
    add("--log-level", default="info", help="log level of the operator and the simulator")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    options = Options(
        workdir=args.dir,
        samples=args.samples,
        seed=args.seed,
        boot_seconds=args.boot_seconds,
        interrupt_rate=args.interrupt_rate,
        timeout=args.timeout,
        exit_when_ready=args.exit_when_ready,
        log_level=args.log_level,
    )
    return asyncio.run(Demo(options, sys.stdout).run())


class Demo:
    def __init__(self, options: Options, out: TextIO) -> None:
        self.options = options
        self.view: View = view_for(out)
        self.stop = asyncio.Event()  # first signal: stop
        self.force = asyncio.Event()  # second signal: stop without waiting for requests
        self._stopped_at = 0.0  # when the first signal arrived
        self.clean = True  # teardown left nothing behind
        self.sim: Simulator | None = None
        self.pools: list[str] = []  # the samples' GPUNodePools, once applied

    async def run(self) -> int:
        self._handle_signals()
        workdir, temporary = self._workdir()
        _log_to(workdir / "demo.log", self.options.log_level)
        self.say(f"work directory {workdir}")
        code = 1
        try:
            async with contextlib.AsyncExitStack() as stack:
                code = await self._demo(stack, workdir)
                self.say("stopping")
        except StopRequestedError:
            code = 0
        except (ControlPlaneError, OperatorError, demo_samples.SampleError, ImportError) as error:
            print(f"gpuctl demo: {error}", file=sys.stderr)
        except Exception as error:  # unexpected: the traceback goes to demo.log
            log.exception("demo failed")
            print(f"gpuctl demo: failed: {error!r} (see demo.log)", file=sys.stderr)
        finally:
            self.view.close()
        code = code if self.clean else 1
        if temporary and code == 0:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            self.say(f"work directory kept: {workdir} (operator.log, demo.log, controlplane/)")
        self.say(f"stopped (exit {code})")
        return code

    def say(self, text: str) -> None:
        self.view.notice(text)

    # -- the steps -------------------------------------------------------------------

    async def _demo(self, stack: contextlib.AsyncExitStack, workdir: Path) -> int:
        cp = await self._control_plane(stack, workdir / "controlplane")
        sim = await self._simulator(stack, cp)
        api = await stack.enter_async_context(await api_client(cp.kubeconfig))
        client = Client(api)
        await install_crds(api)
        await apply_join_rbac(cp)
        await _ensure_namespace(client)
        self._check_stop()
        operator = await self._operator(stack, cp, workdir)
        # The board watches before anything is applied, so that whatever gets created
        # is shown and, at the end, deleted — even if applying fails half-way.
        board = Board(client, (), self.view)
        board_task = asyncio.create_task(board.run(), name="demo-board")
        stack.push_async_callback(_cancel, board_task)
        stack.push_async_callback(self._delete_requests, client, board, operator)
        stack.push_async_callback(self._delete_pools, client)  # first: nothing buys again
        board.names = await self._apply_samples(client, sim, cp)
        return await self._until_done(board, operator, cp, client)

    async def _control_plane(self, stack: contextlib.AsyncExitStack, where: Path) -> ControlPlane:
        shutil.rmtree(where, ignore_errors=True)  # a fresh cluster each run
        self.say("starting the cluster (etcd, kube-apiserver, controller-manager, scheduler)")
        cp = await stack.enter_async_context(ControlPlane(workdir=where))
        self.say(f"control plane ready at {cp.url} in {cp.ready_seconds:.1f}s")
        self._check_stop()
        return cp

    async def _simulator(self, stack: contextlib.AsyncExitStack, cp: ControlPlane) -> Simulator:
        try:
            from gpuctl.sim import SimConfig, Simulator  # noqa: PLC0415 - the `sim` extra
        except ImportError as error:
            raise ImportError(f"{error}: install the `sim` extra (make install)") from error

        o = self.options
        config = SimConfig(
            seed=o.seed,
            boot_seconds=o.boot_seconds,
            terminate_seconds=TERMINATE_SECONDS,
            interrupt_rate=o.interrupt_rate,
            kubeconfig=cp.kubeconfig,
            ca_file=cp.ca_file,
            execute_join_data=True,
        )
        self.sim = sim = await stack.enter_async_context(Simulator(config))
        clouds = ", ".join(f"{c} {sim.endpoint(c)}" for c in CLOUDS)
        self.say(f"simulated clouds: {clouds}; control API {sim.control_url}")
        self.say(
            f"  seed {o.seed}, boot {o.boot_seconds:g}s, "
            f"{o.interrupt_rate:g} spot interruptions per spot instance-hour"
        )
        self._check_stop()
        return sim

    async def _operator(
        self, stack: contextlib.AsyncExitStack, cp: ControlPlane, workdir: Path
    ) -> OperatorProcess:
        args = OperatorArgs(
            kubeconfig=cp.kubeconfig,
            join_endpoint=cp.url,
            health_port=free_port(),
            namespace=NAMESPACE,
            log_level=self.options.log_level,
        )
        operator = OperatorProcess(args, workdir / "operator.log")
        stack.push_async_callback(self._stop_operator, operator)
        await operator.start()
        self.say(f"operator running: gpuctl run (pid {operator.pid}), log {operator.log_path}")
        self.say(f"dashboard: {operator.dashboard_url}")
        self._check_stop()
        return operator

    async def _apply_samples(self, client: Client, sim: Simulator, cp: ControlPlane) -> list[str]:
        directory = self.options.samples or _default_samples()
        target = demo_samples.SimTarget(
            endpoints={c: sim.endpoint(c) for c in CLOUDS},
            api_keys={c: sim.api_key(c) for c in CLOUDS},
            api_server=cp.url,
            paperspace_templates=tuple(sim.config.catalog("paperspace").templates),
            requests_per_second=SIM_REQUESTS_PER_SECOND,
        )
        objects = demo_samples.ordered(demo_samples.point_at(demo_samples.load(directory), target))
        shorten_consolidation(objects)
        self.pools = [o["metadata"]["name"] for o in demo_samples.of_kind(objects, "GPUNodePool")]
        for obj in objects:
            await _create(client, obj)
        self.say(f"applied {_display_path(directory)}: {_summary(objects)}")
        return [o["metadata"]["name"] for o in demo_samples.of_kind(objects, "GPUNodeRequest")]

    async def _until_done(
        self, board: Board, operator: OperatorProcess, cp: ControlPlane, client: Client
    ) -> int:
        started = time.monotonic()
        outcome = await _first(
            self.options.timeout,
            stop=self.stop.wait(),
            operator=operator.wait(),
            ready=board.wait(board.all_ready),
        )
        if outcome == "stop":
            return 0
        if outcome == "operator":
            self.say(f"the operator exited:\n{operator.log_tail()}")
            return 1
        if outcome is None:
            self.say(f"timed out after {self.options.timeout:g}s waiting for all requests Ready")
            return 1
        seconds = time.monotonic() - started
        self.say(f"all {len(board.names)} requests Ready in {seconds:.1f}s")
        if self.options.exit_when_ready:
            return 0
        if self.pools:
            act = PoolAct(client, self.pools[0], self.say)
            if await _first(None, stop=self.stop.wait(), act=act.run()) == "stop":
                return 0
        self.say(_try_these(cp, operator))
        if await _first(None, stop=self.stop.wait(), operator=operator.wait()) == "operator":
            self.say(f"the operator exited:\n{operator.log_tail()}")
            return 1
        return 0

    # -- teardown --------------------------------------------------------------------

    async def _delete_requests(
        self, client: Client, board: Board, operator: OperatorProcess
    ) -> None:
        if not await _request_names(client):
            return
        self.say(
            "deleting the GPUNodeRequests; the operator terminates their machines "
            "(Ctrl-C again: do not wait)"
        )
        outcome = await _first(
            TEARDOWN_TIMEOUT,
            gone=_delete_all(client, board),
            force=self.force.wait(),
            operator=operator.wait(),
        )
        if outcome == "gone":
            left_running, report = self._machines()
            self.clean = self.clean and not left_running
            self.say(f"all requests deleted; {report}")
            return
        self.clean = False
        left = await _request_names(client)
        self.say(
            f"{len(left)} requests not deleted ({', '.join(left)}): "
            "their simulated machines end with the simulator"
        )

    async def _delete_pools(self, client: Client) -> None:
        """The pool act's Deployment, then the pools (their requests go with them)."""
        with contextlib.suppress(Exception):  # the API server is unreachable: nothing to do
            await PoolAct(client, "", self.say).delete()
        for name in self.pools:
            with contextlib.suppress(Exception):  # NotFound: never created, or gone
                await client.delete(GPUNODEPOOLS, name)

    def _machines(self) -> tuple[bool, str]:
        """Whether a simulated machine is still running, and a sentence saying so."""
        if self.sim is None:
            return False, ""
        live = [i for c in CLOUDS for i in self.sim.instances(c) if i.phase.live]
        if live:
            ids = ", ".join(i.id for i in live)
            return True, f"{len(live)} simulated machines still running: {ids}"
        total = sum(len(self.sim.instances(c)) for c in CLOUDS)
        return False, f"no simulated machine left running ({total} launched in all)"

    async def _stop_operator(self, operator: OperatorProcess) -> None:
        if operator.running:
            self.say("stopping the operator")
        await operator.stop()

    # -- plumbing --------------------------------------------------------------------

    def _handle_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._on_signal)

    def _on_signal(self) -> None:
        now = time.monotonic()
        if not self.stop.is_set():
            self.stop.set()
            self._stopped_at = now
        elif now - self._stopped_at > SIGNAL_DEBOUNCE:
            self.force.set()

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise StopRequestedError

    def _workdir(self) -> tuple[Path, bool]:
        if self.options.workdir is not None:
            self.options.workdir.mkdir(parents=True, exist_ok=True)
            return self.options.workdir.resolve(), False
        return Path(tempfile.mkdtemp(prefix="gpuctl-demo-")), True


async def _first(timeout: float | None, **waits: Awaitable[Any]) -> str | None:  # noqa: ASYNC109
    """The name of the first of `waits` to finish (None on timeout); cancels the rest."""
    tasks = {name: asyncio.ensure_future(w) for name, w in waits.items()}
    try:
        done, _ = await asyncio.wait(
            tasks.values(), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
    for name, task in tasks.items():
        if task in done:
            task.result()  # raise what it raised
            return name
    return None


async def _request_names(client: Client) -> list[str]:
    with contextlib.suppress(Exception):  # the API server is unreachable: nothing to do
        listed = await client.list(GPUNODEREQUESTS)
        return [obj["metadata"]["name"] for obj in listed["items"]]
    return []


async def _delete_all(client: Client, board: Board) -> None:
    """Delete every GPUNodeRequest until none is left, also any created meanwhile.

    Asks the API server, not the board's cache, which may not have seen a request
    created just before; checks again at each redraw (a change, or a tick).
    """
    while True:
        listed = await client.list(GPUNODEREQUESTS)
        if not listed["items"]:
            return
        for obj in listed["items"]:
            if not obj["metadata"].get("deletionTimestamp"):
                with contextlib.suppress(Exception):  # NotFound: gone meanwhile
                    await client.delete(GPUNODEREQUESTS, obj["metadata"]["name"])
        await board.next_draw()


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _ensure_namespace(client: Client) -> None:
    try:
        await client.create(NAMESPACES, {"metadata": {"name": NAMESPACE}})
    except Exception as error:
        if not is_already_exists(error):
            raise


async def _create(client: Client, obj: dict[str, Any]) -> None:
    resource = RESOURCES.get(obj.get("kind", ""))
    if resource is None:
        raise demo_samples.SampleError(f"the demo does not apply kind {obj.get('kind')}")
    await client.create(resource, obj)


def _summary(objects: Sequence[dict[str, Any]]) -> str:
    parts = []
    for kind in RESOURCES:
        names = [o["metadata"]["name"] for o in demo_samples.of_kind(objects, kind)]
        if names:
            parts.append(f"{kind}s {', '.join(names)}")
    return "; ".join(parts)


def _default_samples() -> Path:
    root = repo_root()
    if root is None:
        raise demo_samples.SampleError("not run from a gpuctl checkout: pass --samples DIR")
    return root / "manifests" / "samples"


def _display_path(path: Path) -> str:
    """`path` relative to the working directory when it is under it (shorter to copy)."""
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(Path.cwd()))
    return str(path)


def _gpuctl_command() -> str:
    beside = Path(sys.executable).parent / "gpuctl"
    return _display_path(beside) if beside.exists() else "gpuctl"


def _try_these(cp: ControlPlane, operator: OperatorProcess) -> str:
    kubeconfig, gpuctl = cp.kubeconfig, _gpuctl_command()
    kubectl = f"{_display_path(cp.kubectl)} --kubeconfig {kubeconfig}"
    return "\n".join(
        [
            f"kubeconfig: {kubeconfig}",
            f"dashboard: {operator.dashboard_url} (open it in a browser)",
            "try, in another terminal:",
            f"    {kubectl} get gnr -w",
            f"    {kubectl} get gnp      # the GPUNodePool: GPUs, machines, $/h",
            f"    {gpuctl} plan -f <a Deployment of GPU pods> --kubeconfig {kubeconfig}",
            f"    {kubectl} get nodes -L gpuctl.io/request",
            f"    {gpuctl} offers --kubeconfig {kubeconfig}",
            f"    {gpuctl} cost --kubeconfig {kubeconfig}",
            f"    curl -s {operator.metrics_url} | grep '^gpuctl_'",
            f"operator log: {operator.log_path}",
            "Ctrl-C deletes the requests, waits for their machines to terminate, stops everything.",
        ]
    )


def _log_to(path: Path, level: str) -> None:
    """This process's logs (simulator, simulated kubelet, API client) go to a file, as JSON."""
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
