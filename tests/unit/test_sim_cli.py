"""`gpuctl sim`: flags, config file, output, and a clean exit on SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from gpuctl.cli import sim as sim_cli
from gpuctl.cli.main import build_parser


def test_flags_override_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "sim.yaml"
    config.write_text("seed: 3\nboot_seconds: 9\nports: {runpod: 9001}\n")
    args = build_parser().parse_args(
        ["sim", "--config", str(config), "--boot-seconds", "0.5", "--ports", "lambda=9000"]
    )
    resolved = sim_cli.config_from_args(args)
    assert (resolved.seed, resolved.boot_seconds) == (3, 0.5)
    assert resolved.ports == {"runpod": 9001, "lambda": 9000}
    assert not resolved.execute_join_data


def test_bad_ports_are_rejected() -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        sim_cli.parse_ports("aws=1")
    assert sim_cli.parse_ports("control=8000,paperspace=8003") == {
        "control": 8000,
        "paperspace": 8003,
    }


def test_table() -> None:
    info = {
        "endpoints": {c: f"http://127.0.0.1:{n}" for n, c in enumerate(sim_cli.CLOUDS)},
        "api_keys": {c: f"sim-{c}-0" for c in sim_cli.CLOUDS},
        "control_url": "http://127.0.0.1:9",
    }
    lines = sim_cli.render_table(info).splitlines()
    assert lines[0].split() == ["CLOUD", "ENDPOINT", "API", "KEY"]
    assert lines[1].split() == ["lambda", "http://127.0.0.1:0", "sim-lambda-0"]
    assert lines[-1].split()[0] == "control"


async def test_serves_until_sigterm() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gpuctl.cli.main",
        "sim",
        "-o",
        "json",
        "--seed",
        "5",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        info = json.loads(line)
        assert info["api_keys"]["runpod"] == "sim-runpod-5"
        async with aiohttp.ClientSession() as session:
            async with session.get(info["control_url"] + "/") as response:
                assert (await response.json())["endpoints"] == info["endpoints"]
            headers = {"Authorization": "Bearer sim-lambda-5"}
            url = info["endpoints"]["lambda"] + "/api/v1/regions"
            async with session.get(url, headers=headers) as response:
                assert response.status == 200
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 15) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
