#!/usr/bin/env python3
"""Enforce gpuctl's layering: a package imports only itself and lower layers.

Layers, lowest first (kopf's cogs -> core -> kits, in our names):
  0  gpuctl.util                                  primitives
  1  gpuctl.api, gpuctl.runtime, gpuctl.dev       types; engine; local control plane
  2  gpuctl.providers                             cloud drivers behind one protocol
  3  gpuctl.controllers, gpuctl.sim               the operator's logic; simulated clouds
  4  gpuctl.dashboard                             the read-only web UI over the caches
  5  gpuctl.cli                                   commands wiring everything together
Packages on the same layer do not import each other either. Exit 1 on a violation.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

LAYERS: dict[str, int] = {
    "gpuctl.util": 0,
    "gpuctl.api": 1,
    "gpuctl.runtime": 1,
    "gpuctl.dev": 1,
    "gpuctl.providers": 2,
    "gpuctl.controllers": 3,
    "gpuctl.sim": 3,
    "gpuctl.dashboard": 4,
    "gpuctl.cli": 5,
}


def package_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "gpuctl":
        return None
    if len(parts) == 1:
        return "gpuctl"
    return ".".join(parts[:2])


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                drop = node.level - 1 if is_package else node.level
                base = base[: len(base) - drop] if drop else base
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append((node.lineno, target))
    return found


def check(root: Path) -> list[str]:
    errors: list[str] = []
    for path in sorted((root / "gpuctl").rglob("*.py")):
        module = module_name(path, root)
        own = package_of(module)
        if own not in LAYERS:
            continue
        tree = ast.parse(path.read_text(), str(path))
        for lineno, target in imports_of(tree, module, path.name == "__init__.py"):
            other = package_of(target)
            if other is None or other in (own, "gpuctl"):
                continue
            if other not in LAYERS:
                errors.append(f"{path}:{lineno}: {target} is in no layer; add it to LAYERS")
            elif LAYERS[other] >= LAYERS[own]:
                errors.append(
                    f"{path}:{lineno}: {own} (layer {LAYERS[own]}) must not import "
                    f"{target} (layer {LAYERS[other]})"
                )
    return errors


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    errors = check(root)
    for error in errors:
        print(error, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
