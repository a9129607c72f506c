"""`gpuctl controlplane up`: a local etcd + kube-apiserver in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path
from typing import Any

from gpuctl.dev.controlplane import ControlPlane


def register(commands: Any) -> None:
    parser = commands.add_parser("controlplane", help="run a local Kubernetes control plane")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = actions.add_parser(
        "up",
        help="start etcd and kube-apiserver; print the kubeconfig path; stop on Ctrl-C",
        description="Start a real etcd and kube-apiserver (RBAC on) on loopback ports, "
        "print the admin kubeconfig path and stay in the foreground until Ctrl-C or SIGTERM.",
    )
    up.add_argument("--dir", type=Path, help="working directory (default: a temporary one)")
    up.set_defaults(handler=_up)


def _up(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args.dir))


async def _run(workdir: Path | None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with ControlPlane(workdir=workdir) as cp:
        print(cp.kubeconfig, flush=True)
        print(
            f"# ready in {cp.ready_seconds:.1f}s at {cp.url}; try: "
            f"{cp.kubectl} --kubeconfig {cp.kubeconfig} get --raw /readyz",
            flush=True,
        )
        await stop.wait()
    return 0
