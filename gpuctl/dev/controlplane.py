"""A real local Kubernetes control plane: etcd plus kube-apiserver, envtest-style.

`ControlPlane` starts both from binaries built by `make controlplane` (or from
`$KUBEBUILDER_ASSETS`), waits for `/readyz` and writes an admin kubeconfig. The
API server enforces RBAC; identities come from a static token file (the admin in
`system:masters` plus any `TokenUser` given at start) and from client
certificates that `kubeconfig_for()` mints at any time.

No child may outlive its parent: each child runs in its own session (Ctrl-C in a
terminal reaches only us, and we stop the children in order) and carries
PR_SET_PDEATHSIG=SIGKILL, so the kernel kills it if our process dies first.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import shutil
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

from gpuctl.dev import pki
from gpuctl.dev.process import ChildProcess

BINARIES = ("etcd", "kube-apiserver", "kubectl")
ADMIN_USER = "gpuctl-admin"


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


def find_binaries() -> Path:
    """The directory holding etcd, kube-apiserver and kubectl.

    `$KUBEBUILDER_ASSETS` wins (envtest binaries); otherwise `bin/k8s` of the
    checkout, as built by `make controlplane`.
    """
    candidates: list[Path] = []
    if assets := os.environ.get("KUBEBUILDER_ASSETS"):
        candidates.append(Path(assets))
    if root := repo_root():
        candidates.append(root / "bin" / "k8s")
    for directory in candidates:
        if all((directory / name).is_file() for name in BINARIES):
            return directory
    searched = ", ".join(str(c) for c in candidates) or "nothing"
    raise ControlPlaneError(
        f"control-plane binaries {BINARIES} not found (searched {searched}); "
        "run `make controlplane`"
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

    admin: TokenUser = attrs.field(
        factory=lambda: TokenUser(ADMIN_USER, ("system:masters",)), init=False
    )
    port: int = attrs.field(default=0, init=False)
    etcd_url: str = attrs.field(default="", init=False)
    ca: pki.CA | None = attrs.field(default=None, init=False)
    ready_seconds: float = attrs.field(default=0.0, init=False)
    _owns_workdir: bool = attrs.field(default=False, init=False)
    _etcd: ChildProcess | None = attrs.field(default=None, init=False)
    _apiserver: ChildProcess | None = attrs.field(default=None, init=False)

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
        children = (self._etcd, self._apiserver)
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
        except BaseException:
            await self.stop()
            raise
        self.ready_seconds = time.monotonic() - started

    async def stop(self) -> None:
        """Stop the API server, then etcd; remove the directory we created."""
        for child in (self._apiserver, self._etcd):
            if child is not None:
                await child.stop()
        if self._owns_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

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
            "--authorization-mode=RBAC",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true",
            # No kube-controller-manager runs here to lift the not-ready taint this
            # plugin puts on new Nodes, so it is off too (envtest disables ServiceAccount).
            "--disable-admission-plugins=ServiceAccount,TaintNodesByCondition",
            f"--service-account-issuer=https://127.0.0.1:{self.port}/",
            f"--service-account-key-file={pki_dir / 'sa.pub'}",
            f"--service-account-signing-key-file={pki_dir / 'sa.key'}",
            "--enable-bootstrap-token-auth=true",
            *self.extra_apiserver_args,
        ]

    async def _wait_ready(self, child: ChildProcess) -> None:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        headers = {"Authorization": f"Bearer {self.admin.token}"}
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
                    async with session.get(
                        f"{self.url}/readyz", ssl=context, headers=headers
                    ) as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise ControlPlaneError(
            f"kube-apiserver not ready after {self.startup_timeout}s:\n{child.log_tail()}"
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


def _safe(name: str) -> str:
    """A file-name-safe form of a user name (no ':' — kubeconfig loaders split paths on it)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
