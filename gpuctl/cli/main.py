"""`gpuctl` command line: one sub-command per module under gpuctl.cli."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from gpuctl import __version__

# The sub-command modules, in `gpuctl --help` order (each module's `register`).
COMMANDS = ("controlplane", "sim", "run", "offers", "plan", "cost", "demo", "dashboard")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole CLI, or with `only`, just the module of that sub-command: `gpuctl run`
    then imports none of the others (the control plane's and the demo's modules bring
    the cryptography package and more: 10 MiB of the operator's RSS)."""
    parser = argparse.ArgumentParser(
        prog="gpuctl",
        description="Rent GPU machines from GPU clouds and make them Kubernetes nodes.",
    )
    parser.add_argument("--version", action="version", version=f"gpuctl {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS if only is None else (only,):
        importlib.import_module(f"gpuctl.cli.{name}").register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    first = args_list[0] if args_list else None
    only = first if first == "run" else None  # the long-running one; the rest load all
    args = build_parser(only).parse_args(args_list)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
