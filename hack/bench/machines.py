"""The simulated machines' processes on this host, read from /proc.

With `gpuctl sim --execute-join-data` every instance that reaches RUNNING is a process
tree on this host (docs/sim.md, Machines): `unshare` (a child of the simulator whose
working directory is the machine's directory `<workdir>/<cloud>-<id>`), the machine's
init bash, the boot program (cloud-init's runcmd, the Paperspace startup script), the
node agent joining (`gpuctl-node-agent kubeadm join ...`) and then the kubelet
(`gpuctl-node-agent kubelet ...`), everything but `unshare` chrooted into
`<workdir>/<cloud>-<id>/rootfs`. So a process belongs to machine `<cloud>-<id>` when its
root or its working directory lies in `<workdir>/<cloud>-<id>`: that finds them all
without following the process tree, and also finds one that escaped it.

- `scan(workdir)`: every machine process now (pid, parent, start time, CPU, argv).
- `MachineWatch`: scans every `interval` seconds while a run goes on and keeps, per
  machine, when its first process started (the boot: the simulator spawns `unshare`
  when the instance turns RUNNING), when its first node-agent process started and when
  its kubelet started; the CPU seconds of every machine process it ever saw; the host's
  memory in use (MemTotal - MemAvailable, its peak); and, every `memory_every` seconds,
  the PSS and RSS of all machine processes (`/proc/<pid>/smaps_rollup`), their peak.
- Start times are the kernel's (`/proc/<pid>/stat` field 22, CLOCK_BOOTTIME, 10 ms
  ticks), so a machine's boot and agent start are exact even when a scan comes late;
  `boot_to_wall` turns them into wall-clock seconds to compare with the simulator's
  `running_at` and with when the bench's watch saw a Node Ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs

AGENT = "gpuctl-node-agent"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@attrs.frozen
class Proc:
    pid: int
    ppid: int
    start: float  # seconds since boot (CLOCK_BOOTTIME) when it started
    cpu: float  # utime + stime, seconds
    argv: tuple[str, ...]
    machine: str  # `<cloud>-<id>`: the machine's directory name

    @property
    def role(self) -> str | None:
        """The node agent's subcommand ("kubeadm", "kubelet"), None for other processes."""
        return agent_role(self.argv)


def agent_role(argv: Sequence[str]) -> str | None:
    """The node agent's subcommand when `argv` runs the agent (`gpuctl-node-agent kubelet
    ...`), else None."""
    if len(argv) >= 2 and os.path.basename(argv[0]) == AGENT:
        return argv[1]
    return None


def parse_stat(text: str) -> tuple[int, float, float]:
    """(parent PID, start time in seconds since boot, utime + stime in seconds) of a
    /proc/<pid>/stat line."""
    # The command name (field 2) may hold spaces and parens: count after the last ")".
    fields = text[text.rindex(")") + 2 :].split()
    ppid = int(fields[1])  # field 4
    cpu = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # fields 14, 15
    start = int(fields[19]) / _CLOCK_TICKS  # field 22
    return ppid, start, cpu


def machine_of(root: str, cwd: str, workdir: str) -> str | None:
    """The machine whose directory holds `root` or `cwd` (links of /proc/<pid>), or None."""
    prefix = workdir.rstrip("/") + "/"
    for path in (root, cwd):
        if path.startswith(prefix):
            name = path[len(prefix) :].split("/", 1)[0]
            if name:
                return name
    return None


def read_proc(pid: int, workdir: str) -> Proc | None:
    """The process `pid` if it belongs to a machine under `workdir` (None if not, or gone)."""
    base = f"/proc/{pid}"
    try:
        machine = machine_of(os.readlink(f"{base}/root"), os.readlink(f"{base}/cwd"), workdir)
        if machine is None:
            return None
        with open(f"{base}/stat") as stat:
            ppid, start, cpu = parse_stat(stat.read())
        with open(f"{base}/cmdline", "rb") as cmdline:
            argv = tuple(a.decode(errors="replace") for a in cmdline.read().split(b"\0") if a)
    except (OSError, ValueError, IndexError):
        return None  # gone meanwhile, or a kernel thread (no links)
    return Proc(pid, ppid, start, cpu, argv, machine)


def scan(workdir: Path) -> list[Proc]:
    """Every process of every machine under `workdir` (the simulator's `workdir`)."""
    where = str(workdir.resolve())
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (proc := read_proc(int(entry), where)) is not None:
            found.append(proc)
    return found


def parse_smaps_rollup(text: str) -> tuple[int, int]:
    """(Pss, Rss) in bytes of a /proc/<pid>/smaps_rollup text."""
    values = {"Pss": 0, "Rss": 0}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in values:
            values[name] = int(rest.split()[0]) * 1024  # kB
    return values["Pss"], values["Rss"]


