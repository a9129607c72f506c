"""A GPUNodeRequest becomes a Ready Node on the cheapest fitting offer, and goes away cleanly.

The operator here is the one users run: `gpuctl run` from the wheel, installed into a
fresh virtualenv (tests/wheel.py), as a child process with the flags that give the e2e
settings of `operator_config`.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gpuctl.controllers.resources import GPUNODEREQUESTS
from gpuctl.dev.controlplane import ControlPlane
from gpuctl.runtime.client import Client
from gpuctl.runtime.resources import EVENTS, NODES, SECRETS
from gpuctl.sim import Simulator
from tests.e2e.conftest import (
    ISSUED_KEYS,
    Env,
    MakeRequest,
    delete_and_wait,
    operator_config,
    wait_for,
    wait_phase,
)
from tests.wheel import GpuctlProcess, Installed, run_args, running_gpuctl


@pytest.fixture
async def operator(
    env: Env, control_plane: ControlPlane, gpuctl_wheel: Installed, tmp_path: Path
) -> AsyncIterator[GpuctlProcess]:
    """Replaces conftest's in-process operator for this module (`make_request` uses it)."""
    args = run_args(operator_config(env, control_plane))
    log = tmp_path / "operator.log"
    async with running_gpuctl(gpuctl_wheel, args, log, secrets=ISSUED_KEYS) as running:
        yield running


async def test_full_lifecycle_to_ready_and_back_to_nothing(
    api: Client,
    sim: Simulator,
    env: Env,
    make_request: MakeRequest,
    kubectl: list[str],
    control_plane: ControlPlane,
) -> None:
    name = await make_request(
        "h100",
        {
            "gpu": {"type": "H100-80GB", "count": 8},
            "capacityType": "on-demand",
            "maxPricePerHour": "25",
            "providers": [env.providers["lambda"], env.providers["paperspace"]],
            "node": {"labels": {"team": "ml"}, "taints": [{"key": "gpu", "effect": "NoSchedule"}]},
        },
    )
    wait = await asyncio.to_thread(
        subprocess.run,
        [*kubectl, "wait", "--for=condition=Ready", f"gnr/{name}", "--timeout=60s"],
        capture_output=True,
        text=True,
    )
    assert wait.returncode == 0, wait.stderr
    obj = await wait_phase(api, name, "Ready")
    status = obj["status"]
    assert status["offer"]["provider"] == env.providers["lambda"]  # $23.92 < paperspace $47.60
    assert status["offer"]["instanceType"] == "gpu_8x_h100_sxm5"
    assert status["attempt"] == 1
    node = await api.get(NODES, status["nodeName"])
    labels = node["metadata"]["labels"]
    assert labels["gpuctl.io/request"] == name and labels["team"] == "ml"
    assert node["status"]["capacity"]["nvidia.com/gpu"] == "8"
    assert {"key": "gpu", "effect": "NoSchedule"} in node["spec"]["taints"]
    assert node["spec"]["providerID"].endswith("/" + status["instance"]["id"])
    assert obj["metadata"]["finalizers"] == ["gpuctl.io/instance"]

    await delete_and_wait(api, name)
    instances = sim.instances("lambda")
    assert len(instances) == 1
    assert instances[0].phase.value in ("terminating", "terminated")
    nodes = await api.list(NODES, label_selector=f"gpuctl.io/request={name}")
    assert nodes["items"] == []
    tokens = await api.list(
        SECRETS, namespace="kube-system", label_selector=f"gpuctl.io/request={name}"
    )
    assert tokens["items"] == []
    assert not sim.violations


async def test_no_offer_under_the_cap_is_a_condition_and_an_event(
    api: Client, env: Env, make_request: MakeRequest
) -> None:
    name = await make_request(
        "cap",
        {
            "gpu": {"type": "H100-80GB", "count": 8},
            "maxPricePerHour": "20",
            "regions": ["us-east"],
            "providers": [env.providers["lambda"]],
        },
    )

    async def no_offer() -> bool:
        obj = await api.get(GPUNODEREQUESTS, name)
        conditions = (obj.get("status") or {}).get("conditions") or []
        return any(c["type"] == "OfferAvailable" and c["reason"] == "NoOffer" for c in conditions)

    await wait_for(no_offer, 30, "NoOffer condition")
    obj = await api.get(GPUNODEREQUESTS, name)
    assert obj["status"]["phase"] == "Pending"
    message = next(c for c in obj["status"]["conditions"] if c["type"] == "OfferAvailable")[
        "message"
    ]
    assert message == (
        f"no H100-80GB x8 on-demand under $20.00/h in us-east; "
        f"cheapest is {env.providers['lambda']} at $23.92/h"
    )
    events = await api.list(
        EVENTS, namespace="default", field_selector=f"involvedObject.name={name}"
    )
    assert any(
        e["reason"] == "NoOffer" and e["type"] == "Warning" and e["message"] == message
        for e in events["items"]
    )


async def test_max_lifetime_ends_the_request(
    api: Client, env: Env, make_request: MakeRequest, sim: Simulator
) -> None:
    name = await make_request(
        "lifetime",
        {
            "gpu": {"type": "A10-24GB", "count": 1},
            "providers": [env.providers["lambda"]],
            "lifetime": {"maxLifetime": "25s"},  # longer than a real join under load
        },
    )
    await wait_phase(api, name, "Ready")

    async def gone() -> bool:
        listed = await api.list(GPUNODEREQUESTS, field_selector=f"metadata.name={name}")
        return not listed["items"]

    await wait_for(gone, 60, "the request deleted at its maxLifetime")
    assert [i.phase.live for i in sim.instances("lambda")] == [False]
    events = await api.list(
        EVENTS, namespace="default", field_selector=f"involvedObject.name={name}"
    )
    reasons = [e["reason"] for e in events["items"]]
    assert "Expired" in reasons and "Terminating" in reasons
