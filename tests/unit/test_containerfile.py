"""The Containerfile, checked by reading it (fast; no container engine needed).

The operator image must be multi-stage (no build tools or wheels in it), run as a
numeric non-root user (so `runAsNonRoot` can verify it), start `gpuctl run` in exec
form, and carry gpuctl's runtime dependencies only: no sim, test or dev extras.
Every stage starts from the PYTHON_IMAGE build argument, so `make image` (hack/image/)
builds the same file on a local base with Buildah; the built images are checked from
the inside by hack/image/check.sh, and tests/integration/test_image_smoke.py runs the
stages' pip commands in `make test`.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import attrs
import pytest
import yaml

import gpuctl

ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = ROOT / "Containerfile"


@attrs.frozen
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]]  # (INSTRUCTION, arguments)

    def args(self, instruction: str) -> list[str]:
        return [rest for name, rest in self.instructions if name == instruction]


def parse(text: str) -> list[Stage]:
    """Split into stages of (instruction, arguments); continuations joined, comments dropped."""
    logical = re.sub(
        r"\\\n",
        " ",
        "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")),
    )
    stages: list[Stage] = []
    for line in logical.splitlines():
        if not line.strip():
            continue
        instruction, _, rest = line.strip().partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            match = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", rest.strip(), re.IGNORECASE)
            assert match, f"every stage is named: FROM {rest}"
            stages.append(Stage(match[2], match[1], []))
        elif stages:
            stages[-1].instructions.append((instruction, " ".join(rest.split())))
    return stages


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    parsed = parse(CONTAINERFILE.read_text())
    assert len({s.name for s in parsed}) == len(parsed)
    return {stage.name: stage for stage in parsed}


@pytest.fixture(scope="module")
def final(stages: dict[str, Stage]) -> Stage:
    """The stage a build without --target produces: the last one."""
    return list(stages.values())[-1]


def test_multi_stage_with_the_runtime_last(stages: dict[str, Stage], final: Stage) -> None:
    assert {"builder", "sim", "runtime"} <= set(stages)
    assert final.name == "runtime"
    assert "pip wheel" in " ".join(stages["builder"].args("RUN"))


def test_runtime_is_python_311_slim(final: Stage) -> None:
    text = CONTAINERFILE.read_text()
    assert final.base == "${PYTHON_IMAGE}"
    assert re.search(r"^ARG PYTHON_IMAGE=\S*python:3\.11-slim$", text, re.MULTILINE)


@pytest.mark.parametrize("name", ["runtime", "sim"])
def test_runs_as_a_numeric_non_root_user(stages: dict[str, Stage], name: str) -> None:
    users = stages[name].args("USER")
    assert users, f"{name} sets no USER: it would run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0
    assert not gid or (gid.isdigit() and int(gid) != 0)


def test_runtime_installs_only_gpuctl_without_extras(final: Stage) -> None:
    runs = " ".join(final.args("RUN"))
    assert re.search(r"pip install .*--no-index .*\bgpuctl$", runs), runs
    assert "[" not in runs  # no extras at all: sim, test, dev
    for extra in ("sim", "test", "dev", "openapi", "pytest", "hypothesis", "ruff", "mypy"):
        assert extra not in runs, runs
    assert not final.args("COPY"), "the wheels come in through a bind mount, not a layer"


def test_sim_stage_installs_the_sim_extra_only(stages: dict[str, Stage]) -> None:
    runs = " ".join(stages["sim"].args("RUN"))
    assert "'gpuctl[sim]'" in runs
    assert "test" not in runs and "dev" not in runs


def test_entrypoint_and_command_in_exec_form(stages: dict[str, Stage], final: Stage) -> None:
    assert final.args("ENTRYPOINT") == ['["gpuctl"]']
    assert final.args("CMD") == ['["run"]']
    assert stages["sim"].args("CMD") == ['["sim"]']


def test_containerignore_admits_only_what_the_containerfile_copies(
    stages: dict[str, Stage],
) -> None:
    """Everything ignored (`*`), then exactly the COPY sources let back in."""
    patterns = [
        line.strip()
        for line in (ROOT / ".containerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"
    admitted = {p[1:] for p in patterns if p.startswith("!")}
    copied = {
        source
        for stage in stages.values()
        for args in stage.args("COPY")
        for source in args.split()[:-1]
    }
    assert admitted == copied == {"pyproject.toml", "setup.cfg", "README.md", "gpuctl"}
    assert {"**/__pycache__", "**/*.pyc"} <= set(patterns)


def test_every_stage_starts_from_the_python_image_argument(stages: dict[str, Stage]) -> None:
    """Only the build argument changes between Docker's default base and the local one:
    no other image is named, not even a bind mount's source (those are stages)."""
    text = CONTAINERFILE.read_text()
    assert text.index("ARG PYTHON_IMAGE=") < text.index("FROM ")
    assert {stage.base for stage in stages.values()} == {"${PYTHON_IMAGE}"}
    sources = re.findall(r"--mount=\S*\bfrom=([^,\s]+)", " ".join(
        rest for stage in stages.values() for rest in stage.args("RUN")
    ))  # fmt: skip
    assert sources and set(sources) <= set(stages), sources


def test_no_syntax_directive_that_would_pull_a_frontend_image() -> None:
    first = CONTAINERFILE.read_text().splitlines()[0]
    assert not re.match(r"#\s*syntax\s*=", first, re.IGNORECASE), first


def _image_of(manifest: Path, container: str) -> str:
    (deployment,) = [
        d for d in yaml.safe_load_all(manifest.read_text()) if d["kind"] == "Deployment"
    ]
    (image,) = [
        c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]
        if c["name"] == container
    ]  # fmt: skip
    return str(image)


def test_make_image_tags_what_the_manifests_run() -> None:
    """hack/image/lib.sh tags from gpuctl.__version__; the Deployments name those tags."""
    names = subprocess.run(
        ["bash", "-c", 'source hack/image/lib.sh && echo "$GPUCTL_IMAGE $GPUCTL_SIM_IMAGE"'],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert names[0] == f"ghcr.io/gpuctl/gpuctl:v{gpuctl.__version__}"
    assert names == [
        _image_of(ROOT / "manifests" / "manager" / "deployment.yaml", "manager"),
        _image_of(ROOT / "manifests" / "sim" / "deployment.yaml", "sim"),
    ]
