"""Where `gpuctl offers` and `gpuctl plan` get their providers, and `cost` its cluster.

Two sources, both handing out drivers through `names()` / `get(name)` (the
`offer.Drivers` protocol the controller's offer step uses), where `get` raises
`ProviderUnavailableError` for a provider that cannot be used:

- the cluster (default): every GPUProvider, with its credentials Secret read from
  the operator's namespace (`--namespace`, default gpuctl-system), turned into
  drivers by the operator's own `DriverPool` — so a missing Secret or key reads
  exactly as on the GPUProvider's conditions. The kubeconfig is `--kubeconfig`,
  else `$KUBECONFIG`, else `~/.kube/config`, else the in-cluster service account.
- a local YAML file (`--config FILE`), no cluster needed:

      providers:
      - name: lambda             # required, unique; what requests name in spec.providers
        type: lambda             # required: lambda, runpod, paperspace, crusoe, hyperstack, ...
                                 # digitalocean
        apiKeyEnv: LAMBDA_KEY    # the key from this environment variable, or
        apiKey: "..."            # the key itself (keep such a file private)
        endpoint: http://...     # optional: a simulator or proxy instead of the cloud
        regions: [us-east]       # optional allow-list of normalised regions
        prices: {H100: "5.95"}   # optional $/h overrides by instance type
        options: {cloudType: SECURE}  # optional driver options (docs/providers.md)
        requestsPerSecond: 5     # optional API rate limit override

  A bare list of providers (without `providers:`) is accepted too. Mistakes in the
  file (unknown keys, wrong types, unknown type or region) are `ConfigError`s; a
  key variable that is unset or empty only makes that one provider unavailable.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import AsyncIterator, Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import yaml
from kubernetes_asyncio.config import ConfigException

from gpuctl.api import ProviderType, Region
from gpuctl.controllers.drivers import DriverPool, ProviderUnavailableError
from gpuctl.controllers.request.offer import Drivers
from gpuctl.controllers.resources import GPUPROVIDERS
from gpuctl.providers.base import Driver, DriverConfig
from gpuctl.providers.registry import build_driver
from gpuctl.runtime.client import ApiError, Client, TransportError, is_not_found
from gpuctl.runtime.kubeclient import api_client
from gpuctl.runtime.resources import SECRETS
from gpuctl.runtime.store import Store

DEFAULT_NAMESPACE = "gpuctl-system"
_KEYS = frozenset(
    {
        "name",
        "type",
        "apiKey",
        "apiKeyEnv",
        "endpoint",
        "regions",
        "prices",
        "options",
        "requestsPerSecond",
    }
)


class ConfigError(Exception):
    """The command cannot start: bad flags, a bad config file, no cluster access."""


def add_namespace_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--namespace",
        default=DEFAULT_NAMESPACE,
        metavar="NS",
        help=f"the operator's namespace: credentials, cost ledger (default {DEFAULT_NAMESPACE})",
    )


def add_kubeconfig_flag(parser: Any) -> None:  # a parser or an argument group
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        metavar="FILE",
        help="kubeconfig (default: $KUBECONFIG, else ~/.kube/config, else in-cluster)",
    )


def add_source_flags(parser: argparse.ArgumentParser) -> None:
    """[--kubeconfig K | --config FILE] --namespace NS."""
    exclusive = parser.add_mutually_exclusive_group()
    add_kubeconfig_flag(exclusive)
    exclusive.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="providers from this YAML file instead of the cluster (format: docs/cli.md)",
    )
    add_namespace_flag(parser)


# -- the cluster -----------------------------------------------------------------------


def kubeconfig_path(flag: Path | None) -> Path | None:
    """--kubeconfig, else $KUBECONFIG, else ~/.kube/config if it exists, else None."""
    if flag is not None:
        return flag
    if os.environ.get("KUBECONFIG"):
        return Path(os.environ["KUBECONFIG"])
    default = Path.home() / ".kube" / "config"
    return default if default.exists() else None


@contextlib.asynccontextmanager
async def kube(flag: Path | None) -> AsyncIterator[Client]:
    """A raw-JSON client of the cluster; ConfigError when there is no usable config."""
    path = kubeconfig_path(flag)
    try:
        api = await api_client(path)
    except (ConfigException, OSError) as err:
        where = str(path) if path else "in-cluster config"
        raise ConfigError(f"cannot load the kubeconfig ({where}): {err}") from err
    async with api:
        yield Client(api)


class ClusterDrivers:
    """The cluster's GPUProviders through the operator's DriverPool.

    Secrets that could not be read (other than not found) make their providers
    unavailable with the API server's message, instead of failing the command.
    """

    def __init__(self, pool: DriverPool, unreadable: Mapping[str, str]) -> None:
        self.pool = pool
        self.unreadable = dict(unreadable)  # provider name -> why its Secret is unreadable

    def names(self) -> list[str]:
        return self.pool.names()

    def get(self, name: str) -> Driver:
        if name in self.unreadable:
            raise ProviderUnavailableError("SecretUnreadable", self.unreadable[name])
        return self.pool.get(name)

    async def close(self) -> None:
        await self.pool.close()


async def cluster_drivers(
    client: Client, namespace: str, session: aiohttp.ClientSession
) -> ClusterDrivers:
    """Every GPUProvider, and the credential Secrets of `namespace` they reference."""
    providers, secrets = Store(), Store()
    unreadable: dict[str, str] = {}
    for obj in (await client.list_all(GPUPROVIDERS)).items:
        providers.add(obj)
        ref = (obj.get("spec") or {}).get("credentialsSecretRef") or {}
        if ref.get("namespace") != namespace or not ref.get("name"):
            continue  # the pool reports it as the operator would
        try:
            secrets.add(await client.get(SECRETS, ref["name"], namespace=namespace))
        except ApiError as err:
            if not is_not_found(err):
                where = f"Secret {namespace}/{ref['name']}"
                unreadable[obj["metadata"]["name"]] = f"{where}: {err.message or err}"
    return ClusterDrivers(DriverPool(providers, secrets, session, namespace=namespace), unreadable)


# -- the file --------------------------------------------------------------------------


@attrs.frozen
class FileProvider:
    name: str
    type: str
    api_key: str | None = attrs.field(default=None, repr=False)
    api_key_env: str | None = None
    endpoint: str | None = None
    regions: tuple[str, ...] = ()
    prices: Mapping[str, Decimal] = attrs.field(factory=dict)
    options: Mapping[str, str] = attrs.field(factory=dict)
    requests_per_second: float | None = None

    def driver_config(self) -> DriverConfig:
        """The driver's config; ProviderUnavailableError when the key is missing."""
        key = self.api_key
        if key is None and self.api_key_env:
            key = os.environ.get(self.api_key_env)
        if not key:
            source = f"${self.api_key_env}" if self.api_key_env else "apiKey"
            raise ProviderUnavailableError("SecretKeyMissing", f"{source} is unset or empty")
        return DriverConfig(
            name=self.name,
            cloud=self.type,
            api_key=key,
            endpoint=self.endpoint,
            regions=self.regions,
            options=self.options,
            prices=self.prices,
            rate_limit_per_second=self.requests_per_second,
        )


