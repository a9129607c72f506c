"""DriverPool: GPUProvider name -> a ready `Driver`, rebuilt when it or its Secret changes.

Drivers are built from the GPUProvider in the informer cache and the credentials
Secret in the Secret informer's cache (the operator only watches Secrets of its own
namespace, so credentials must live there; anything else is a clear error on the
GPUProvider). A driver is reused while the provider's generation and the Secret's
resourceVersion are unchanged. The API key travels only inside `DriverConfig`,
whose repr hides it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import aiohttp
import attrs

from gpuctl.api import GPUProvider, GPUProviderSpec, ObjectError
from gpuctl.providers.base import Driver, DriverConfig, InvalidRequestError
from gpuctl.providers.registry import build_driver
from gpuctl.runtime.store import Store


class ProviderUnavailableError(Exception):
    """The provider cannot be used now; `reason` is a CamelCase condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@attrs.frozen
class _Built:
    driver: Driver
    version: tuple[int | None, str]


def _options(spec: GPUProviderSpec) -> dict[str, str]:
    """The per-cloud block (and limit overrides) as the driver option keys."""
    options: dict[str, str] = {}
    if spec.lambda_ is not None:
        options["sshKeyName"] = spec.lambda_.ssh_key_name
        if spec.lambda_.image:
            options["imageFamily"] = spec.lambda_.image
        if spec.lambda_.file_system_names:
            options["fileSystemNames"] = ",".join(spec.lambda_.file_system_names)
    if spec.runpod is not None:
        options["imageName"] = spec.runpod.image_name
        options["cloudType"] = spec.runpod.cloud_type.value
        if spec.runpod.container_disk_gb is not None:
            options["containerDiskInGb"] = str(spec.runpod.container_disk_gb)
        if spec.runpod.volume_gb is not None:
            options["volumeInGb"] = str(spec.runpod.volume_gb)
    if spec.paperspace is not None:
        options["templateId"] = spec.paperspace.template_id
        options["diskSize"] = str(spec.paperspace.disk_size_gb)
        if spec.paperspace.public_ip_type is not None:
            options["publicIpType"] = spec.paperspace.public_ip_type.value
    if spec.crusoe is not None:
        options["sshPublicKey"] = spec.crusoe.ssh_public_key
        if spec.crusoe.project_id:
            options["projectId"] = spec.crusoe.project_id
        if spec.crusoe.image:
            options["image"] = spec.crusoe.image
    options.update(_hyperstack_options(spec))
    options.update(_digitalocean_options(spec))
    limit = spec.rate_limit
    if limit is not None and limit.launches_per_minute:
        options["launchIntervalSeconds"] = str(60 / limit.launches_per_minute)
    return options


def _hyperstack_options(spec: GPUProviderSpec) -> dict[str, str]:
    block = spec.hyperstack
    if block is None:
        return {}
    options = {"assignFloatingIp": "true" if block.assign_floating_ip else "false"}
    for key, value in (
        ("sshKeyName", block.ssh_key_name),
        ("sshPublicKey", block.ssh_public_key),
        ("imageName", block.image),
        ("environmentPrefix", block.environment_prefix),
        ("kubeletSourceCIDR", block.kubelet_source_cidr),
    ):
        if value:
            options[key] = value
    return options


def _digitalocean_options(spec: GPUProviderSpec) -> dict[str, str]:
    block = spec.digitalocean
    if block is None:
        return {}
    options = {"firewall": "true" if block.firewall else "false"}
    for key, value in (
        ("sshKeys", ",".join(block.ssh_keys)),
        ("image", block.image),
        ("kubeletSourceCIDR", block.kubelet_source_cidr),
        ("sshSourceCIDR", block.ssh_source_cidr),
    ):
        if value:
            options[key] = value
    return options


def driver_config(provider: GPUProvider, api_key: str) -> DriverConfig:
    spec = provider.spec
    limit = spec.rate_limit
    return DriverConfig(
        name=provider.name,
        cloud=spec.type.value,
        api_key=api_key,
        endpoint=spec.endpoint,
        regions=tuple(r.value for r in spec.regions),
        options=_options(spec),
        prices={k: Decimal(v) for k, v in spec.prices.items()},
        rate_limit_per_second=limit.requests_per_second if limit else None,
    )


def _resource_version(obj: Mapping[str, object]) -> str:
    metadata = obj.get("metadata")
    return str(metadata.get("resourceVersion", "")) if isinstance(metadata, Mapping) else ""


class DriverPool:
    def __init__(
        self,
        providers: Store,
        secrets: Store,
        session: aiohttp.ClientSession,
        *,
        namespace: str,
    ) -> None:
        self._providers = providers
        self._secrets = secrets
        self._session = session
        self._namespace = namespace
        self._built: dict[str, _Built] = {}

    def names(self) -> list[str]:
        return sorted(obj["metadata"]["name"] for obj in self._providers.list())

    def provider(self, name: str) -> GPUProvider:
        obj = self._providers.get(name)
        if obj is None:
            raise ProviderUnavailableError(
                "ProviderNotFound", f"GPUProvider {name!r} does not exist"
            )
        try:
            return GPUProvider.from_dict(obj)
        except ObjectError as err:
            raise ProviderUnavailableError(
                "InvalidProvider", f"GPUProvider {name!r}: {err}"
            ) from err

    def get(self, name: str) -> Driver:
        """The driver of GPUProvider `name`; raises ProviderUnavailableError with a reason."""
        provider = self.provider(name)
        secret = self._secret(provider)
        version = (provider.metadata.generation, _resource_version(secret))
        built = self._built.get(name)
        if built is not None and built.version == version:
            return built.driver
        api_key = self._api_key(provider, secret)
        try:
            driver = build_driver(driver_config(provider, api_key), self._session)
        except InvalidRequestError as err:  # a bad option in the GPUProvider
            raise ProviderUnavailableError("InvalidProviderConfig", err.message) from err
        self._built[name] = _Built(driver, version)
        return driver

    def secret(self, namespace: str, name: str) -> Mapping[str, Any]:
        """A Secret of the operator's namespace from the cache (credentials, templates)."""
        where = f"Secret {namespace}/{name}"
        if namespace != self._namespace:
            raise ProviderUnavailableError(
                "SecretNamespaceNotWatched",
                f"{where}: must be in the operator's namespace {self._namespace!r}",
            )
        secret = self._secrets.get(f"{namespace}/{name}")
        if secret is None:
            raise ProviderUnavailableError("SecretNotFound", f"{where} does not exist")
        return secret

    def _secret(self, provider: GPUProvider) -> Mapping[str, Any]:
        ref = provider.spec.credentials_secret_ref
        return self.secret(ref.namespace, ref.name)

    def _api_key(self, provider: GPUProvider, secret: Mapping[str, Any]) -> str:
        ref = provider.spec.credentials_secret_ref
        data = secret.get("data") or {}
        assert isinstance(data, Mapping)
        encoded = data.get(ref.key)
        try:
            key = base64.b64decode(str(encoded), validate=True).decode().strip()
        except (binascii.Error, UnicodeDecodeError):
            key = ""
        if encoded is None or not key:
            raise ProviderUnavailableError(
                "SecretKeyMissing",
                f"Secret {ref.namespace}/{ref.name} has no non-empty key {ref.key!r}",
            )
        return key

    async def close(self) -> None:
        for built in self._built.values():
            await built.driver.close()
        self._built.clear()
