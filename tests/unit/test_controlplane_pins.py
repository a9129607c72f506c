"""The control plane's pins agree with each other (Makefile, go.mod, .mise.toml)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _makefile_version() -> str:
    match = re.search(r"^K8S_VERSION := (v[\d.]+)$", (ROOT / "Makefile").read_text(), re.M)
    assert match
    return match.group(1)


def test_makefile_version_matches_go_mod() -> None:
    version = _makefile_version()
    go_mod = (ROOT / "hack/controlplane/go.mod").read_text()
    assert f"k8s.io/kubernetes {version}\n" in go_mod
    staging = re.findall(r"^\s+(k8s\.io/[\w-]+) => \1 (v[\d.]+)$", go_mod, re.M)
    assert len(staging) >= 30, "one replace per staging module"
    minor = version.split(".", 1)[1]
    assert {v for _, v in staging} == {f"v0.{minor}"}


def test_mise_pins_the_same_kubectl() -> None:
    assert f'kubectl = "{_makefile_version()[1:]}"' in (ROOT / ".mise.toml").read_text()
