"""A real local Kubernetes cluster's control plane, kubeadm-style.

`ControlPlane` starts etcd, kube-apiserver, kube-controller-manager and
kube-scheduler from binaries built by `make controlplane` (etcd, kube-apiserver
and kubectl may come from `$KUBEBUILDER_ASSETS`), waits for each to be healthy,
creates the objects `kubeadm init` creates for joining machines
(`gpuctl.dev.kubeadm`) and writes an admin kubeconfig. For failure tests,
`restart_apiserver()` and `restart_etcd()` crash (SIGKILL) and restart one of them
in place, keeping ports and data.

The API server authorizes with `Node,RBAC` and admits with `NodeRestriction`, as
a kubeadm cluster does; anonymous requests are authenticated only for the paths
token discovery and health checks need (an AuthenticationConfiguration with
anonymous conditions), and RBAC lets `system:anonymous` read `cluster-info` only.
Identities come from a static token file (the admin in `system:masters` plus any
`TokenUser` given at start), from client certificates that `kubeconfig_for()`
mints at any time, and from bootstrap tokens (kube-system Secrets).

No child may outlive its parent: each child runs in its own session (Ctrl-C in a
terminal reaches only us, and we stop the children in order) and carries
PR_SET_PDEATHSIG=SIGKILL, so the kernel kills it if our process dies first.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import ssl
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import aiohttp
import attrs
import yaml

from gpuctl.dev import kubeadm, pki
from gpuctl.dev.components import ComponentPaths, controller_manager_args, scheduler_args
from gpuctl.dev.process import ChildProcess

log = logging.getLogger(__name__)

BINARIES = ("etcd", "kube-apiserver", "kubectl")
COMPONENTS = ("kube-controller-manager", "kube-scheduler")
ADMIN_USER = "gpuctl-admin"
KUBERNETES_VERSION = "v1.37.2"  # what hack/controlplane builds (a unit test checks)
# Anonymous requests are authenticated on these paths only: kubeadm's token
# discovery reads cluster-info before it trusts anything, and health checks.
ANONYMOUS_PATHS = (
    "/api/v1/namespaces/kube-public/configmaps/cluster-info",
    "/livez",
    "/readyz",
    "/healthz",
)


class ControlPlaneError(RuntimeError):
    """The control plane could not be found, started or made ready."""


@attrs.frozen
class TokenUser:
    """An identity in the static token file."""

    name: str
    groups: tuple[str, ...] = ()
    token: str = attrs.field(factory=lambda: secrets.token_hex(16))


def repo_root() -> Path | None:
    """The source checkout this package runs from, if any (holds hack/controlplane)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "hack" / "controlplane" / "go.mod").is_file():
            return parent
    return None


