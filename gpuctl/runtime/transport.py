"""HTTPS to the API server without kubernetes_asyncio's generated client: config + session.

Importing `kubernetes_asyncio.client` loads every generated API and model class: 38 MiB
of RSS that the operator never uses (it speaks raw JSON, gpuctl/runtime/client.py). This
module gives `Client` the one thing it needs from an `ApiClient` -- `call_api(path,
method, query_params=, header_params=, body=, _request_timeout=, ...)` answering the raw
aiohttp response -- from a `RestConfig` it loads itself, as client-go's `rest.Config`:

- `load(kubeconfig)`: a kubeconfig (the path given, else `$KUBECONFIG`) -- its current
  context's cluster (`server`, `certificate-authority[-data]`,
  `insecure-skip-tls-verify`, `tls-server-name`) and user (`client-certificate[-data]`
  + `client-key[-data]`, `token`, `tokenFile`); relative paths are relative to the
  kubeconfig's directory, as kubectl resolves them. Without one, the in-cluster config:
  `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`, the service account's CA
  and token.
- A token file (the service account's, or a kubeconfig `tokenFile`) is read again when
  the copy in hand is a minute old, as client-go's `cachingTokenSource` does: the
  kubelet rotates projected tokens.
- The proxy for the API server comes from HTTPS_PROXY / NO_PROXY once (client-go's
  `http.ProxyFromEnvironment`); netrc is never read.
- A kubeconfig user that needs an `exec` plugin, an `auth-provider` or basic auth is
  handed to kubernetes_asyncio's own loader (`connect` then answers its `ApiClient`,
  importing it only then): those refresh tokens in ways not redone here.

`connect(kubeconfig)` answers a transport to close after use (`async with`).
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import attrs
import yaml
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_REFRESH = 60.0  # seconds a token read from a file is used before reading it again
POOL_SIZE = 100  # connections to the API server (kubernetes_asyncio's default)
UNSUPPORTED_AUTH = ("exec", "auth-provider", "username", "password")


class ConfigError(Exception):
    """No usable configuration (no kubeconfig, no in-cluster environment, bad file)."""


class Transport(Protocol):
    """What `Client` calls: kubernetes_asyncio's `ApiClient.call_api` subset, raw answer."""

    async def call_api(
        self,
        resource_path: str,
        method: str,
        *,
        query_params: list[tuple[str, str]] | None = None,
        header_params: dict[str, str] | None = None,
        body: Any = None,
        auth_settings: list[str] | None = None,
        _preload_content: bool = False,
        _request_timeout: aiohttp.ClientTimeout | None = None,
    ) -> Any: ...


@attrs.frozen
class RestConfig:
    """Where the API server is and how to authenticate to it (client-go's rest.Config)."""

    host: str  # https://host:port, no trailing slash
    ca_pem: bytes | None = None  # the cluster CA (None: the system's roots)
    insecure: bool = False  # insecure-skip-tls-verify
    server_name: str | None = None  # tls-server-name
    cert_pem: bytes | None = None  # client certificate ...
    key_pem: bytes | None = None  # ... and its key
    token: str | None = None  # a bearer token as given
    token_file: Path | None = None  # a bearer token read from this file (rotated)

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cadata=self.ca_pem.decode() if self.ca_pem else None)
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.cert_pem and self.key_pem:
            _load_cert_chain(context, self.cert_pem, self.key_pem)
        return context


def _load_cert_chain(context: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """`load_cert_chain` reads files only: the PEMs go through a private temporary file,
    removed at once."""
    with tempfile.TemporaryDirectory(prefix="gpuctl-tls-") as directory:
        path = Path(directory) / "client.pem"
        path.touch(mode=0o600)
        path.write_bytes(cert.rstrip(b"\n") + b"\n" + key)
        context.load_cert_chain(str(path))


# -- loading ---------------------------------------------------------------------------


def load(kubeconfig: Path | str | None = None) -> RestConfig:
    """The kubeconfig given (or $KUBECONFIG), else the in-cluster service account."""
    path = kubeconfig or os.environ.get("KUBECONFIG")
    if path:
        return from_kubeconfig(Path(str(path).split(os.pathsep)[0]))
    return in_cluster()


def needs_kubernetes_asyncio(kubeconfig: Path | str | None) -> bool:
    """Whether the kubeconfig's current user authenticates in a way only
    kubernetes_asyncio's loader handles (exec plugin, auth-provider, basic auth)."""
    path = kubeconfig or os.environ.get("KUBECONFIG")
    if not path:
        return False
    _, user, _ = _current(_read_yaml(Path(str(path).split(os.pathsep)[0])))
    return any(user.get(k) for k in UNSUPPORTED_AUTH)


def in_cluster(root: Path = SERVICE_ACCOUNT) -> RestConfig:
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise ConfigError("no kubeconfig and not in a cluster (KUBERNETES_SERVICE_HOST unset)")
    if ":" in host:  # IPv6
        host = f"[{host}]"
    token = root / "token"
    if not token.is_file():
        raise ConfigError(f"in-cluster service account token {token} is missing")
    ca = root / "ca.crt"
    return RestConfig(
        host=f"https://{host}:{port}",
        ca_pem=ca.read_bytes() if ca.is_file() else None,
        token_file=token,
    )


def from_kubeconfig(path: Path) -> RestConfig:
    cluster, user, base = _current(_read_yaml(path))
    server = str(cluster.get("server") or "").rstrip("/")
    if not server:
        raise ConfigError(f"{path}: the current context's cluster has no server")
    token_file = user.get("tokenFile")
    return RestConfig(
        host=server,
        ca_pem=_data(cluster, "certificate-authority", base),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        server_name=cluster.get("tls-server-name") or None,
        cert_pem=_data(user, "client-certificate", base),
        key_pem=_data(user, "client-key", base),
        token=user.get("token") or None,
        token_file=_resolve(base, token_file) if token_file else None,
    )


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"kubeconfig {path}: {err}") from err
    if not isinstance(loaded, dict):
        raise ConfigError(f"kubeconfig {path}: not a mapping")
    loaded["__dir__"] = path.parent
    return loaded


