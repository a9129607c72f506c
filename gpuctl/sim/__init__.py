"""Simulated GPU clouds (Lambda, RunPod, Paperspace) speaking their published APIs.

See docs/sim.md. The public surface:

- `Simulator`, `SimConfig`: start the clouds, configure them;
- `SimInstance`, `LedgerEntry`, `Violation`, `Phase`, `JoinStatus`: what the
  simulator reports;
- `ManualClock`: a clock tests move by hand;
- `install_kubelet_rbac`: the RBAC the simulated kubelet needs.
"""

from gpuctl.sim.clock import Clock, ManualClock, SystemClock
from gpuctl.sim.config import CLOUDS, CloudCatalog, MachineType, SimConfig
from gpuctl.sim.faults import Fault, Faults
from gpuctl.sim.model import JoinStatus, LedgerEntry, Phase, SimInstance, Violation
from gpuctl.sim.rbac import install_kubelet_rbac
from gpuctl.sim.simulator import Simulator

__all__ = [
    "CLOUDS",
    "Clock",
    "CloudCatalog",
    "Fault",
    "Faults",
    "JoinStatus",
    "LedgerEntry",
    "MachineType",
    "ManualClock",
    "Phase",
    "SimConfig",
    "SimInstance",
    "Simulator",
    "SystemClock",
    "Violation",
    "install_kubelet_rbac",
]
