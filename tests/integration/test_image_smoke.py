"""The container image: a fast stand-in in `make test`, the built images on request.

Building the images takes minutes and needs Buildah (`make image image-sim`, see
docs/install.md#the-container-image), so `make test` runs what the image build runs,
without a container engine: the Containerfile's own commands, read from it.

- builder stage: its COPY instructions into a scratch WORKDIR, then its `RUN pip wheel`
  as written (only `/wheels` moved to a temporary directory);
- runtime and sim stages: their `RUN pip install --no-index --find-links=/wheels ...` as
  written, each into a fresh virtualenv, without this machine's pip configuration (no
  PIP_* variables, no configuration file), so that nothing but those wheels is found.

The runtime virtualenv then must have what tests/unit/test_containerfile.py and
hack/image/check.sh require of the operator image: `gpuctl --help` and `gpuctl run --help`
work, gpuctl is the installed copy, and no test tool (pytest, hypothesis) nor simulator
dependency (openapi-core) is importable. The sim virtualenv has openapi-core and serves
`gpuctl sim --help`. The stages' ENV applies, except PIP_NO_CACHE_DIR: pip's cache only
makes the downloads fast. What a virtualenv cannot show (user 65532, no compilers in the
base) is checked in the built image by hack/image/check.sh: `GPUCTL_IMAGE_TESTS=1` runs it
here when Buildah is installed (`make image-smoke` builds both images and does that).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import gpuctl
from tests.unit.test_containerfile import CONTAINERFILE, Stage, parse

ROOT = CONTAINERFILE.parent
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
# Variables that would let a program import something other than what was installed.
_SCRUBBED = {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "VIRTUAL_ENV"}
# Never in the operator image; the sim image has only openapi_core of these.
TEST_TOOLS = ("pytest", "_pytest", "pytest_asyncio", "hypothesis", "ruff", "mypy")
SIM_ONLY = ("openapi_core",)
FIND_SPECS = (
    "import importlib.util, sys; "
    "print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m)))"
)


def stages() -> dict[str, Stage]:
    return {stage.name: stage for stage in parse(CONTAINERFILE.read_text())}


def stage_env(stage: Stage) -> dict[str, str]:
    """The stage's ENV (KEY=VALUE form), without PIP_NO_CACHE_DIR."""
    env: dict[str, str] = {}
    for args in stage.args("ENV"):
        for pair in shlex.split(args):
            key, _, value = pair.partition("=")
            env[key] = value
    env.pop("PIP_NO_CACHE_DIR", None)
    return env


def pip_argv(run: str, wheels: Path) -> list[str]:
    """A stage's `RUN pip ...` as pip's arguments: --mount flags dropped, /wheels moved."""
    argv = [a for a in shlex.split(run) if not a.startswith("--mount=")]
    assert argv[0] == "pip", f"expected a pip command: RUN {run}"
    return [a.replace("/wheels", str(wheels)) for a in argv[1:]]


def environ(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    env.update(extra)
    return env


def run(argv: list[str | Path], cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    done = subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"{shlex.join(map(str, argv))} failed:\n{done.stderr[-5000:]}"
    return done.stdout


def copy_context(stage: Stage, workdir: Path) -> None:
    """The stage's COPY instructions, from this tree (the build context) into workdir."""
    for args in stage.args("COPY"):
        *sources, dest = args.split()
        assert not any(s.startswith("--") for s in sources), f"COPY flags unsupported: {args}"
        target = workdir / dest
        for source in sources:
            path = ROOT / source
            into = target / path.name if dest.endswith("/") else target
            if path.is_dir():
                shutil.copytree(path, into, ignore=_IGNORED)
            else:
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, into)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The builder stage, run: /wheels with gpuctl's and every dependency's wheel."""
    builder = stages()["builder"]
    (workdir,) = builder.args("WORKDIR")
    scratch = tmp_path_factory.mktemp("builder")
    src = scratch / workdir.lstrip("/")
    src.mkdir(parents=True)
    copy_context(builder, src)
    out = scratch / "wheels"
    env = environ(**stage_env(builder))
    for command in builder.args("RUN"):
        run([sys.executable, "-m", "pip", *pip_argv(command, out)], cwd=src, env=env)
    return out


def install_stage(name: str, wheels: Path, venv: Path) -> Path:
    """A fresh virtualenv with what stage `name`'s RUN instructions install."""
    stage = stages()[name]
    run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=venv.parent, env=environ())
    # Not this machine's pip configuration: no extra index or find-links.
    env = {k: v for k, v in environ().items() if not k.startswith("PIP_")}
    env.update(stage_env(stage), PIP_CONFIG_FILE=os.devnull)
    for command in stage.args("RUN"):
        argv = pip_argv(command, wheels)
        run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", *argv],
            cwd=venv.parent, env=env)  # fmt: skip
    return venv


def importable(venv: Path, modules: tuple[str, ...]) -> list[str]:
    out = run([venv / "bin" / "python", "-I", "-c", FIND_SPECS, *modules], venv, environ())
    return out.split()


def gpuctl_in(venv: Path, *args: str) -> str:
    return run([venv / "bin" / "gpuctl", *args], venv, environ(), timeout=120)


def test_the_builder_makes_wheels_only(wheels: Path) -> None:
    names = sorted(p.name for p in wheels.iterdir())
    assert [n for n in names if n.startswith(f"gpuctl-{gpuctl.__version__}-")], names
    assert all(n.endswith(".whl") for n in names), names


def test_runtime_stage_holds_the_operator_only(wheels: Path, tmp_path: Path) -> None:
    venv = install_stage("runtime", wheels, tmp_path / "runtime")
    assert importable(venv, TEST_TOOLS + SIM_ONLY) == []
    where = run([venv / "bin" / "python", "-I", "-c", "import gpuctl; print(gpuctl.__file__)"],
                venv, environ()).strip()  # fmt: skip
    assert Path(where).is_relative_to(venv), where
    assert "Rent GPU machines" in gpuctl_in(venv, "--help")
    assert "--kubeconfig" in gpuctl_in(venv, "run", "--help")
    assert gpuctl_in(venv, "--version").strip() == f"gpuctl {gpuctl.__version__}"


def test_sim_stage_adds_the_simulator_only(wheels: Path, tmp_path: Path) -> None:
    venv = install_stage("sim", wheels, tmp_path / "sim")
    assert importable(venv, TEST_TOOLS + SIM_ONLY) == list(SIM_ONLY)
    assert "--ports" in gpuctl_in(venv, "sim", "--help")


IMAGE_TESTS = os.environ.get("GPUCTL_IMAGE_TESTS") == "1"


@pytest.mark.skipif(not IMAGE_TESTS, reason="GPUCTL_IMAGE_TESTS=1 checks the built images")
@pytest.mark.skipif(shutil.which("buildah") is None, reason="needs buildah")
@pytest.mark.parametrize("target", ["runtime", "sim"])
def test_built_image(target: str) -> None:
    """hack/image/check.sh inside the image `make image` / `make image-sim` built."""
    done = subprocess.run(
        [ROOT / "hack" / "image" / "check.sh", target],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-8000:]
    assert "all checks passed" in done.stderr
