"""The Containerfile, checked by reading it (no container engine here to build it).

The operator image must be multi-stage (no build tools or wheels in it), run as a
numeric non-root user (so `runAsNonRoot` can verify it), start `gpuctl run` in exec
form, and carry gpuctl's runtime dependencies only: no sim, test or dev extras.
"""

from __future__ import annotations

import re
from pathlib import Path

import attrs
import pytest

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


def test_containerignore_keeps_the_context_small() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".containerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", "bin", "tests", "hack/node_modules", ".git"} <= ignored
    # Whatever the Containerfile copies must not be ignored.
    assert not {"gpuctl", "setup.cfg", "pyproject.toml", "README.md"} & ignored
