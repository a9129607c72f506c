"""The lifecycle benchmark's account of what each status write changed."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hack"))  # the benchmarks are tools under hack/, not in gpuctl

from bench.statusdiff import StatusChanges, changed  # noqa: E402


def _obj(**status: object) -> dict[str, object]:
    return {"metadata": {"name": "r"}, "status": status}


def test_names_the_phase_and_the_changed_fields() -> None:
    ready = {"type": "Ready", "status": "False", "reason": "Joining"}
    registered = {"type": "Registered", "status": "True", "reason": "Registered"}
    old = _obj(phase="Joining", conditions=[ready], instance={"id": "i", "state": "booting"})
    new = _obj(
        phase="Joining",
        conditions=[ready, registered],
        instance={"id": "i", "state": "active"},
        nodeName="n",
    )
    assert changed(old, new) == "Joining: conditions[Registered], instance.state, nodeName"


def test_a_first_status_and_an_unchanged_one() -> None:
    assert changed({"metadata": {}}, _obj(phase="Pending")) == "new: phase"
    same = _obj(phase="Ready", cost={"accruedUsd": "1.0000"})
    assert changed(same, _obj(phase="Ready", cost={"accruedUsd": "1.0000"})) is None


def test_counts_since_a_mark() -> None:
    changes = StatusChanges()
    changes.see(_obj(phase="Ready"), _obj(phase="Ready", message="x"))
    mark = changes.mark()
    changes.see(_obj(phase="Ready"), _obj(phase="Ready", message="x"))
    changes.see(_obj(phase="Ready"), _obj(phase="Ready"))  # metadata only: not a write
    assert changes.since(mark) == {"Ready: message": 1.0}
