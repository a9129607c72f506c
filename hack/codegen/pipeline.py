"""The whole generation as a pure function: repository root -> {path: text}.

`build_all` produces every generated file in memory (the 3.0 specs, then the
Python modules from those specs), so `generate` and `check` cannot disagree:
one writes the result, the other compares it with the tree. A `_generated/`
directory holds only what the generator produces; anything else there is
reported as stale by `check` and deleted by `generate`, so removed operations do
not linger.
"""

from __future__ import annotations

import json
from pathlib import Path

from codegen import clients, specs
from codegen.config import CLIENTS


def build_all(root: Path) -> dict[str, str]:
    return build_clients(root, build_specs(root))


def build_specs(root: Path) -> dict[str, str]:
    """Stage 1: {3.0 spec path: text}; needs the Node tools (npm ci --prefix hack)."""
    files: dict[str, str] = {}
    for job in specs.SPEC_JOBS:
        selected = {op for c in CLIENTS if c.spec == job.target for op in c.selected}
        files[job.target] = specs.build(root, job, selected)
        specs.validate(files[job.target], job.target)
    return files


def committed_specs(root: Path) -> dict[str, str]:
    """The 3.0 specs as committed: stage 2's input when Node is not available."""
    return {job.target: (root / job.target).read_text() for job in specs.SPEC_JOBS}


def build_clients(root: Path, spec_texts: dict[str, str]) -> dict[str, str]:
    """Stage 2: the specs plus the Python modules (and package markers) built from them."""
    files = dict(spec_texts)
    for client in CLIENTS:
        text = spec_texts[client.spec]
        files.update(clients.render(root, client, json.loads(text), text))
    for package in sorted({str(Path(path).parent) for path in files}):
        files[f"{package}/__init__.py"] = clients.render_package_init()
    return dict(sorted(files.items()))


def write(files: dict[str, str], out: Path) -> None:
    """Write `files` under `out` (unchanged ones untouched) and delete stray files."""
    for path, text in files.items():
        target = out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if not _same(target, text):
            target.write_text(text)
    for path in _strays(files, out):
        (out / path).unlink()


def stale(files: dict[str, str], root: Path) -> list[str]:
    """Paths whose committed content differs from `files`, or that should not exist."""
    found = [p for p, text in files.items() if not _same(root / p, text)]
    return sorted(found + _strays(files, root))


def _strays(files: dict[str, str], root: Path) -> list[str]:
    """Files in a `_generated/` directory that the generator does not produce."""
    found = []
    for package in sorted({Path(p).parent for p in files}):
        for path in sorted((root / package).glob("*")):
            relative = str(path.relative_to(root))
            if path.is_file() and relative not in files:
                found.append(relative)
    return found


def _same(path: Path, text: str) -> bool:
    return path.is_file() and path.read_text() == text
