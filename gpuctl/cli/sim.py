"""`gpuctl sim`: the simulated GPU clouds in the foreground, until Ctrl-C or SIGTERM.

Prints each cloud's endpoint and API key and the control API's URL (a table,
or one JSON object with `-o json`), then serves. Flags override the config
file, which overrides the defaults (gpuctl/sim/default.yaml).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:  # gpuctl.sim needs the `sim` extra (openapi-core): import it when run
    from gpuctl.sim import SimConfig, Simulator

CLOUDS = ("lambda", "runpod", "paperspace", "crusoe", "hyperstack", "digitalocean")  # sim.config
PORT_NAMES = (*CLOUDS, "control")


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "sim",
        help="run the simulated GPU clouds (Lambda, RunPod, Paperspace, Crusoe, Hyperstack, "
        "DigitalOcean)",
        description="Serve the simulated clouds' APIs on loopback ports, "
        "print their endpoints, API keys and the control API URL, and stay in the "
        "foreground until Ctrl-C or SIGTERM. See docs/sim.md.",
    )
    parser.add_argument("--config", type=Path, help="YAML configuration (docs/sim.md)")
    parser.add_argument("--seed", type=int, help="seed of ids, addresses and interruptions")
    parser.add_argument("--boot-seconds", type=float, help="launch-to-running delay")
    parser.add_argument(
        "--interrupt-rate", type=float, help="spot interruptions per spot instance-hour"
    )
    parser.add_argument(
        "--execute-join-data",
        action="store_true",
        default=None,
        help="boot each machine as a process tree that runs its join data (needs root)",
    )
    parser.add_argument("--node-agent", type=Path, help="the node agent binary machines run")
    parser.add_argument("--workdir", type=Path, help="where machines' files go")
    parser.add_argument("--kubeconfig", type=Path, help="the cluster machines join (informational)")
    parser.add_argument("--ca-file", type=Path, help="that cluster's CA (informational)")
    parser.add_argument(
        "--ports",
        type=parse_ports,
        help="fixed ports, e.g. lambda=8001,runpod=8002,paperspace=8003,control=8000",
    )
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table")
    parser.set_defaults(handler=_run)


def parse_ports(text: str) -> dict[str, int]:
    ports: dict[str, int] = {}
    for item in filter(None, text.split(",")):
        name, _, value = item.partition("=")
        if name not in PORT_NAMES or not value.isdigit():
            raise argparse.ArgumentTypeError(f"expected NAME=PORT with NAME in {PORT_NAMES}")
        ports[name] = int(value)
    return ports


def config_from_args(args: argparse.Namespace) -> SimConfig:
    from gpuctl.sim import SimConfig  # noqa: PLC0415 - needs the optional `sim` extra

    config = SimConfig.from_yaml(args.config) if args.config else SimConfig()
    flags = {
        "seed": args.seed,
        "boot_seconds": args.boot_seconds,
        "interrupt_rate": args.interrupt_rate,
        "kubeconfig": args.kubeconfig,
        "ca_file": args.ca_file,
        "execute_join_data": args.execute_join_data,
        "node_agent": args.node_agent,
        "workdir": args.workdir,
    }
    overrides: dict[str, Any] = {k: v for k, v in flags.items() if v is not None}
    if args.ports:
        overrides["ports"] = {**config.ports, **args.ports}
    return attrs.evolve(config, **overrides)


def describe(sim: Simulator) -> dict[str, Any]:
    return {
        "endpoints": {cloud: sim.endpoint(cloud) for cloud in CLOUDS},
        "api_keys": {cloud: sim.api_key(cloud) for cloud in CLOUDS},
        "control_url": sim.control_url,
        "seed": sim.config.seed,
        "machines": sim.config.execute_join_data,
    }


def render_table(info: dict[str, Any]) -> str:
    rows = [("CLOUD", "ENDPOINT", "API KEY")]
    rows += [(c, info["endpoints"][c], info["api_keys"][c]) for c in CLOUDS]
    rows.append(("control", info["control_url"], "-"))
    width = [max(len(row[i]) for row in rows) for i in range(2)]
    return "\n".join(f"{a:<{width[0]}}  {b:<{width[1]}}  {c}" for a, b, c in rows)


def _run(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except (OSError, ValueError) as error:
        print(f"gpuctl sim: {error}", file=sys.stderr)
        return 2
    return asyncio.run(_serve(config, args.output))


async def _serve(config: SimConfig, output: str) -> int:
    from gpuctl.sim import MachineError, Simulator  # noqa: PLC0415 - the optional `sim` extra

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    sim = Simulator(config)
    try:
        await sim.start()  # stops what it started if it fails
    except MachineError as error:
        print(f"gpuctl sim: {error}", file=sys.stderr, flush=True)
        return 2
    try:
        info = describe(sim)
        print(json.dumps(info) if output == "json" else render_table(info), flush=True)
        if not config.execute_join_data:
            print(
                "# join data is not executed (no --execute-join-data): machines join nothing",
                file=sys.stderr,
                flush=True,
            )
        await stop.wait()
    finally:
        await sim.stop()
    return 0