def _current(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """The current context's cluster and user entries, and the kubeconfig's directory."""

    def named(kind: str, name: str) -> dict[str, Any]:
        for entry in config.get(kind) or []:
            if isinstance(entry, dict) and entry.get("name") == name:
                return dict(entry.get(kind[:-1]) or {})
        raise ConfigError(f"kubeconfig: no {kind[:-1]} named {name!r}")

    current = config.get("current-context")
    if not current:
        raise ConfigError("kubeconfig: no current-context")
    context = named("contexts", str(current))
    user = named("users", str(context["user"])) if context.get("user") else {}
    return named("clusters", str(context.get("cluster"))), user, config["__dir__"]


def _resolve(base: Path, name: str) -> Path:
    path = Path(os.path.expanduser(name))
    return path if path.is_absolute() else base / path


def _data(entry: dict[str, Any], key: str, base: Path) -> bytes | None:
    """`key-data` (base64) wins over the file `key` names, as in kubectl."""
    if entry.get(f"{key}-data"):
        return base64.b64decode(entry[f"{key}-data"])
    if entry.get(key):
        return _resolve(base, str(entry[key])).read_bytes()
    return None


# -- the session -----------------------------------------------------------------------


def env_proxy(host: str) -> tuple[str | None, dict[str, str] | None]:
    """The environment's proxy for `host` and its auth header (client-go's
    `http.ProxyFromEnvironment`: HTTPS_PROXY / NO_PROXY), resolved once; (None, None)."""
    try:
        proxy, auth = get_env_proxy_for_url(URL(host))
    except LookupError:
        return None, None  # no proxy for the API server (none set, or NO_PROXY covers it)
    headers = {"Proxy-Authorization": auth.encode()} if auth is not None else None
    return str(proxy), headers


class HttpTransport:
    """An aiohttp session to one API server, authenticated per `RestConfig`."""

    def __init__(self, config: RestConfig) -> None:
        self.config = config
        self.host = config.host
        self._ssl = config.ssl_context()
        self._proxy, self._proxy_headers = env_proxy(config.host)
        connector = aiohttp.TCPConnector(limit=POOL_SIZE, ssl=self._ssl)
        self.session = aiohttp.ClientSession(connector=connector, trust_env=False)
        self._token: str | None = config.token
        self._token_read = -TOKEN_REFRESH

    async def __aenter__(self) -> HttpTransport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.session.close()

    def _bearer(self) -> str | None:
        file = self.config.token_file
        if file is not None and time.monotonic() - self._token_read >= TOKEN_REFRESH:
            try:
                self._token = file.read_text().strip()
                self._token_read = time.monotonic()
            except OSError:
                if self._token is None:
                    raise
        return self._token

    async def call_api(
        self,
        resource_path: str,
        method: str,
        *,
        query_params: list[tuple[str, str]] | None = None,
        header_params: dict[str, str] | None = None,
        body: Any = None,
        auth_settings: list[str] | None = None,
        _preload_content: bool = False,
        _request_timeout: aiohttp.ClientTimeout | None = None,
    ) -> aiohttp.ClientResponse:
        """The raw answer (the caller reads and releases it); aiohttp's errors propagate."""
        headers = dict(header_params or {})
        token = self._bearer()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = None if body is None else json.dumps(body)
        return await self.session.request(
            method,
            self.host + resource_path,
            params=query_params or None,
            headers=headers,
            data=data,
            timeout=_request_timeout or aiohttp.ClientTimeout(),
            server_hostname=self.config.server_name,
            proxy=self._proxy,
            proxy_headers=self._proxy_headers,
        )


async def connect(kubeconfig: Path | str | None = None) -> Any:
    """A transport for `Client` (close it after use): ours, or kubernetes_asyncio's
    `ApiClient` for a kubeconfig user only its loader handles (see the module docstring)."""
    if needs_kubernetes_asyncio(kubeconfig):
        from gpuctl.runtime.kubeclient import api_client  # noqa: PLC0415 - 38 MiB, rare

        return await api_client(kubeconfig)
    return HttpTransport(load(kubeconfig))
