"""The browser tests' setup: the demo's pieces, once per module, and a headless chromium.

A real control plane (session-wide), the simulated clouds whose machines join with
real kubeadm-join and kubelet code, three GPUProviders on them plus one whose "cloud"
answers every call with a 401 carrying markup (a hostile cloud error), and the
operator run in-process exactly as `gpuctl run --ui` builds it (its dashboard on its
health port, fed by its own caches). The e2e suite's credential scan runs after each
test, and the tests scan every page and API answer for the issued keys too.
Screenshots go to $GPUCTL_SCREENSHOT_DIR when set (`make dashboard-screenshots` sets
docs/img), else to a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from aiohttp import web
from kubernetes_asyncio import client

from gpuctl.cli.run import dashboard_extension
from gpuctl.controllers.resources import GPUNODEREQUESTS, GPUPROVIDERS
from gpuctl.dev.controlplane import ControlPlane
from gpuctl.runtime.client import Client
from gpuctl.runtime.resources import SECRETS
from gpuctl.sim import SimConfig, Simulator
from tests.browser.driver import Browser, missing
from tests.e2e.conftest import (  # noqa: F401 - fixtures
    CLOUDS,
    ISSUED_KEYS,
    NAMESPACE,
    Env,
    Running,
    _provider,
    _secret,
    cluster_ready,
    delete_and_wait,
    no_credential_leaks,
    operator_config,
    start_operator,
)

HOSTILE = '<img src=x onerror="alert(document.domain)"><script>alert(1)</script>'


@attrs.define
class Board:
    url: str
    metrics_url: str
    api: Client
    sim: Simulator
    env: Env
    running: Running
    hostile_provider: str
    shots: Path
    kubeconfig: Path
    made: list[str] = attrs.Factory(list)

    async def make_request(self, name: str, spec: dict[str, Any]) -> str:
        full = f"{name}-{self.env.suffix}"
        body = {
            "apiVersion": "gpuctl.io/v1alpha1",
            "kind": "GPUNodeRequest",
            "metadata": {"name": full, "labels": {"team": "research"}},
            "spec": spec,
        }
        await self.api.create(GPUNODEREQUESTS, body)
        self.made.append(full)
        return full


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    why = missing()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests cannot run: {why}")
        pytest.skip(why)
    async with Browser.start() as started:
        yield started


async def _hostile_cloud() -> web.AppRunner:
    """A "Lambda" that refuses every call with a 401 whose message is markup."""

    async def refuse(request: web.Request) -> web.Response:
        body = {"error": {"code": "global/invalid-api-key", "message": HOSTILE}}
        return web.json_response(body, status=401)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", refuse)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


@pytest.fixture(scope="module")
async def board(
    cluster_ready: None,  # noqa: F811
    kube: client.ApiClient,
    control_plane: ControlPlane,
) -> AsyncIterator[Board]:
    api = Client(kube)
    config = SimConfig(
        seed=7,
        boot_seconds=0.3,
        terminate_seconds=0.2,
        kubeconfig=control_plane.kubeconfig,
        ca_file=control_plane.ca_file,
        execute_join_data=True,
    )
    suffix = secrets.token_hex(3)
    providers = {cloud: f"{cloud}-{suffix}" for cloud in CLOUDS}
    hostile = f"hostile-{suffix}"
    hostile_key = f"hostile-key-{secrets.token_hex(8)}"
    ISSUED_KEYS.add(hostile_key)
    env = Env(suffix, providers, f"ui-{suffix}")
    async with contextlib.AsyncExitStack() as stack:
        sim = await stack.enter_async_context(Simulator(config))
        ISSUED_KEYS.update(sim.api_key(cloud) for cloud in CLOUDS)
        cloud = await _hostile_cloud()
        stack.push_async_callback(cloud.cleanup)
        for cloud_name, name in providers.items():
            await api.create(SECRETS, _secret(name, sim.api_key(cloud_name)), namespace=NAMESPACE)
            await api.create(GPUPROVIDERS, _provider(name, cloud_name, sim, control_plane))
        await api.create(SECRETS, _secret(hostile, hostile_key), namespace=NAMESPACE)
        spec = _provider(hostile, "lambda", sim, control_plane)
        port = cloud.addresses[0][1]
        spec["spec"]["endpoint"] = f"http://127.0.0.1:{port}"
        await api.create(GPUPROVIDERS, spec)
        for name in (*providers.values(), hostile):
            stack.push_async_callback(api.delete, GPUPROVIDERS, name)
            stack.push_async_callback(api.delete, SECRETS, name, namespace=NAMESPACE)
        ui = dashboard_extension(argparse.Namespace(namespace=NAMESPACE, health_host="127.0.0.1"))
        running = await start_operator(operator_config(env, control_plane, extensions=(ui,)))
        stack.push_async_callback(running.halt)
        while running.operator.manager is None or running.operator.manager.health_port is None:
            if running.task.done():
                running.task.result()
            await asyncio.sleep(0.05)
        health = running.operator.manager.health_port
        shots = Path(os.environ.get("GPUCTL_SCREENSHOT_DIR") or tempfile.mkdtemp(prefix="ui-"))
        shots.mkdir(parents=True, exist_ok=True)
        made = Board(
            url=f"http://127.0.0.1:{health}/ui/",
            metrics_url=f"http://127.0.0.1:{health}/metrics",
            api=api,
            sim=sim,
            env=env,
            running=running,
            hostile_provider=hostile,
            shots=shots,
            kubeconfig=control_plane.kubeconfig,
        )
        yield made
        # All at once: each waits for its machine's teardown.
        await asyncio.gather(*(delete_and_wait(api, name) for name in made.made))