def _string(where: str, key: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: {key} must be a non-empty string")
    return value


def _string_map(where: str, key: str, value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {key} must be a mapping")
    return {str(k): str(v) for k, v in value.items()}


def _provider(where: str, item: object) -> FileProvider:
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: must be a mapping")
    unknown = sorted(set(item) - _KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {', '.join(map(str, unknown))}")
    name = _string(where, "name", item.get("name"))
    where = f"provider {name!r}"
    cloud = _string(where, "type", item.get("type"))
    if cloud not in {t.value for t in ProviderType}:
        raise ConfigError(
            f"{where}: type must be one of {', '.join(t.value for t in ProviderType)}"
        )
    if ("apiKey" in item) == ("apiKeyEnv" in item):
        raise ConfigError(f"{where}: give exactly one of apiKey and apiKeyEnv")
    regions = item.get("regions") or []
    if not isinstance(regions, list) or any(r not in {g.value for g in Region} for r in regions):
        raise ConfigError(
            f"{where}: regions must be a list of {', '.join(g.value for g in Region)}"
        )
    try:
        prices = {
            k: Decimal(v) for k, v in _string_map(where, "prices", item.get("prices") or {}).items()
        }
    except InvalidOperation as err:
        raise ConfigError(f"{where}: prices must be decimal strings") from err
    rps = item.get("requestsPerSecond")
    if rps is not None and (isinstance(rps, bool) or not isinstance(rps, int | float) or rps <= 0):
        raise ConfigError(f"{where}: requestsPerSecond must be a positive number")
    return FileProvider(
        name=name,
        type=cloud,
        api_key=_string(where, "apiKey", item["apiKey"]) if "apiKey" in item else None,
        api_key_env=_string(where, "apiKeyEnv", item["apiKeyEnv"]) if "apiKeyEnv" in item else None,
        endpoint=_string(where, "endpoint", item["endpoint"]) if item.get("endpoint") else None,
        regions=tuple(regions),
        prices=prices,
        options=_string_map(where, "options", item.get("options") or {}),
        requests_per_second=float(rps) if rps is not None else None,
    )


def parse_config(document: Any) -> list[FileProvider]:
    """The providers of a parsed config document (see the module docstring)."""
    items = document.get("providers") if isinstance(document, dict) else document
    if isinstance(document, dict) and set(document) - {"providers"}:
        raise ConfigError(
            f"unknown top-level keys: {', '.join(sorted(set(document) - {'providers'}))}"
        )
    if not isinstance(items, list) or not items:
        raise ConfigError("the config needs a non-empty list of providers")
    providers = [_provider(f"providers[{i}]", item) for i, item in enumerate(items)]
    names = [p.name for p in providers]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"duplicate provider names: {', '.join(duplicates)}")
    return providers


def load_config(path: Path) -> list[FileProvider]:
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror or err}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not YAML: {err}") from err
    try:
        return parse_config(document)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err


class FileDrivers:
    """Drivers of the providers of a config file, each built on first use."""

    def __init__(self, providers: list[FileProvider], session: aiohttp.ClientSession) -> None:
        self.providers = {p.name: p for p in providers}
        self.session = session
        self._built: dict[str, Driver] = {}

    def names(self) -> list[str]:
        return sorted(self.providers)

    def get(self, name: str) -> Driver:
        if name in self._built:
            return self._built[name]
        provider = self.providers.get(name)
        if provider is None:
            raise ProviderUnavailableError(
                "ProviderNotFound", f"provider {name!r} is not in the config file"
            )
        driver = build_driver(provider.driver_config(), self.session)
        self._built[name] = driver
        return driver

    async def close(self) -> None:
        for driver in self._built.values():
            await driver.close()
        self._built.clear()


# -- either ----------------------------------------------------------------------------


@attrs.frozen
class Source:
    drivers: Drivers
    client: Client | None  # the cluster; None with --config


@contextlib.asynccontextmanager
async def open_source(args: argparse.Namespace) -> AsyncIterator[Source]:
    """The providers of `--config FILE`, or else of the cluster; drivers closed on exit."""
    async with aiohttp.ClientSession() as session:
        if args.config is not None:
            from_file = FileDrivers(load_config(args.config), session)
            try:
                yield Source(from_file, None)
            finally:
                await from_file.close()
            return
        async with kube(args.kubeconfig) as client:
            try:
                from_cluster = await cluster_drivers(client, args.namespace, session)
            except (ApiError, TransportError) as err:
                raise ConfigError(f"cannot read the GPUProviders: {err}") from err
            try:
                yield Source(from_cluster, client)
            finally:
                await from_cluster.close()
