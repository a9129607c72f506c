"""Simulated GPU clouds (Lambda, RunPod, Paperspace, Crusoe, Hyperstack, DigitalOcean)
speaking their published APIs.

See docs/sim.md. The public surface:

- `Simulator`, `SimConfig`: start the clouds, configure them;
- `SimInstance`, `LedgerEntry`, `Violation`, `Phase`, `JoinStatus`: what the
  simulator reports;
- `ManualClock`: a clock tests move by hand;
- `MachineError`: join data cannot be executed on this host.
"""

from gpuctl.sim.clock import Clock, ManualClock, SystemClock
from gpuctl.sim.config import CLOUDS, CloudCatalog, MachineType, SimConfig
from gpuctl.sim.faults import Fault, Faults
from gpuctl.sim.machines import MachineError
from gpuctl.sim.model import JoinStatus, LedgerEntry, Phase, SimInstance, Violation
from gpuctl.sim.simulator import Simulator

__all__ = [
    "CLOUDS",
    "Clock",
    "CloudCatalog",
    "Fault",
    "Faults",
    "JoinStatus",
    "LedgerEntry",
    "MachineError",
    "MachineType",
    "ManualClock",
    "Phase",
    "SimConfig",
    "SimInstance",
    "Simulator",
    "SystemClock",
    "Violation",
]
