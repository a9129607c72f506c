"""The wheel holds all of gpuctl: every module imports from the installed copy, commands start.

Built and installed by tests/wheel.py into fresh virtualenvs (no extras; and `[sim]`).
The list of modules and files comes from walking the source tree, so a new package
without `__init__.py`, a data file outside `package_data` or a dependency missing from
`install_requires` fails here, not in a user's cluster.
"""

from __future__ import annotations

import configparser
import json
import re
from pathlib import Path

import pytest

import gpuctl
from tests.wheel import ROOT, Installed, Wheel

PACKAGE = ROOT / "gpuctl"

# Imports every module named on the command line; prints where gpuctl came from and
# what failed. Run with `python -I`: no PYTHONPATH, no current directory on sys.path.
IMPORT_ALL = """
import importlib, json, sys
import gpuctl
failures = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except BaseException as error:
        failures[name] = {"type": type(error).__name__, "missing": getattr(error, "name", None),
                          "message": str(error)}
print(json.dumps({"gpuctl": gpuctl.__file__, "failures": failures}))
"""

DISTRIBUTIONS = """
import importlib.metadata, json
print(json.dumps(sorted(d.metadata["Name"] for d in importlib.metadata.distributions())))
"""


def source_files() -> set[str]:
    """Every file of the package in the source tree, relative to gpuctl/."""
    return {
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


def source_modules() -> list[str]:
    modules = []
    for name in sorted(source_files()):
        if name.endswith(".py"):
            parts = ["gpuctl", *Path(name).with_suffix("").parts]
            modules.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return modules


def import_all(installed: Installed) -> tuple[Path, dict[str, dict[str, str]]]:
    ran = installed.run(installed.python, "-I", "-c", IMPORT_ALL, *source_modules())
    assert ran.returncode == 0, ran.stderr
    answer = json.loads(ran.stdout.splitlines()[-1])
    return Path(answer["gpuctl"]), answer["failures"]


def extra_requirements(extra: str) -> set[str]:
    """Distribution names an extra of setup.cfg adds, normalised (PEP 503)."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = config["options.extras_require"][extra].splitlines()
    names = (re.split(r"[<>=!~;\[ ]", line.strip(), maxsplit=1)[0] for line in lines)
    return {normalise(name) for name in names if name and not name.startswith("#")}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_setuptools_found_every_package(gpuctl_built_wheel: Wheel) -> None:
    """setuptools warns when a directory with modules is not in `packages`: none is."""
    log = gpuctl_built_wheel.build_log
    assert "would be ignored" not in log and "absent from setuptools" not in log, log[-3000:]


def test_the_installed_package_holds_every_file_of_the_source_tree(gpuctl_wheel: Installed) -> None:
    location, _ = import_all(gpuctl_wheel)
    installed = location.parent
    assert installed.is_relative_to(gpuctl_wheel.venv), f"gpuctl imported from {installed}"
    shipped = {
        str(p.relative_to(installed))
        for p in installed.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    missing, extra = source_files() - shipped, shipped - source_files()
    assert (missing, extra) == (set(), set())
    # The data the code reads at run time, by kind: the GPU and region tables, price
    # tables, the OpenAPI specs of the clouds, the simulator's defaults, py.typed.
    data = {name for name in shipped if not name.endswith(".py")}
    assert {"py.typed", "providers/tables/gpus.yaml", "sim/default.yaml"} <= data
    assert any(name.endswith("openapi.json") for name in data)


def test_every_module_imports_without_extras_except_the_simulator(gpuctl_wheel: Installed) -> None:
    location, failures = import_all(gpuctl_wheel)
    assert location.is_relative_to(gpuctl_wheel.venv)
    sim_only = {
        name
        for name, failure in failures.items()
        if failure["type"] == "ModuleNotFoundError"
        and normalise(str(failure["missing"]).split(".")[0]) in {"openapi-core"}
    }
    assert {k: v for k, v in failures.items() if k not in sim_only} == {}
    # Only the simulated clouds need the `sim` extra; the operator and the CLI do not.
    assert all(name == "gpuctl.sim" or name.startswith("gpuctl.sim.") for name in sim_only)


def test_no_extra_is_installed_unasked(gpuctl_wheel: Installed) -> None:
    ran = gpuctl_wheel.run(gpuctl_wheel.python, "-I", "-c", DISTRIBUTIONS)
    assert ran.returncode == 0, ran.stderr
    installed = {normalise(name) for name in json.loads(ran.stdout)}
    assert "gpuctl" in installed
    for extra in ("sim", "test", "dev"):
        assert installed & extra_requirements(extra) == set(), extra


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["run", "--help"], ["sim", "--help"], ["offers", "--help"], ["--version"]],
    ids=" ".join,
)
def test_the_console_script_runs(gpuctl_wheel: Installed, argv: list[str]) -> None:
    ran = gpuctl_wheel.run(gpuctl_wheel.gpuctl, *argv)
    assert ran.returncode == 0, ran.stderr
    if argv == ["--version"]:
        assert ran.stdout.strip() == f"gpuctl {gpuctl.__version__}"
    else:
        assert ran.stdout.startswith("usage: gpuctl"), ran.stdout


def test_every_module_imports_with_the_sim_extra(gpuctl_wheel_sim: Installed) -> None:
    location, failures = import_all(gpuctl_wheel_sim)
    assert location.is_relative_to(gpuctl_wheel_sim.venv)
    assert failures == {}


def test_the_simulator_starts_from_the_sim_extra(gpuctl_wheel_sim: Installed) -> None:
    ran = gpuctl_wheel_sim.run(gpuctl_wheel_sim.gpuctl, "sim", "--help")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("usage: gpuctl sim"), ran.stdout
