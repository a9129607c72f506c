"""Command line: `python -m codegen generate|check [--root DIR] [--out DIR]` (PYTHONPATH=hack).

`generate` writes every generated file under `--out` (default: the repository);
`check` builds them in memory and exits 1 listing each file that differs from
the committed one, so a stale tree fails CI with the command that fixes it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from codegen import pipeline


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="codegen", description=__doc__)
    parser.add_argument("command", choices=["generate", "check"])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2])
    parser.add_argument("--out", type=Path, help="write here instead of into --root")
    args = parser.parse_args(argv)
    files = pipeline.build_all(args.root)
    if args.command == "generate":
        pipeline.write(files, args.out or args.root)
        return 0
    stale = pipeline.stale(files, args.root)
    for path in stale:
        print(f"stale generated file: {path}", file=sys.stderr)
    if stale:
        print("generated code is out of date: run `make generate` and commit", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