def pss_rss_of(pid: int) -> tuple[int, int]:
    """(PSS, RSS) of `pid` in bytes; (0, 0) once it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            return parse_smaps_rollup(rollup.read())
    except (OSError, ValueError, IndexError):
        return 0, 0


def meminfo() -> dict[str, int]:
    """/proc/meminfo in bytes."""
    values = {}
    with open("/proc/meminfo") as info:
        for line in info:
            name, _, rest = line.partition(":")
            with contextlib.suppress(ValueError, IndexError):
                values[name] = int(rest.split()[0]) * 1024
    return values


def host_memory_used() -> int:
    """MemTotal - MemAvailable: what every process on this host holds (and the kernel)."""
    info = meminfo()
    return info.get("MemTotal", 0) - info.get("MemAvailable", 0)


def descendants(root: int) -> list[int]:
    """PIDs of every process below `root` in the process tree (not `root` itself)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                ppid, _, _ = parse_stat(stat.read())
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def boot_to_wall(boot_seconds: float) -> float:
    """Seconds since boot (CLOCK_BOOTTIME, as /proc start times are) -> seconds since the
    epoch."""
    return boot_seconds + time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)


# -- figures over time ----------------------------------------------------------------------


@attrs.frozen
class MachineMemory:
    """PSS and RSS summed over machine processes at one moment (bytes)."""

    machines: int  # machines with at least one process
    processes: int
    pss: int
    rss: int
    agents: int  # node-agent processes (kubeadm join, kubelet)
    agent_pss: int
    agent_rss: int

    @classmethod
    def of(cls, procs: Iterable[Proc]) -> MachineMemory:
        procs = list(procs)
        machines = {p.machine for p in procs}
        pss = rss = agent_pss = agent_rss = agents = 0
        for proc in procs:
            p, r = pss_rss_of(proc.pid)
            pss, rss = pss + p, rss + r
            if proc.role is not None:
                agents += 1
                agent_pss, agent_rss = agent_pss + p, agent_rss + r
        return cls(len(machines), len(procs), pss, rss, agents, agent_pss, agent_rss)


@attrs.define
class MachineTimes:
    """Per machine, seconds since boot (CLOCK_BOOTTIME) when its processes started."""

    boot: float | None = None  # its first process (`unshare`)
    agent: float | None = None  # its first node-agent process (`kubeadm join`)
    kubelet: float | None = None  # its first `gpuctl-node-agent kubelet`

    def see(self, proc: Proc) -> None:
        self.boot = _earliest(self.boot, proc.start)
        if proc.role is not None:
            self.agent = _earliest(self.agent, proc.start)
        if proc.role == "kubelet":
            self.kubelet = _earliest(self.kubelet, proc.start)


def _earliest(current: float | None, new: float) -> float:
    return new if current is None else min(current, new)


@attrs.define
class MachineWatch:
    """Samples the machines of one simulator (see the module docstring)."""

    workdir: Path
    interval: float = 0.5
    memory_every: float = 5.0
    times: dict[str, MachineTimes] = attrs.field(factory=dict)
    peak: MachineMemory | None = None  # the sample with the highest PSS
    host_peak_used: int = 0
    procs: list[Proc] = attrs.field(factory=list)  # the last scan
    _cpu: dict[tuple[int, float], float] = attrs.field(factory=dict)  # (pid, start) -> CPU
    _task: asyncio.Task[None] | None = None
    # Scans run in a thread (reading /proc of hundreds of processes takes a while) and
    # from the event loop: one at a time.
    _lock: threading.Lock = attrs.field(factory=threading.Lock)

    def tick(self) -> list[Proc]:
        """Scan now: start times, CPU and host memory; the machine processes found."""
        procs = scan(self.workdir)
        used = host_memory_used()
        with self._lock:
            self.procs = procs
            for proc in procs:
                self.times.setdefault(proc.machine, MachineTimes()).see(proc)
                self._cpu[(proc.pid, proc.start)] = proc.cpu
            self.host_peak_used = max(self.host_peak_used, used)
        return procs

    def memory(self) -> MachineMemory:
        """Scan, then the PSS and RSS of every machine process now (keeps the peak)."""
        sample = MachineMemory.of(self.tick())
        with self._lock:
            if self.peak is None or sample.pss > self.peak.pss:
                self.peak = sample
        return sample

    def cpu_seconds(self) -> float:
        """CPU seconds of every machine process seen so far (its last reading; a process
        that lived less than `interval` between two scans may be missed)."""
        self.tick()
        with self._lock:
            return sum(self._cpu.values())

    def snapshot(self) -> dict[str, MachineTimes]:
        with self._lock:
            return {k: attrs.evolve(v) for k, v in self.times.items()}

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        next_memory = time.monotonic()
        while True:
            if time.monotonic() >= next_memory:
                next_memory = time.monotonic() + self.memory_every
                await asyncio.to_thread(self.memory)
            else:
                await asyncio.to_thread(self.tick)
            await asyncio.sleep(self.interval)
