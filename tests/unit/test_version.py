"""One version: gpuctl.__version__ is the package's, and the image tag everywhere is v<it>.

setup.cfg reads the version from gpuctl/__init__.py; the images `make image` builds are
tagged `v` + that version (hack/image/lib.sh reads the same file); the manifests, the
Makefile, the Containerfile's comments and the docs must name exactly those images. A
release bumps `__version__` and these literals together, or this test fails.
"""

from __future__ import annotations

import configparser
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

import gpuctl

ROOT = Path(__file__).resolve().parents[2]
TAG = f"v{gpuctl.__version__}"
IMAGES = ("ghcr.io/gpuctl/gpuctl", "ghcr.io/gpuctl/gpuctl-sim")
# `<image>:<tag>` wherever an image is named with a literal tag.
REFERENCE = re.compile(
    r"ghcr\.io/gpuctl/gpuctl(?:-sim)?:(v?(?:\$\(\w+\)|\$\{\w+\}|\$\w+|<version>|[A-Za-z0-9_.-]+))"
)
# Files that name the images; a shell or make variable stands for the version there.
NAMING = [
    "Makefile",
    "Containerfile",
    "README.md",
    "docs/install.md",
    *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "hack").glob("**/*.sh")),
    *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "manifests").glob("**/*.yaml")),
]
VERSION_VARIABLES = {"v$GPUCTL_VERSION", "v${GPUCTL_VERSION}", "v$(VERSION)", "v${VERSION}"}
PLACEHOLDER = "v<version>"  # in help texts and comments


def test_setup_cfg_takes_the_version_from_the_package() -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    assert config["metadata"]["version"] == "attr: gpuctl.__version__"


def test_the_deployment_runs_the_image_of_this_version() -> None:
    deployment = yaml.safe_load((ROOT / "manifests/manager/deployment.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"ghcr.io/gpuctl/gpuctl:{TAG}"


@pytest.mark.parametrize("name", [n for n in NAMING if REFERENCE.search((ROOT / n).read_text())])
def test_every_image_reference_has_this_version(name: str) -> None:
    text = (ROOT / name).read_text()
    tags = set(REFERENCE.findall(text))
    assert tags <= {TAG, PLACEHOLDER} | VERSION_VARIABLES, f"{name}: {tags}"
    if tags & VERSION_VARIABLES:  # the variable must come from gpuctl/__init__.py
        assert "gpuctl/__init__.py" in text, name


@pytest.mark.parametrize("name", [n for n in NAMING if n.endswith(".yaml") or n.endswith(".md")])
def test_kustomize_new_tags_have_this_version(name: str) -> None:
    """`images: [{name: ghcr.io/gpuctl/..., newTag: ...}]` in manifests and the docs' overlays."""
    text = (ROOT / name).read_text()
    for image, tag in re.findall(r"- name: (\S+)\n\s+(?:newName: \S+\n\s+)?newTag: (\S+)", text):
        if image in IMAGES:
            assert tag == TAG, f"{name}: {image} newTag {tag}"


def test_make_image_builds_the_tags_the_manifests_name() -> None:
    """`make image` / `make image-sim` run hack/image/build.sh, whose image names come from
    hack/image/lib.sh: sourced here as build.sh sources it, with no override set."""
    makefile = (ROOT / "Makefile").read_text()
    for target, stage in (("image", "runtime"), ("image-sim", "sim")):
        recipe = re.search(rf"^{target}:.*\n\t(.*)$", makefile, re.MULTILINE)
        assert recipe, f"no `make {target}`"
        assert recipe.group(1).split() == ["hack/image/build.sh", stage]
    build = (ROOT / "hack/image/build.sh").read_text()
    assert re.search(r"runtime\) image=\$GPUCTL_IMAGE ;;", build)
    assert re.search(r"sim\) image=\$GPUCTL_SIM_IMAGE ;;", build)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GPUCTL_")}
    sourced = subprocess.run(
        ["bash", "-c", 'source hack/image/lib.sh && echo "$GPUCTL_IMAGE $GPUCTL_SIM_IMAGE"'],
        cwd=ROOT, env=environ, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert sourced.stdout.split() == [f"{image}:{TAG}" for image in IMAGES]
