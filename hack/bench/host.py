"""The machine and one process's figures, from /proc.

- `Machine.current()`: CPU model (/proc/cpuinfo), the CPUs this process may use (what
  `nproc` prints), total memory (/proc/meminfo), kernel and Python versions.
- `memory_of(pid)`: `VmRSS` (resident now) and `VmHWM` (the peak resident size since the
  process started) from /proc/<pid>/status, in bytes. The kernel keeps the peak, so no
  peak is lost between two samples.
- `cpu_seconds_of(pid)`: utime + stime of that process alone (not its children), seconds.
"""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path

import attrs

from bench.figures import Row, fmt_bytes

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@attrs.frozen
class Machine:
    cpu_model: str
    cores: int  # CPUs this process may run on (what `nproc` prints)
    memory_bytes: int
    kernel: str
    python: str

    @classmethod
    def current(cls) -> Machine:
        return cls(
            cpu_model=_cpu_model(),
            cores=len(os.sched_getaffinity(0)),
            memory_bytes=_meminfo_bytes("MemTotal"),
            kernel=platform.release(),
            python=platform.python_version(),
        )

    def describe(self) -> str:
        return f"{self.cpu_model}, {self.cores} cores, {fmt_bytes(self.memory_bytes)} RAM"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def _meminfo_bytes(field: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def load_average() -> tuple[float, float, float]:
    one, five, fifteen = os.getloadavg()
    return (round(one, 2), round(five, 2), round(fifteen, 2))


# -- /proc figures of one process ------------------------------------------------------


@attrs.frozen
class Memory:
    rss: int  # VmRSS, bytes
    hwm: int  # VmHWM, bytes: peak RSS since the process started


def memory_of(pid: int) -> Memory:
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024  # the kernel reports kB
    return Memory(rss=fields.get("VmRSS", 0), hwm=fields.get("VmHWM", 0))


def cpu_seconds_of(pid: int) -> float:
    """utime + stime of `pid`; 0.0 once the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # The command name (field 2) may hold spaces: count fields after its closing paren.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # fields 14 and 15 of stat


def machine_rows(
    machine: Machine, load_before: tuple[float, ...], load_after: tuple[float, ...]
) -> list[Row]:
    """The machine section of a report table (other engineers share these cores)."""
    return [
        ("CPU", machine.cpu_model),
        ("cores / memory", f"{machine.cores} / {fmt_bytes(machine.memory_bytes)}"),
        ("kernel / Python", f"{machine.kernel} / {machine.python}"),
        ("load average before / after (1, 5, 15 min)",
         f"{_load(load_before)} / {_load(load_after)}"),
    ]  # fmt: skip


def _load(load: tuple[float, ...]) -> str:
    return " ".join(f"{v:.2f}" for v in load)
