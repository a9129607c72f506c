"""gpuctl as a user installs it: the wheel built from this tree, in a fresh virtualenv.

`make install` installs gpuctl in editable mode, so every other test imports the
source tree and cannot notice what the wheel leaves out (a package without
`__init__.py` is silently dropped by `packages = find:`). These fixtures build the
wheel from exactly what the Containerfile copies (pyproject.toml, setup.cfg,
README.md, gpuctl/) with `pip wheel`, as a user or the image build does, and install
it into a fresh virtualenv per test session:

- `gpuctl_wheel`: `pip install gpuctl-*.whl`, no extras: what the operator image holds;
- `gpuctl_wheel_sim`: `pip install 'gpuctl-*.whl[sim]'` in a second virtualenv.

pip's own cache serves the dependencies (PyPI is asked only for what it lacks), and the
virtualenvs are made without pip (`python -m venv --without-pip`; the test runner's pip
installs into them with `pip --python`), so both take seconds. Programs from these
virtualenvs run with a clean environment (`Installed.environ`: no PYTHONPATH, the
virtualenv's bin first) and outside the source tree, so they can only import the copy
that was installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import attrs
import pytest

ROOT = Path(__file__).resolve().parents[1]
# What the wheel is built from: exactly what the Containerfile copies into its build stage.
SOURCES = ("pyproject.toml", "setup.cfg", "README.md", "gpuctl")
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
# Environment variables that would let a program see something other than the installed copy.
_SCRUBBED = {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "VIRTUAL_ENV"}


@attrs.frozen
class Wheel:
    path: Path
    build_log: str
    seconds: float


@attrs.frozen
class Installed:
    """A virtualenv holding the wheel (and `extras`), nothing else of this tree."""

    wheel: Wheel
    venv: Path
    extras: str
    seconds: float  # to create the virtualenv and install into it

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    @property
    def python(self) -> Path:
        return self.bin / "python"

    @property
    def gpuctl(self) -> Path:
        """The `gpuctl` console script pip generated from the wheel's entry points."""
        return self.bin / "gpuctl"

    def environ(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        env.update(extra)
        return env

    def run(self, *argv: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a program of this virtualenv outside the source tree; output captured."""
        return subprocess.run(
            [str(a) for a in argv],
            cwd=self.venv,
            env=self.environ(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def build_wheel(out: Path) -> Wheel:
    """`pip wheel --no-deps` of a copy of SOURCES (no stale build/ of the tree can leak in)."""
    started = time.monotonic()
    source = out / "src"
    source.mkdir(parents=True)
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=_IGNORED)
        else:
            shutil.copy2(path, source / name)
    dist = out / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--verbose", "--no-deps", "--wheel-dir", dist,
         source],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    log = built.stdout + built.stderr
    assert built.returncode == 0, f"pip wheel failed:\n{log[-5000:]}"
    (wheel,) = dist.glob("gpuctl-*.whl")
    return Wheel(wheel, log, time.monotonic() - started)


def install(wheel: Wheel, venv: Path, extras: str = "") -> Installed:
    """A fresh virtualenv with the wheel (plus `extras`) and its dependencies."""
    started = time.monotonic()
    created = subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", venv],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    requirement = f"{wheel.path}[{extras}]" if extras else str(wheel.path)
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install",
         "--quiet", requirement],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert installed.returncode == 0, f"pip install {requirement} failed:\n{installed.stderr}"
    return Installed(wheel, venv, extras, time.monotonic() - started)


# One build and one virtualenv per kind per session, however many modules ask (a fixture
# imported into two modules is two fixtures to pytest; this cache makes them one).
_CACHE: dict[tuple[Path, str], Wheel | Installed] = {}


@pytest.fixture(scope="session")
def gpuctl_built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Wheel:
    key = (tmp_path_factory.getbasetemp(), "wheel")
    if key not in _CACHE:
        _CACHE[key] = build_wheel(tmp_path_factory.mktemp("wheel"))
    found = _CACHE[key]
    assert isinstance(found, Wheel)
    return found


def _installed(factory: pytest.TempPathFactory, wheel: Wheel, extras: str) -> Installed:
    key = (factory.getbasetemp(), f"venv[{extras}]")
    if key not in _CACHE:
        _CACHE[key] = install(wheel, factory.mktemp(f"venv-{extras or 'plain'}"), extras)
    found = _CACHE[key]
    assert isinstance(found, Installed)
    return found


@pytest.fixture(scope="session")
def gpuctl_wheel(tmp_path_factory: pytest.TempPathFactory, gpuctl_built_wheel: Wheel) -> Installed:
    """The wheel installed without extras: what the operator image holds."""
    return _installed(tmp_path_factory, gpuctl_built_wheel, "")


@pytest.fixture(scope="session")
def gpuctl_wheel_sim(
    tmp_path_factory: pytest.TempPathFactory, gpuctl_built_wheel: Wheel
) -> Installed:
    """The wheel installed with the `sim` extra, in its own virtualenv."""
    return _installed(tmp_path_factory, gpuctl_built_wheel, "sim")
