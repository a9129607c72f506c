"""SimConfig: the shipped defaults, YAML merging, and names matching gpuctl's tables."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gpuctl.providers import catalog
from gpuctl.sim import CLOUDS, SimConfig
from gpuctl.sim.config import _default_text


def test_defaults_are_default_yaml() -> None:
    assert SimConfig() == SimConfig.from_dict({})
    top = yaml.safe_load(_default_text())
    config = SimConfig()
    for key in ("seed", "boot_seconds", "terminate_seconds", "interrupt_rate", "hang_seconds"):
        assert getattr(config, key) == top[key]


def test_yaml_merges_maps_and_replaces_tables(tmp_path: Path) -> None:
    path = tmp_path / "sim.yaml"
    path.write_text(
        "seed: 9\n"
        "lambda:\n"
        "  default_capacity: 7\n"
        "  types:\n"
        "    gpu_1x_a10: {gpu_name: 'A10 (24 GB PCIe)', gpu_memory_gib: 24, vcpus: 30,"
        " memory_gib: 200, price: 0.5}\n"
    )
    config = SimConfig.from_yaml(path)
    lam = config.catalog("lambda")
    assert config.seed == 9
    assert list(lam.types) == ["gpu_1x_a10"]  # the table was replaced
    assert lam.default_capacity == 7
    assert lam.regions == SimConfig().catalog("lambda").regions  # merged, kept
    assert config.catalog("runpod") == SimConfig().catalog("runpod")


def test_unknown_keys_are_errors() -> None:
    with pytest.raises(ValueError, match="bootseconds"):
        SimConfig.from_dict({"bootseconds": 1})
    with pytest.raises(ValueError, match="price"):
        SimConfig.from_dict({"paperspace": {"types": {"X": {"gpu_name": "X"}}}})


def test_api_keys_default_per_cloud_and_seed() -> None:
    assert SimConfig(seed=4).api_key("runpod") == "sim-runpod-4"
    assert SimConfig(api_keys={"lambda": "k"}).api_key("lambda") == "k"


def test_join_data_runs_only_when_asked() -> None:
    default = SimConfig()
    assert not default.execute_join_data
    assert default.node_agent is None and default.workdir is None
    loaded = SimConfig.from_dict({"execute_join_data": True, "node_agent": "/a", "workdir": "/w"})
    assert loaded.execute_join_data
    assert (loaded.node_agent, loaded.workdir) == (Path("/a"), Path("/w"))


@pytest.mark.parametrize("cloud", CLOUDS)
def test_native_names_match_gpuctl_tables(cloud: str) -> None:
    """Every simulated GPU and region translates with gpuctl.providers.catalog."""
    cat = SimConfig().catalog(cloud)
    for region in cat.regions:
        assert catalog.region_of(cloud, region), f"{cloud} region {region} not in regions.yaml"
    for name, machine in cat.types.items():
        if cloud == "digitalocean" and machine.gpu_count == 0:
            continue  # a CPU size: gpuctl skips it on purpose
        native = name if cloud == "runpod" else machine.gpu_name
        if cloud == "crusoe":  # "<family>.<N>x"; gpu_name is the GPU the VM reports
            native = name.rsplit(".", 1)[0]
            assert name.endswith(f".{machine.gpu_count}x")
        assert catalog.gpu_type_of(cloud, native), f"{cloud} {native} not in gpus.yaml"
        if cloud == "paperspace":
            suffix = "" if machine.gpu_count == 1 else f"x{machine.gpu_count}"
            assert name == machine.gpu_name + suffix


def test_list_prices() -> None:
    types = {c: SimConfig().catalog(c).types for c in CLOUDS}
    assert types["lambda"]["gpu_8x_h100_sxm5"].price == 23.92
    assert types["lambda"]["gpu_1x_h100_sxm5"].price == 3.29
    h100 = types["runpod"]["NVIDIA H100 80GB HBM3"]
    assert (h100.price, h100.community_price, h100.max_count) == (2.69, 1.99, 8)
    assert types["paperspace"]["H100x8"].price == 47.60
