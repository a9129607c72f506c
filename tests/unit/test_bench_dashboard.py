"""hack/bench/dashboard.py runs, small: one snapshot per publish whatever the viewers."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack"))

from bench import dashboard


async def test_bench_measures_snapshots_and_viewers() -> None:
    wall, cpu, size = dashboard.measure_build(5)
    assert wall > 0 and cpu > 0 and size > 1000
    built, delay = await dashboard.measure_viewers(5, viewers=3, publishes=2)
    assert built == 2 and delay > 0
