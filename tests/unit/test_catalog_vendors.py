"""GPU vendors in the catalog: which extended resource each GPU type is advertised as."""

from __future__ import annotations

from decimal import Decimal

import pytest

from gpuctl.api.constants import GPU_RESOURCES
from gpuctl.providers import catalog
from gpuctl.providers.crusoe.driver import shipped_prices


@pytest.mark.parametrize(
    ("gpu_type", "vendor", "resource"),
    [
        ("H100-80GB", "nvidia", "nvidia.com/gpu"),
        ("RTX-4090", "nvidia", "nvidia.com/gpu"),
        ("MI300X-192GB", "amd", "amd.com/gpu"),
        ("NO-SUCH-GPU", "nvidia", "nvidia.com/gpu"),  # unknown: what machines always had
    ],
)
def test_vendor_and_resource(gpu_type: str, vendor: str, resource: str) -> None:
    assert catalog.gpu_vendor(gpu_type) == vendor
    assert catalog.gpu_resource(gpu_type) == resource


def test_every_vendor_has_a_resource() -> None:
    assert {catalog.gpu_vendor(t) for t in catalog.gpu_types()} <= set(GPU_RESOURCES)


@pytest.mark.parametrize(
    ("cloud", "native"),
    [
        ("digitalocean", "amd_mi300x"),  # gpu_info.model of gpu-mi300x1-192gb
        ("crusoe", "mi300x-192gb-ib"),  # family of mi300x-192gb-ib.8x
        ("runpod", "AMD Instinct MI300X OAM"),  # a gpuTypeId of RunPod's spec
    ],
)
def test_mi300x_native_names(cloud: str, native: str) -> None:
    assert catalog.gpu_type_of(cloud, native) == "MI300X-192GB"
    assert catalog.gpu_memory_gib("MI300X-192GB") == 192


def test_crusoe_table_prices_mi300x_per_gpu_hour() -> None:
    # Crusoe's pricing page: $3.45 per GPU-hour, eight GPUs a VM.
    assert shipped_prices().prices["mi300x-192gb-ib.8x"] == Decimal("27.60")
