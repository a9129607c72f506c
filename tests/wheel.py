"""gpuctl as a user installs it: the wheel built from this tree, in a fresh virtualenv.

`make install` installs gpuctl in editable mode, so every other test imports the
source tree and cannot notice what the wheel leaves out (a package without
`__init__.py` is silently dropped by `packages = find:`). These fixtures build the
wheel from exactly what the Containerfile copies (pyproject.toml, setup.cfg,
README.md, gpuctl/) with `pip wheel`, as a user or the image build does, and install
it into a fresh virtualenv per test session:

- `gpuctl_wheel`: `pip install gpuctl-*.whl`, no extras: what the operator image holds;
- `gpuctl_wheel_sim`: `pip install 'gpuctl-*.whl[sim]'` in a second virtualenv.

`start_gpuctl` runs the installed console script (`gpuctl run ...`) as a child process;
`run_args` turns an `OperatorConfig` (what the e2e tests used to run in-process) into
the `gpuctl run` flags that give the same operator, and refuses a setting that has no
flag: an e2e test cannot depend on something a user could not set.

pip's own cache serves the wheels of the dependencies (and of setuptools for the isolated
build), though pip still reads the package index (PyPI or the configured mirror; it
revalidates cached index pages after 10 minutes). The virtualenvs are made without pip
(`python -m venv --without-pip`; the test runner's pip installs into them with
`pip --python`). With a warm cache: build about 4 s, each virtualenv 6 to 8 s. Programs from these
virtualenvs run with a clean environment (`Installed.environ`: no PYTHONPATH, the
virtualenv's bin first) and outside the source tree, so they can only import the copy
that was installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import pytest

from gpuctl.cli.main import build_parser
from gpuctl.controllers.operator import OperatorConfig
from gpuctl.controllers.request.context import Settings
from gpuctl.dev.process import die_with_parent

ROOT = Path(__file__).resolve().parents[1]
# What the wheel is built from: exactly what the Containerfile copies into its build stage.
SOURCES = ("pyproject.toml", "setup.cfg", "README.md", "gpuctl")
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
# Environment variables that would let a program see something other than the installed copy.
# And the crash points of the e2e tests (gpuctl/util/crashpoints.py): only when asked.
_SCRUBBED = {
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "PYTHONUSERBASE",
    "VIRTUAL_ENV",
    "GPUCTL_CRASH_AT",
}


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


# -- `gpuctl run` from the installed wheel ----------------------------------------------

SERVING = re.compile(r"serving probes and metrics on [^\s:]+:(\d+)")
# OperatorConfig fields that are not operator settings: the CLI always handles signals;
# leader election becomes --leader-elect/--lease-name below.
_NOT_FLAGS = {"settings", "handle_signals", "leader_election"}


def run_flags() -> set[str]:
    """The option strings of `gpuctl run` (this tree's parser: the wheel's code)."""
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a.choices, dict)]
    run = commands.choices["run"]
    return set(run._option_string_actions)


def _text(value: Any) -> str:
    if isinstance(value, datetime.timedelta):
        return str(value.total_seconds())
    return str(value)


def _default(field: Any) -> Any:
    default = field.default
    return default.factory() if isinstance(default, attrs.Factory) else default


def run_args(config: OperatorConfig, log_level: str = "debug") -> list[str]:
    """`gpuctl run` arguments that run the operator `config` describes."""
    flags = run_flags()
    args = ["run"]
    fields = [(config.settings, f) for f in attrs.fields(Settings)] + [
        (config, f) for f in attrs.fields(OperatorConfig) if f.name not in _NOT_FLAGS
    ]
    for owner, field in fields:
        value = getattr(owner, field.name)
        flag = "--" + field.name.replace("_", "-")
        if value is None and field.name == "kubeconfig":
            continue  # in-cluster configuration, as in a pod
        if flag in flags and value is not None:
            args += [flag, _text(value)]
        elif value != _default(field):
            raise ValueError(f"gpuctl run has no {flag}: cannot run with {field.name}={value!r}")
    leader = config.leader_election
    if leader is not None:
        assert leader.namespace == config.settings.namespace, "the Lease is in --namespace"
        args += ["--leader-elect", "--lease-name", leader.name]
    return [*args, "--log-level", log_level]


@attrs.define
class GpuctlProcess:
    """A `gpuctl` command of an installed wheel, running; output appended to `log`."""

    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, chars: int = 4000) -> str:
        return self.output()[-chars:]

    async def health_port(self, timeout: float = 30) -> int:
        """The port of /healthz, /readyz and /metrics, once the operator logged it."""
        deadline = time.monotonic() + timeout
        while not (found := SERVING.search(self.output())):
            if self.process.poll() is not None:
                pytest.fail(f"gpuctl exited with {self.process.returncode}:\n{self.tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"gpuctl did not serve its health port in {timeout}s:\n{self.tail()}")
            await asyncio.sleep(0.1)
        return int(found.group(1))

    async def metrics(self) -> str:
        port = await self.health_port()
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/metrics") as response,
        ):
            assert response.status == 200
            return await response.text()

    async def wait(self, timeout: float) -> int:
        return await asyncio.to_thread(self.process.wait, timeout)

    async def stop(self, timeout: float = 40) -> int | None:
        """SIGTERM (a graceful shutdown, as in a pod); SIGKILL after `timeout`."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return await self.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                await self.wait(10)
                return None
        return self.process.returncode


def start_gpuctl(
    installed: Installed, args: list[str], log: Path, env: Mapping[str, str] | None = None
) -> GpuctlProcess:
    """Start the installed `gpuctl` with `args`, outside the source tree.

    Started from the calling (event loop) thread with PR_SET_PDEATHSIG: it dies with
    the test process, however that ends.
    """
    with log.open("ab") as out:
        process = subprocess.Popen(
            [str(installed.gpuctl), *args],
            cwd=installed.venv,
            env=installed.environ(**(env or {})),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - prctl and setsid only
        )
    return GpuctlProcess(process, log)


@contextlib.asynccontextmanager
async def running_gpuctl(
    installed: Installed,
    args: list[str],
    log: Path,
    *,
    secrets: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[GpuctlProcess]:
    """`gpuctl run` serving its health port for the block; then SIGTERM, exit status 0,
    and none of `secrets` in its output or its metrics."""
    running = start_gpuctl(installed, args, log, env)
    metrics = ""
    try:
        await running.health_port()
        yield running
        metrics = await running.metrics()
    finally:
        code = await running.stop()
    assert code == 0, f"gpuctl exited with {code}:\n{running.tail()}"
    leaked = [s for s in secrets if s in running.output() or s in metrics]
    assert not leaked, "a credential reached the operator's output or metrics"
