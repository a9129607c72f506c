"""Applying the project's own install manifests to the local cluster, as a user would.

The demo, the e2e suite and the benchmarks need gpuctl's join RBAC (`manifests/join`:
what lets a machine join with one of gpuctl's bootstrap tokens). They apply exactly
those files with `kubectl apply -k`, so a grant missing from `manifests/` makes the
join fail here too.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from gpuctl.dev.controlplane import ControlPlane, ControlPlaneError, repo_root


def manifests_dir(name: str) -> Path:
    """`manifests/<name>` of the checkout gpuctl runs from."""
    root = repo_root()
    directory = root / "manifests" / name if root is not None else None
    if directory is None or not (directory / "kustomization.yaml").is_file():
        raise ControlPlaneError(
            f"manifests/{name} not found: run from a gpuctl checkout (the wheel ships no manifests)"
        )
    return directory


async def apply_kustomization(cp: ControlPlane, directory: Path) -> str:
    """`kubectl apply -k directory` as the cluster admin; its output, or an error."""
    process = await asyncio.create_subprocess_exec(
        str(cp.kubectl),
        "--kubeconfig",
        str(cp.kubeconfig),
        "apply",
        "-k",
        str(directory),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise ControlPlaneError(f"kubectl apply -k {directory} failed:\n{out.decode()}")
    return out.decode()


async def apply_join_rbac(cp: ControlPlane) -> str:
    return await apply_kustomization(cp, manifests_dir("join"))
