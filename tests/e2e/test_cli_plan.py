"""`gpuctl plan` chooses what the controller then chooses, for every sample request.

The samples' GPUProviders and Secrets are applied as written except for what must
point at the simulated clouds (endpoint, API key, a template the simulator serves,
a fast rate limit). For each sample GPUNodeRequest: plan it, then let the operator
reconcile it and compare the offer of its first attempt with plan's choice.
"""

from __future__ import annotations

import copy
import json
import secrets
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from gpuctl.controllers.resources import GPUNODEREQUESTS, GPUPROVIDERS
from gpuctl.dev.controlplane import ControlPlane
from gpuctl.runtime.client import Client, is_not_found
from gpuctl.runtime.resources import SECRETS
from gpuctl.sim import Simulator
from tests.e2e.conftest import Env, delete_and_wait, operator_config, start_operator, wait_for
from tests.e2e.test_cli_offers import cli

SAMPLES = Path(__file__).parents[2] / "manifests" / "samples"
REQUESTS = ("h100x8-spot.yaml", "a100x1-on-demand.yaml", "rtx4090x2-spot.yaml")
PROVIDERS = ("provider-lambda.yaml", "provider-runpod.yaml", "provider-paperspace.yaml")
SECRET_FILES = ("secret-lambda.yaml", "secret-runpod.yaml", "secret-paperspace.yaml")


def _sample(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((SAMPLES / name).read_text())
    return loaded


def _adapted_provider(name: str, sim: Simulator, cp: ControlPlane) -> dict[str, Any]:
    provider = copy.deepcopy(_sample(name))
    spec = provider["spec"]
    cloud = spec["type"]
    spec["endpoint"] = sim.endpoint(cloud)
    spec["bootstrap"]["apiServerEndpoint"] = cp.url
    spec["rateLimit"] = {**(spec.get("rateLimit") or {}), "requestsPerSecond": 1000}
    if cloud == "paperspace":
        templates = list(sim.config.catalog("paperspace").templates)
        spec["paperspace"]["templateId"] = templates[0]
    return provider


def _adapted_secret(name: str, sim: Simulator) -> dict[str, Any]:
    secret = _sample(name)
    cloud = secret["metadata"]["name"].removesuffix("-credentials")
    secret["stringData"] = {"apiKey": sim.api_key(cloud)}
    return secret


async def _delete(api: Client, kind: Any, name: str, namespace: str | None = None) -> None:
    try:
        await api.delete(kind, name, namespace=namespace)
    except Exception as err:
        if not is_not_found(err):
            raise


def _key(offer: dict[str, Any]) -> tuple[str, str, str, str]:
    return (offer["provider"], offer["nativeRegion"], offer["instanceType"], offer["capacityType"])


async def _first_offer(api: Client, name: str) -> tuple[tuple[str, str, str, str], Decimal | None]:
    """The offer of attempt 1, from status (or from failedOffers if it already failed over)."""
    found: dict[str, Any] = {}

    async def chosen() -> bool:
        found.update(await api.get(GPUNODEREQUESTS, name))
        return int((found.get("status") or {}).get("attempt") or 0) >= 1

    await wait_for(chosen, 30, f"{name} to get an offer")
    status = found["status"]
    if status["attempt"] == 1 and status.get("offer"):
        return _key(status["offer"]), Decimal(status["offer"]["pricePerHour"])
    failed = status["failedOffers"][0]
    return (
        failed["provider"],
        failed["region"],
        failed["instanceType"],
        failed["capacityType"],
    ), None


async def test_plan_and_the_controller_choose_the_same_offer_for_every_sample(
    cluster_ready: None,
    api: Client,
    sim: Simulator,
    control_plane: ControlPlane,
    tmp_path: Path,
) -> None:
    suffix = secrets.token_hex(3)
    providers = [_adapted_provider(f, sim, control_plane) for f in PROVIDERS]
    credentials = [_adapted_secret(f, sim) for f in SECRET_FILES]
    for secret in credentials:
        await api.create(SECRETS, secret, namespace=secret["metadata"]["namespace"])
    for provider in providers:
        await api.create(GPUPROVIDERS, provider)
    running = await start_operator(operator_config(Env(suffix, {}, f"e2e-{suffix}"), control_plane))
    kubeconfig = str(control_plane.kubeconfig)
    try:
        for sample in REQUESTS:
            request = _sample(sample)
            name = request["metadata"]["name"] = f"{request['metadata']['name']}-{suffix}"
            path = tmp_path / sample
            path.write_text(yaml.safe_dump(request))

            code, out = await cli("plan", "-f", str(path), "--kubeconfig", kubeconfig, "-o", "json")
            assert code == 0, out
            (planned,) = json.loads(out)["plans"]
            assert planned["request"] == name and planned["chosen"] == planned["ranked"][0]
            assert planned["unavailable"] == [] and planned["blocked"] == []
            code, text = await cli("plan", "-f", str(path), "--kubeconfig", kubeconfig)
            assert code == 0 and text.splitlines()[1] == f"CHOSEN: {planned['message']}"

            await api.create(GPUNODEREQUESTS, request)
            try:
                key, price = await _first_offer(api, name)
            finally:
                await delete_and_wait(api, name)
            assert key == _key(planned["chosen"]), (sample, planned["message"])
            assert price in (None, Decimal(planned["chosen"]["pricePerHour"]))
            if sample == "rtx4090x2-spot.yaml":  # spot only: on-demand rejected, with the reason
                reasons = {r["capacityType"]: r["reason"] for r in planned["rejected"]}
                assert reasons["on-demand"] == "on-demand not allowed"
    finally:
        await running.halt()
        for provider in providers:
            await _delete(api, GPUPROVIDERS, provider["metadata"]["name"])
        for secret in credentials:
            meta = secret["metadata"]
            await _delete(api, SECRETS, meta["name"], meta["namespace"])
    assert not sim.violations
