"""The simulator's configuration: timings, machines, ports, keys and catalogue.

`SimConfig()` is the shipped default (`default.yaml` in this package);
`SimConfig.from_yaml(path)` merges a file onto it. Merging is key by key for
maps, except the `regions`, `types` and `capacity` tables of a cloud, which a
file replaces whole (so a test can declare a tiny catalogue). Unknown keys are
errors: a typo must not silently fall back to a default. Every key is
documented in `default.yaml` and docs/sim.md.
"""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import attrs
import cattrs
import yaml

CLOUDS = ("lambda", "runpod", "paperspace", "crusoe", "hyperstack", "digitalocean")
# Sections of a cloud that a config file replaces instead of merging into.
_REPLACED = frozenset({"regions", "types", "capacity"})


@attrs.frozen
class Region:
    description: str
    area: str = ""  # RunPod's DataCenterRegion (NORTH_AMERICA, EUROPE, ...)


@attrs.frozen
class MachineType:
    """One rentable shape. For RunPod the unit is one GPU (see default.yaml)."""

    gpu_name: str  # Lambda gpu_description, RunPod display name, Paperspace label
    gpu_memory_gib: int
    vcpus: int
    memory_gib: int
    price: float  # USD/h: per instance; RunPod: secure cloud, per GPU
    gpu_count: int = 1
    storage_gib: int = 0
    community_price: float | None = None  # RunPod community cloud, per GPU
    max_count: int = 1  # RunPod: most GPUs one pod may take
    pool: str | None = None  # RunPod GPU pool id


@attrs.frozen
class OsTemplate:
    name: str
    os: str


@attrs.frozen
class CloudCatalog:
    """What one cloud rents, where, at what price, and how much of it is free."""

    regions: Mapping[str, Region]
    types: Mapping[str, MachineType]
    default_capacity: int = 0
    capacity: Mapping[str, Mapping[str, int]] = attrs.field(factory=dict)
    spot_factor: float = 0.6  # RunPod: interruptible price = community price * factor
    ssh_keys: tuple[str, ...] = ()  # Lambda, DigitalOcean: the account's SSH key names
    templates: Mapping[str, OsTemplate] = attrs.field(factory=dict)  # Paperspace

    def initial_capacity(self, region: str, instance_type: str) -> int:
        return self.capacity.get(region, {}).get(instance_type, self.default_capacity)


_converter = cattrs.Converter(forbid_extra_keys=True)
_converter.register_structure_hook(Path, lambda value, _: Path(value))


@functools.cache
def _default_text() -> str:
    return resources.files("gpuctl.sim").joinpath("default.yaml").read_text()


def _default_document() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(_default_text())
    return data


@functools.cache
def default_catalogs() -> Mapping[str, CloudCatalog]:
    document = _default_document()
    return {cloud: _converter.structure(document[cloud], CloudCatalog) for cloud in CLOUDS}


@attrs.frozen
class SimConfig:
    seed: int = 0
    boot_seconds: float = 2.0
    terminate_seconds: float = 1.0
    interrupt_rate: float = 0.0  # spot interruptions per spot instance-hour
    slow_seconds: float = 2.0
    hang_seconds: float = 30.0
    enforce_rate_limits: bool = False
    # The cluster the machines join, for callers (the demo, tests); the simulator
    # itself never talks to Kubernetes: machines join by running their join data.
    kubeconfig: Path | None = None
    ca_file: Path | None = None
    # Boot machines as real process trees that run their join data (needs root).
    execute_join_data: bool = False
    node_agent: Path | None = None  # None: bin/k8s/gpuctl-node-agent of the checkout
    workdir: Path | None = None  # machines' files; None: a temporary directory
    ports: Mapping[str, int] = attrs.field(factory=dict)
    api_keys: Mapping[str, str] = attrs.field(factory=dict)
    catalogs: Mapping[str, CloudCatalog] = attrs.field(factory=default_catalogs)

    def api_key(self, cloud: str) -> str:
        key = self.api_keys.get(cloud) or f"sim-{cloud}-{self.seed}"
        if cloud == "crusoe" and ":" not in key:
            # A Crusoe credential is "<access key ID>:<secret key>", the secret base64url.
            secret = hashlib.sha256(key.encode()).digest()
            key = f"{key}:{base64.urlsafe_b64encode(secret).decode().rstrip('=')}"
        return key

    def catalog(self, cloud: str) -> CloudCatalog:
        return self.catalogs[cloud]

    @classmethod
    def from_yaml(cls, path: Path | str) -> SimConfig:
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: the top level must be a map")
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SimConfig:
        """`data` in the YAML layout, merged onto the defaults."""
        merged = _merge(_default_document(), data)
        catalogs = {cloud: merged.pop(cloud) for cloud in CLOUDS if cloud in merged}
        try:
            return _converter.structure({**merged, "catalogs": catalogs}, cls)
        except cattrs.BaseValidationError as error:
            problems = "; ".join(cattrs.transform_error(error))
            raise ValueError(f"invalid simulator configuration: {problems}") from error


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        current = merged.get(key)
        if isinstance(current, dict) and isinstance(value, dict) and key not in _REPLACED:
            merged[key] = _merge(current, value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged
