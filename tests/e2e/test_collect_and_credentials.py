"""Leaked machines are collected; a bad credential shows on its provider and stops nothing else."""

from __future__ import annotations

import base64
from decimal import Decimal

import aiohttp
import attrs

from gpuctl.controllers.resources import GPUPROVIDERS
from gpuctl.providers.base import CapacityType, DriverConfig, LaunchRequest, Offer
from gpuctl.providers.registry import build_driver
from gpuctl.runtime.client import Client
from gpuctl.runtime.resources import EVENTS, SECRETS
from gpuctl.sim import Simulator
from tests.e2e.conftest import NAMESPACE, Env, MakeRequest, Running, wait_for, wait_phase

A10 = Offer(
    provider="direct",
    cloud="lambda",
    region="us-east",
    native_region="us-east-1",
    gpu_type="A10-24GB",
    gpu_count=1,
    instance_type="gpu_1x_a10",
    capacity_type=CapacityType.ON_DEMAND,
    price_per_hour=Decimal("0.75"),
)


async def launch_behind_our_back(sim: Simulator, name: str, region: str = "us-east-1") -> str:
    config = DriverConfig(
        name="direct",
        cloud="lambda",
        api_key=sim.api_key("lambda"),
        endpoint=sim.endpoint("lambda"),
        options={"sshKeyName": "gpuctl", "rateLimit": "unlimited"},
    )
    async with aiohttp.ClientSession() as session:
        driver = build_driver(config, session)
        offer = attrs.evolve(A10, native_region=region)
        instance = await driver.launch(LaunchRequest(name=name, offer=offer))
        await driver.close()
    return instance.id


async def test_orphaned_machines_are_collected_and_others_left_alone(
    sim: Simulator, env: Env, operator: Running
) -> None:
    orphan = await launch_behind_our_back(sim, f"gpuctl-{env.cluster}-0123456789ab-1")
    foreign = await launch_behind_our_back(sim, "gpuctl-other-0123456789ab-1", "us-west-1")
    stranger = await launch_behind_our_back(sim, "training-box", "us-south-1")

    async def collected() -> bool:
        return not sim.state.instance("lambda", orphan).phase.live

    await wait_for(collected, 30, "the orphan terminated")
    assert sim.state.instance("lambda", foreign).phase.live
    assert sim.state.instance("lambda", stranger).phase.live
    assert operator.operator.collector is not None


async def test_bad_credential_shows_on_its_provider_and_stops_nothing_else(
    api: Client, env: Env, make_request: MakeRequest
) -> None:
    bad = f"bad-{env.suffix}"
    secret = {"metadata": {"name": bad, "namespace": NAMESPACE},
              "data": {"apiKey": base64.b64encode(b"not-the-key").decode()}}  # fmt: skip
    await api.create(SECRETS, secret, namespace=NAMESPACE)
    good = await api.get(GPUPROVIDERS, env.providers["lambda"])
    spec = {**good["spec"], "credentialsSecretRef": {"namespace": NAMESPACE, "name": bad}}
    await api.create(GPUPROVIDERS, {"apiVersion": "gpuctl.io/v1alpha1", "kind": "GPUProvider",
                                    "metadata": {"name": bad}, "spec": spec})  # fmt: skip
    try:
        name = await make_request(
            "cred",
            {"gpu": {"type": "A10-24GB", "count": 1}, "providers": [bad, env.providers["lambda"]],
             "placement": "ordered"},
        )  # fmt: skip

        async def flagged() -> bool:
            conditions = ((await api.get(GPUPROVIDERS, bad)).get("status") or {}).get(
                "conditions"
            ) or []
            return any(
                c["type"] == "CredentialsValid"
                and c["status"] == "False"
                and c["reason"] == "AuthFailed"
                for c in conditions
            )

        await wait_for(flagged, 30, "CredentialsValid=False on the bad provider")
        obj = await wait_phase(api, name, "Ready")
        assert obj["status"]["offer"]["provider"] == env.providers["lambda"]
        events = await api.list(
            EVENTS, namespace="default", field_selector=f"involvedObject.name={bad}"
        )
        assert any(e["reason"] == "AuthFailed" for e in events["items"])
        for e in events["items"]:
            assert "not-the-key" not in e["message"]
    finally:
        await api.delete(GPUPROVIDERS, bad)
        await api.delete(SECRETS, bad, namespace=NAMESPACE)
