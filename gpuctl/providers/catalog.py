"""GPU and region translation between gpuctl's normalised names and each cloud's.

The tables are data (`tables/gpus.yaml`, `tables/regions.yaml`), loaded once.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import yaml

from gpuctl.api.constants import GPU_RESOURCE_NVIDIA, GPU_RESOURCES

CLOUDS = ("lambda", "runpod", "paperspace", "crusoe", "hyperstack", "digitalocean")


@functools.cache
def _table(name: str) -> dict[str, Any]:
    text = resources.files("gpuctl.providers").joinpath("tables", name).read_text()
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def gpu_types() -> list[str]:
    """Every normalised GPU name, e.g. H100-80GB."""
    return sorted(_table("gpus.yaml"))


def regions() -> list[str]:
    """Every normalised region, e.g. us-east."""
    return sorted(_table("regions.yaml"))


def gpu_memory_gib(gpu_type: str) -> int | None:
    """Memory of one GPU of that type in GiB, or None if the catalog does not say."""
    memory = _table("gpus.yaml").get(gpu_type, {}).get("memoryGiB")
    return int(memory) if memory is not None else None


def gpu_vendor(gpu_type: str) -> str:
    """Who makes GPUs of that type: "nvidia" (the table's default) or "amd"."""
    return str(_table("gpus.yaml").get(gpu_type, {}).get("vendor", "nvidia"))


def gpu_resource(gpu_type: str) -> str:
    """The extended resource a machine with GPUs of that type advertises them as
    (amd.com/gpu for AMD parts; nvidia.com/gpu for NVIDIA's and for unknown types,
    which is what every machine advertised before the table named vendors)."""
    return GPU_RESOURCES.get(gpu_vendor(gpu_type), GPU_RESOURCE_NVIDIA)


def native_gpu_names(cloud: str, gpu_type: str) -> list[str]:
    entry = _table("gpus.yaml").get(gpu_type, {})
    return list(entry.get(cloud, []))


def gpu_type_of(cloud: str, native: str) -> str | None:
    """The normalised GPU name of a cloud's GPU name, or None if gpuctl does not know it."""
    for name, entry in _table("gpus.yaml").items():
        if native in entry.get(cloud, []):
            return str(name)
    return None


def native_regions(cloud: str, region: str) -> list[str]:
    return list(_table("regions.yaml").get(region, {}).get(cloud, []))


def region_of(cloud: str, native: str) -> str | None:
    """The normalised region of a cloud's region or data centre id, or None."""
    for name, entry in _table("regions.yaml").items():
        if native in entry.get(cloud, []):
            return str(name)
    return None