def find_binaries(names: Sequence[str] = BINARIES) -> Path:
    """The directory holding all of `names` (default etcd, kube-apiserver and kubectl).

    `$KUBEBUILDER_ASSETS` wins (envtest binaries); otherwise `bin/k8s` of the
    checkout, as built by `make controlplane`. envtest ships no controller-manager,
    scheduler or node agent: those are found in `bin/k8s`.
    """
    candidates: list[Path] = []
    if assets := os.environ.get("KUBEBUILDER_ASSETS"):
        candidates.append(Path(assets))
    if root := repo_root():
        candidates.append(root / "bin" / "k8s")
    for directory in candidates:
        if all((directory / name).is_file() for name in names):
            return directory
    searched = ", ".join(str(c) for c in candidates) or "nothing"
    raise ControlPlaneError(
        f"binaries {tuple(names)} not found (searched {searched}); run `make controlplane`"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@attrs.define
class ControlPlane:
    """etcd + kube-apiserver on free loopback ports, in a temporary directory.

    Use as `async with ControlPlane() as cp:`; `cp.kubeconfig` is the admin
    kubeconfig. `users` go into the static token file.
    """

    users: Sequence[TokenUser] = ()
    workdir: Path | None = None
    binaries: Path | None = None
    startup_timeout: float = 60.0
    extra_apiserver_args: Sequence[str] = ()
    # How long a Node may go without a heartbeat before kube-controller-manager marks it
    # Unknown (kubeadm's default is 40s; short here so tests see it quickly).
    node_monitor_grace: str = "20s"

    admin: TokenUser = attrs.field(
        factory=lambda: TokenUser(ADMIN_USER, ("system:masters",)), init=False
    )
    port: int = attrs.field(default=0, init=False)
    etcd_url: str = attrs.field(default="", init=False)
    ca: pki.CA | None = attrs.field(default=None, init=False)
    ready_seconds: float = attrs.field(default=0.0, init=False)
    controller_manager_kubeconfig: Path | None = attrs.field(default=None, init=False)
    scheduler_kubeconfig: Path | None = attrs.field(default=None, init=False)
    _owns_workdir: bool = attrs.field(default=False, init=False)
    _etcd: ChildProcess | None = attrs.field(default=None, init=False)
    _apiserver: ChildProcess | None = attrs.field(default=None, init=False)
    _controller_manager: ChildProcess | None = attrs.field(default=None, init=False)
    _scheduler: ChildProcess | None = attrs.field(default=None, init=False)
    _supervisors: list[asyncio.Task[None]] = attrs.field(factory=list, init=False)
    restarts: dict[str, int] = attrs.field(factory=dict, init=False)

    # -- public surface -------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def dir(self) -> Path:
        if self.workdir is None:
            raise ControlPlaneError("control plane not started")
        return self.workdir

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self.dir / "pki" / "ca.crt"

    @property
    def kubectl(self) -> Path:
        return self._bin() / "kubectl"

    @property
    def pids(self) -> list[int]:
        children = (self._etcd, self._apiserver, self._controller_manager, self._scheduler)
        return [c.process.pid for c in children if c is not None and c.process is not None]

    async def __aenter__(self) -> ControlPlane:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        started = time.monotonic()
        self._prepare_dir()
        try:
            self._write_pki()
            await self._start_etcd()
            self.port = free_port()
            await self.start_apiserver()
            self._write_kubeconfig(self.kubeconfig, self._token_user_entry(self.admin))
            await self._start_components()
        except BaseException:
            await self.stop()
            raise
        self.ready_seconds = time.monotonic() - started

    async def stop(self) -> None:
        """Stop the scheduler, controller-manager, API server, then etcd; remove our directory."""
        for task in self._supervisors:
            task.cancel()
        for task in self._supervisors:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._supervisors.clear()
        children = (self._scheduler, self._controller_manager, self._apiserver, self._etcd)
        for child in children:
            if child is not None:
                await child.stop()
        if self._owns_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def ca_hash(self) -> str:
        """kubeadm's `--discovery-token-ca-cert-hash` for this cluster."""
        return pki.ca_public_key_hash(self.ca_file.read_bytes())

    async def stop_apiserver(self) -> None:
        """Stop only kube-apiserver (etcd keeps the data); for restart tests."""
        if self._apiserver is not None:
            await self._apiserver.stop()

    async def start_apiserver(self) -> None:
        """(Re)start kube-apiserver on the same port and wait until it is ready."""
        self._apiserver = ChildProcess(
            "kube-apiserver", self._apiserver_args(), self.dir / "apiserver.log"
        )
        await self._apiserver.start()
        await self._wait_ready(self._apiserver)

    async def restart_apiserver(self, *, kill: bool = True) -> None:
        """Restart kube-apiserver on the same port (etcd keeps the data) and wait until it
        is ready. `kill`: SIGKILL it, as a crash does (a graceful stop waits ~10 s for
        open watches to end); else SIGTERM."""
        if kill and self._apiserver is not None and self._apiserver.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._apiserver.pid, signal.SIGKILL)
        await self.stop_apiserver()  # reaps it
        await self.start_apiserver()

    async def restart_etcd(self, *, kill: bool = True) -> None:
        """Restart etcd with the same data and ports and wait until it serves again;
        kube-apiserver keeps running and reconnects (its watch cache reinitialises).
        `kill`: SIGKILL it, as a crash does; else SIGTERM."""
        etcd = self._etcd
        if etcd is None:
            raise ControlPlaneError("control plane not started")
        if kill and etcd.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(etcd.pid, signal.SIGKILL)
        await etcd.stop()  # reaps it
        await etcd.start()
        await self._wait_etcd()

    async def _wait_etcd(self) -> None:
        """Until etcd's /health says it is healthy (it answers once it has its data)."""
        deadline = time.monotonic() + self.startup_timeout
        timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while time.monotonic() < deadline:
                if self._etcd is not None and not self._etcd.running:
                    raise ControlPlaneError(f"etcd exited:\n{self._etcd.log_tail()}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError, ValueError):
                    async with session.get(f"{self.etcd_url}/health") as response:
                        health = await response.json(content_type=None)
                        if response.status == 200 and health.get("health") == "true":
                            return
                await asyncio.sleep(0.1)
        raise ControlPlaneError(f"etcd not healthy after {self.startup_timeout}s")

    def kubeconfig_for(self, user: str, groups: Sequence[str] = ()) -> Path:
        """A kubeconfig authenticating as `user` in `groups` by client certificate."""
        if self.ca is None:
            raise ControlPlaneError("control plane not started")
        leaf = self.ca.issue(user, tuple(groups))
        path = self.dir / "users" / f"{_safe(user)}-{secrets.token_hex(4)}.kubeconfig"
        path.parent.mkdir(exist_ok=True)
        entry = {
            "client-certificate-data": _b64(leaf.cert_pem),
            "client-key-data": _b64(leaf.key_pem),
        }
        self._write_kubeconfig(path, entry)
        return path

    def token_kubeconfig(self, user: TokenUser) -> Path:
        """A kubeconfig for one of the static-token users given at start."""
        path = self.dir / "users" / f"token-{_safe(user.name)}.kubeconfig"
        path.parent.mkdir(exist_ok=True)
        self._write_kubeconfig(path, self._token_user_entry(user))
        return path

    # -- internals ------------------------------------------------------------

    def _bin(self) -> Path:
        if self.binaries is None:
            self.binaries = find_binaries()
        return self.binaries

    def _prepare_dir(self) -> None:
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="gpuctl-cp-"))
            self._owns_workdir = True
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "pki").mkdir(exist_ok=True)

    def _write_pki(self) -> None:
        pki_dir = self.dir / "pki"
        self.ca = pki.CA.create()
        self.ca_file.write_bytes(self.ca.cert_pem)
        serving = self.ca.issue(
            "kube-apiserver", server_ips=("127.0.0.1",), server_dns=("localhost", "kubernetes")
        )
        (pki_dir / "apiserver.crt").write_bytes(serving.cert_pem)
        (pki_dir / "apiserver.key").write_bytes(serving.key_pem)
        (pki_dir / "ca.key").write_bytes(self.ca.key_pem)
        (pki_dir / "ca.key").chmod(0o600)
        (pki_dir / "authentication.yaml").write_text(_authentication_config())
        pki.write_service_account_keys(pki_dir)
        rows = [self.admin, *self.users]
        lines = [f'{u.token},{u.name},{u.name},"{",".join(u.groups)}"' for u in rows]
        (pki_dir / "tokens.csv").write_text("\n".join(lines) + "\n")

    async def _start_etcd(self) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        args = [
            str(self._bin() / "etcd"),
            "--name=default",
            f"--data-dir={self.dir / 'etcd'}",
            f"--listen-client-urls={self.etcd_url}",
            f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=default=http://127.0.0.1:{peer}",
            "--unsafe-no-fsync=true",
            "--quota-backend-bytes=8589934592",
        ]
        self._etcd = ChildProcess("etcd", args, self.dir / "etcd.log")
        await self._etcd.start()

    def _apiserver_args(self) -> list[str]:
        pki_dir = self.dir / "pki"
        return [
            str(self._bin() / "kube-apiserver"),
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.port}",
            f"--cert-dir={pki_dir}",
            f"--tls-cert-file={pki_dir / 'apiserver.crt'}",
            f"--tls-private-key-file={pki_dir / 'apiserver.key'}",
            f"--client-ca-file={self.ca_file}",
            f"--token-auth-file={pki_dir / 'tokens.csv'}",
            f"--authentication-config={pki_dir / 'authentication.yaml'}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true",
            # As envtest: pods need no ServiceAccount token volume (no kubelet mounts one).
            "--disable-admission-plugins=ServiceAccount",
            f"--service-account-issuer=https://127.0.0.1:{self.port}/",
            f"--service-account-key-file={pki_dir / 'sa.pub'}",
            f"--service-account-signing-key-file={pki_dir / 'sa.key'}",
            "--enable-bootstrap-token-auth=true",
            *self.extra_apiserver_args,
        ]

    async def _wait_ready(self, child: ChildProcess) -> None:
        """Until kube-apiserver answers /readyz (as the admin, verifying its certificate)."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        headers = {"Authorization": f"Bearer {self.admin.token}"}
        await self._wait_ok(child, f"{self.url}/readyz", context, headers)

    async def _wait_healthy(self, child: ChildProcess, port: int) -> None:
        """Until a component answers /healthz (self-signed serving certificate)."""
        await self._wait_ok(child, f"https://127.0.0.1:{port}/healthz", False, {})

    async def _wait_ok(
        self,
        child: ChildProcess,
        url: str,
        context: ssl.SSLContext | bool,
        headers: dict[str, str],
    ) -> None:
        """Poll `url` until 200; fail at once if `child` or etcd exits, or at the timeout."""
        deadline = time.monotonic() + self.startup_timeout
        timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while time.monotonic() < deadline:
                for dependency in (self._etcd, child):
                    if dependency is not None and not dependency.running:
                        raise ControlPlaneError(
                            f"{dependency.name} exited:\n{dependency.log_tail()}"
                        )
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                    async with session.get(url, ssl=context, headers=headers) as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise ControlPlaneError(
            f"{child.name} not ready after {self.startup_timeout}s:\n{child.log_tail()}"
        )

    async def _start_components(self) -> None:
        """kube-controller-manager and kube-scheduler, then kubeadm's join objects."""
        self.controller_manager_kubeconfig = self.kubeconfig_for("system:kube-controller-manager")
        self.scheduler_kubeconfig = self.kubeconfig_for("system:kube-scheduler")
        paths = ComponentPaths(
            bin_dir=find_binaries(COMPONENTS),
            pki_dir=self.dir / "pki",
            controller_manager_kubeconfig=self.controller_manager_kubeconfig,
            scheduler_kubeconfig=self.scheduler_kubeconfig,
        )
        cm_port, scheduler_port = free_port(), free_port()
        self._controller_manager = ChildProcess(
            "kube-controller-manager",
            controller_manager_args(paths, cm_port, self.node_monitor_grace),
            self.dir / "controller-manager.log",
        )
        self._scheduler = ChildProcess(
            "kube-scheduler", scheduler_args(paths, scheduler_port), self.dir / "scheduler.log"
        )
        await self._controller_manager.start()
        await self._scheduler.start()
        await self._create_join_objects()
        await self._wait_healthy(self._controller_manager, cm_port)
        await self._wait_healthy(self._scheduler, scheduler_port)
        loop = asyncio.get_running_loop()
        for child in (self._controller_manager, self._scheduler):
            self._supervisors.append(loop.create_task(self._supervise(child)))

    async def _supervise(self, child: ChildProcess) -> None:
        """Start the component again whenever it exits, as the kubelet restarts kubeadm's
        static pods (kube-controller-manager exits, by design, when it cannot reach the
        API server for long enough, e.g. while a test restarts it)."""
        while True:
            code = await child.wait()
            if child.process is None:  # stopped on purpose
                return
            self.restarts[child.name] = self.restarts.get(child.name, 0) + 1
            log.warning("%s exited (%s); restarting it:\n%s", child.name, code, child.log_tail(5))
            await asyncio.sleep(1.0)
            await child.start()

    async def _create_join_objects(self) -> None:
        objects = kubeadm.init_objects(self.url, self.ca_file.read_bytes(), KUBERNETES_VERSION)
        context = ssl.create_default_context(cafile=str(self.ca_file))
        headers = {"Authorization": f"Bearer {self.admin.token}"}
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
            for path, body in objects:
                async with session.post(self.url + path, json=body, ssl=context) as response:
                    if response.status not in (201, 409):
                        raise ControlPlaneError(
                            f"creating {body['kind']} {body['metadata']['name']}: "
                            f"{response.status} {await response.text()}"
                        )

    def _token_user_entry(self, user: TokenUser) -> dict[str, str]:
        return {"token": user.token}

    def _write_kubeconfig(self, path: Path, user_entry: dict[str, str]) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "gpuctl-dev",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority-data": _b64(self.ca_file.read_bytes()),
                    },
                }
            ],
            "users": [{"name": "user", "user": user_entry}],
            "contexts": [
                {"name": "gpuctl-dev", "context": {"cluster": "gpuctl-dev", "user": "user"}}
            ],
            "current-context": "gpuctl-dev",
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)


def _authentication_config() -> str:
    conditions = [{"path": path} for path in ANONYMOUS_PATHS]
    config = {
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "AuthenticationConfiguration",
        "anonymous": {"enabled": True, "conditions": conditions},
    }
    return yaml.safe_dump(config, sort_keys=False)


def _safe(name: str) -> str:
    """A file-name-safe form of a user name (no ':' — kubeconfig loaders split paths on it)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
