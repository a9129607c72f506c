"""`gpuctl` command line: one sub-command per module under gpuctl.cli."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gpuctl import __version__
from gpuctl.cli import controlplane, cost, dashboard, demo, offers, plan, run, sim


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpuctl",
        description="Rent GPU machines from GPU clouds and make them Kubernetes nodes.",
    )
    parser.add_argument("--version", action="version", version=f"gpuctl {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    controlplane.register(commands)
    sim.register(commands)
    run.register(commands)
    offers.register(commands)
    plan.register(commands)
    cost.register(commands)
    demo.register(commands)
    dashboard.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
