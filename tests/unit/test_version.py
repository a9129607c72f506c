"""One version: gpuctl.__version__ is the package's, and the image tag everywhere is v<it>.

setup.cfg reads the version from gpuctl/__init__.py; the images `make image` builds are
tagged `v` + that version (hack/image/lib.sh reads the same file); the manifests, the
Makefile, the Containerfile's comments and the docs must name exactly those images. A
release bumps `__version__` and these literals together, or this test fails.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest
import yaml

import gpuctl

ROOT = Path(__file__).resolve().parents[2]
TAG = f"v{gpuctl.__version__}"
IMAGES = ("ghcr.io/gpuctl/gpuctl", "ghcr.io/gpuctl/gpuctl-sim")
# `<image>:<tag>` wherever an image is named with a literal tag.
REFERENCE = re.compile(
    r"ghcr\.io/gpuctl/gpuctl(?:-sim)?:(v?(?:\$\(\w+\)|\$\{\w+\}|\$\w+|[A-Za-z0-9_.-]+))"
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
    assert tags <= {TAG} | VERSION_VARIABLES, f"{name}: {tags}"
    if tags & VERSION_VARIABLES:  # the variable must come from gpuctl/__init__.py
        assert "gpuctl/__init__.py" in text, name


@pytest.mark.parametrize("name", [n for n in NAMING if n.endswith(".yaml") or n.endswith(".md")])
def test_kustomize_new_tags_have_this_version(name: str) -> None:
    """`images: [{name: ghcr.io/gpuctl/..., newTag: ...}]` in manifests and the docs' overlays."""
    text = (ROOT / name).read_text()
    for image, tag in re.findall(r"- name: (\S+)\n\s+(?:newName: \S+\n\s+)?newTag: (\S+)", text):
        if image in IMAGES:
            assert tag == TAG, f"{name}: {image} newTag {tag}"


def test_the_makefile_builds_the_tag_the_manifests_name() -> None:
    """`make image` builds ghcr.io/gpuctl/gpuctl:v<version>: by name in the Makefile, or
    through hack/image/lib.sh, whose default names it from gpuctl/__init__.py."""
    makefile = (ROOT / "Makefile").read_text()
    if not re.search(r"^image:", makefile, re.MULTILINE):
        pytest.skip("no `make image` target yet")
    names_it = REFERENCE.search(makefile) is not None
    lib = ROOT / "hack/image/lib.sh"
    if not names_it:
        assert "hack/image/" in makefile
        text = lib.read_text()
        assert re.search(
            r"GPUCTL_IMAGE=\$\{GPUCTL_IMAGE:-ghcr\.io/gpuctl/gpuctl:v\$GPUCTL_VERSION\}", text
        )
        assert "gpuctl/__init__.py" in text
