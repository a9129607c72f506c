"""gpuctl.cli.config: the providers file and where the kubeconfig comes from."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gpuctl.cli.config import (
    ConfigError,
    FileDrivers,
    FileProvider,
    kubeconfig_path,
    load_config,
    parse_config,
)
from gpuctl.controllers.drivers import ProviderUnavailableError

GOOD = """
providers:
- name: lambda
  type: lambda
  apiKeyEnv: TEST_LAMBDA_KEY
  endpoint: http://127.0.0.1:9
  regions: [us-east, us-west]
  prices: {gpu_8x_h100_sxm5: "20.00"}
  options: {sshKeyName: gpuctl}
- name: runpod
  type: runpod
  apiKey: secret-key
  requestsPerSecond: 5
"""


def test_a_good_file(tmp_path: Path) -> None:
    path = tmp_path / "providers.yaml"
    path.write_text(GOOD)
    lam, runpod = load_config(path)
    assert lam == FileProvider(
        name="lambda",
        type="lambda",
        api_key_env="TEST_LAMBDA_KEY",
        endpoint="http://127.0.0.1:9",
        regions=("us-east", "us-west"),
        prices={"gpu_8x_h100_sxm5": Decimal("20.00")},
        options={"sshKeyName": "gpuctl"},
    )
    assert runpod.api_key == "secret-key" and runpod.requests_per_second == 5.0
    assert "secret-key" not in repr(runpod)


def test_a_bare_list_is_accepted() -> None:
    assert parse_config([{"name": "p", "type": "paperspace", "apiKey": "k"}])[0].name == "p"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({}, "non-empty list of providers"),
        ({"providers": [], "extra": 1}, "unknown top-level keys: extra"),
        ([{"name": "p", "type": "aws", "apiKey": "k"}], "type must be one of"),
        ([{"name": "p", "type": "lambda"}], "exactly one of apiKey and apiKeyEnv"),
        ([{"name": "p", "type": "lambda", "apiKey": "k", "apiKeyEnv": "E"}], "exactly one"),
        ([{"name": "p", "type": "lambda", "apiKey": "k", "colour": 1}], "unknown keys colour"),
        ([{"name": "p", "type": "lambda", "apiKey": "k", "regions": ["mars"]}], "regions"),
        ([{"name": "p", "type": "lambda", "apiKey": "k", "prices": {"x": "cheap"}}], "decimal"),
        ([{"name": "p", "type": "lambda", "apiKey": "k", "requestsPerSecond": 0}], "positive"),
        ([{"type": "lambda", "apiKey": "k"}], "name must be a non-empty string"),
        (
            [
                {"name": "p", "type": "lambda", "apiKey": "k"},
                {"name": "p", "type": "runpod", "apiKey": "k"},
            ],
            "duplicate provider names: p",
        ),
    ],
)
def test_mistakes_are_config_errors(document: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(document)


def test_unreadable_and_non_yaml_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers: [\n")
    with pytest.raises(ConfigError, match="not YAML"):
        load_config(bad)


async def test_an_unset_key_makes_only_that_provider_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TEST_LAMBDA_KEY", raising=False)
    providers = parse_config(
        [
            {"name": "a", "type": "lambda", "apiKeyEnv": "TEST_LAMBDA_KEY"},
            {"name": "b", "type": "runpod", "apiKey": "k"},
        ]
    )
    async with aiohttp.ClientSession() as session:
        drivers = FileDrivers(providers, session)
        assert drivers.names() == ["a", "b"]
        with pytest.raises(ProviderUnavailableError, match=r"\$TEST_LAMBDA_KEY is unset") as err:
            drivers.get("a")
        assert err.value.reason == "SecretKeyMissing"
        assert drivers.get("b") is drivers.get("b")  # built once
        assert drivers.get("b").name == "b"
        with pytest.raises(ProviderUnavailableError, match="not in the config file"):
            drivers.get("c")
        monkeypatch.setenv("TEST_LAMBDA_KEY", "from-env")
        assert drivers.get("a").cloud == "lambda"
        await drivers.close()


def test_kubeconfig_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flag = tmp_path / "flag"
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "env"))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert kubeconfig_path(flag) == flag
    assert kubeconfig_path(None) == tmp_path / "env"
    monkeypatch.delenv("KUBECONFIG")
    assert kubeconfig_path(None) is None  # in-cluster
    (tmp_path / ".kube").mkdir()
    (tmp_path / ".kube" / "config").write_text("")
    assert kubeconfig_path(None) == tmp_path / ".kube" / "config"


def test_the_shipped_example_loads() -> None:
    example = Path(__file__).parents[2] / "hack" / "offers.example.yaml"
    providers = load_config(example)
    # One entry per cloud the example documents, named after its type.
    assert [p.name for p in providers][:3] == ["lambda", "runpod", "paperspace"]
    assert all(p.name == p.type for p in providers)
