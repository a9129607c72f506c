"""`gpuctl offers` against GPUProviders in the real API server and the simulated clouds."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from gpuctl.cli.main import main
from gpuctl.controllers.resources import GPUPROVIDERS
from gpuctl.dev.controlplane import ControlPlane
from gpuctl.runtime.client import Client
from gpuctl.runtime.resources import SECRETS
from gpuctl.sim import Simulator
from tests.e2e.conftest import NAMESPACE, Env, _provider


async def cli(*argv: str) -> tuple[int, str]:
    """`gpuctl ARGV` in-process (in a thread: it runs its own event loop); (exit code, stdout)."""

    def call() -> tuple[int, str]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(list(argv))
        return code, out.getvalue()

    return await asyncio.to_thread(call)


async def _bad_providers(api: Client, env: Env, sim: Simulator, cp: ControlPlane) -> list[str]:
    """Two providers that cannot answer: a wrong API key, and a Secret that does not exist."""
    wrong, missing = f"wrongkey-{env.suffix}", f"nosecret-{env.suffix}"
    secret = {
        "metadata": {"name": wrong, "namespace": NAMESPACE},
        "data": {"apiKey": base64.b64encode(b"not-the-key").decode()},
    }
    await api.create(SECRETS, secret, namespace=NAMESPACE)
    await api.create(GPUPROVIDERS, _provider(wrong, "paperspace", sim, cp))
    await api.create(GPUPROVIDERS, _provider(missing, "lambda", sim, cp))
    return [wrong, missing]


async def _cleanup(api: Client, names: list[str]) -> None:
    for name in names:
        await api.delete(GPUPROVIDERS, name)
    await api.delete(SECRETS, names[0], namespace=NAMESPACE)


async def test_offers_json_cheapest_first_with_availability_and_errors(
    api: Client, env: Env, sim: Simulator, control_plane: ControlPlane
) -> None:
    bad = await _bad_providers(api, env, sim, control_plane)
    try:
        sim.state.set_capacity("runpod", "US-GA-1", "NVIDIA H100 80GB HBM3", 0)
        providers = [*env.providers.values(), *bad]
        flags = [f"--provider={p}" for p in providers]
        base = ["offers", "--kubeconfig", str(control_plane.kubeconfig), *flags, "-o", "json"]
        code, out = await cli(*base, "--gpu", "H100-80GB", "--count", "8")
        assert code == 0
        data = json.loads(out)

        offers: list[dict[str, Any]] = data["offers"]
        prices = [Decimal(o["pricePerHour"]) for o in offers]
        assert prices == sorted(prices) and prices
        assert {(o["gpuType"], o["gpuCount"]) for o in offers} == {("H100-80GB", 8)}
        assert {o["provider"] for o in offers} == set(env.providers.values())
        first = offers[0]
        assert (first["provider"], first["capacityType"]) == (env.providers["runpod"], "spot")
        runpod = [(o["nativeRegion"], o["available"]) for o in offers if o["cloud"] == "runpod"]
        assert {a for r, a in runpod if r == "US-GA-1"} == {False}  # spot and on-demand
        assert {a for r, a in runpod if r != "US-GA-1"} == {True}
        assert set(offers[0]) == {
            "provider",
            "cloud",
            "region",
            "nativeRegion",
            "gpuType",
            "gpuCount",
            "instanceType",
            "capacityType",
            "pricePerHour",
            "available",
        }
        errors = {e["provider"]: e for e in data["errors"]}
        assert set(errors) == set(bad)
        assert errors[bad[0]]["reason"] == "AuthError"
        assert errors[bad[1]]["reason"] == "SecretNotFound"
        assert f"Secret {NAMESPACE}/{bad[1]} does not exist" in errors[bad[1]]["message"]

        code, out = await cli(*base, "--gpu", "H100-80GB", "--spot", "--region", "us-east")
        spot = json.loads(out)["offers"]
        assert spot and {(o["capacityType"], o["region"]) for o in spot} == {("spot", "us-east")}
        assert {o["gpuCount"] for o in spot} == set(range(1, 9))  # no --count: every size

        code, out = await cli(*base, "--gpu", "H100-80GB", "--count", "8", "--available")
        assert all(o["available"] for o in json.loads(out)["offers"])

        bad_only = flags[len(env.providers) :]
        code, out = await cli("offers", "--kubeconfig", str(control_plane.kubeconfig), *bad_only)
        assert code == 1  # no provider answered
        assert out.splitlines()[0] == "No offers."
        assert out.splitlines()[2].split() == ["PROVIDER", "ERROR", "MESSAGE"]
    finally:
        await _cleanup(api, bad)


async def test_offers_from_a_config_file_as_a_subprocess(sim: Simulator, tmp_path: Path) -> None:
    config = {
        "providers": [
            {
                "name": cloud,
                "type": cloud,
                "endpoint": sim.endpoint(cloud),
                "apiKeyEnv": f"TEST_{cloud.upper()}_KEY",
            }
            for cloud in ("lambda", "runpod", "paperspace")
        ]
    }
    path = tmp_path / "providers.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "TEST_LAMBDA_KEY": sim.api_key("lambda")}
    env["TEST_RUNPOD_KEY"] = sim.api_key("runpod")
    env.pop("TEST_PAPERSPACE_KEY", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gpuctl.cli.main",
        "offers",
        "--config",
        str(path),
        "--gpu",
        "H100-80GB",
        "--count",
        "1",
        "-o",
        "json",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    data = json.loads(out)
    assert {o["provider"] for o in data["offers"]} == {"lambda", "runpod"}
    assert data["errors"] == [
        {
            "provider": "paperspace",
            "reason": "SecretKeyMissing",
            "message": "$TEST_PAPERSPACE_KEY is unset or empty",
        }
    ]
    cheapest = data["offers"][0]
    assert Decimal(cheapest["pricePerHour"]) == min(
        Decimal(o["pricePerHour"]) for o in data["offers"]
    )
