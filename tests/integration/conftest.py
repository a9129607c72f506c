"""Integration fixtures: gpuctl installed from its wheel into fresh virtualenvs (tests/wheel.py)."""

from tests.wheel import gpuctl_built_wheel, gpuctl_wheel, gpuctl_wheel_sim  # noqa: F401
