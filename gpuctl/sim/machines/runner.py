"""`Machines`: the simulated clouds' machines as real process trees on this host.

When an instance reaches RUNNING its machine boots: the simulator writes what
the cloud puts on a new machine into its root (the hardware description,
cloud-init's instance data, the startup script) and starts

    unshare --mount --uts --pid --fork --kill-child --propagation private bash boot.sh

in a session of its own carrying PR_SET_PDEATHSIG=SIGKILL (gpuctl.dev.process),
so no machine outlives the simulator: the simulator's death kills `unshare`,
whose death kills the machine's init, whose death ends the PID namespace and
every process in it. `boot.sh` builds the machine's root (gpuctl.sim.machines
.rootfs) and becomes the machine's init, which runs the cloud's boot program
(joindata). Per machine that is `unshare` + one bash (+ what the join data
starts, e.g. the node agent); the simulator watches each with a pidfd and a
status pipe, no thread or Python process per machine.

STOPPED, PREEMPTED and TERMINATING kill the machine at once (SIGKILL to its
init: the PID namespace dies with everything in it), as a machine that is
switched off. A later start (RunPod) boots it again; a container comes back on a
fresh container disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import attrs

from gpuctl.dev.controlplane import ControlPlaneError, find_binaries
from gpuctl.dev.process import die_with_parent
from gpuctl.sim.config import SimConfig
from gpuctl.sim.machines import joindata, rootfs
from gpuctl.sim.model import JoinStatus, Phase, SimInstance

log = logging.getLogger(__name__)

AGENT_NAME = "gpuctl-node-agent"
KILL_TIMEOUT = 10.0
_HOSTNAME_OVERRIDE = re.compile(r"--hostname-override[= ]([^\s\"']+)")
_UNSHARE = (
    "--mount",
    "--uts",
    "--pid",
    "--fork",
    "--kill-child",
    "--propagation",
    "private",
)


class MachineError(RuntimeError):
    """Join execution cannot work here (not root, no namespaces or overlayfs, no agent)."""


def find_node_agent() -> Path:
    """bin/k8s/gpuctl-node-agent of the checkout ($KUBEBUILDER_ASSETS first), found like
    the control-plane binaries."""
    try:
        return find_binaries((AGENT_NAME,)) / AGENT_NAME
    except ControlPlaneError as err:
        raise MachineError(str(err)) from err


def probe(workdir: Path) -> None:
    """Raise MachineError unless machines can run here: root, mount namespaces, overlayfs."""
    if os.geteuid() != 0:
        raise MachineError(
            "running join data needs root: each simulated machine gets its own mount, "
            "UTS and PID namespaces and an overlayfs root (run as root, or set "
            "execute_join_data: false)"
        )
    unshare = shutil.which("unshare")
    if unshare is None:
        raise MachineError("running join data needs `unshare` (util-linux)")
    with tempfile.TemporaryDirectory(prefix="probe-", dir=workdir) as scratch:
        base = Path(scratch)
        for name in ("upper", "work", "merged"):
            (base / name).mkdir()
        options = f"lowerdir=/,upperdir={base / 'upper'},workdir={base / 'work'}"
        mount = ["/bin/sh", "-c", 'mount -t overlay probe -o "$1" "$2"', "-"]
        result = subprocess.run(
            [unshare, *_UNSHARE, *mount, options, str(base / "merged")],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    if result.returncode != 0:
        raise MachineError(
            "running join data needs mount namespaces and overlayfs, and this host refused: "
            f"{result.stderr.strip() or f'exit status {result.returncode}'} "
            "(or set execute_join_data: false)"
        )


@attrs.define(eq=False)
class Machine:
    instance: SimInstance
    dir: rootfs.MachineDir
    boots: int = 0
    hostname: str = ""
    container: bool = False  # a container stops when its main process exits
    process: subprocess.Popen[bytes] | None = None
    pidfd: int | None = None  # of `unshare`
    init_pidfd: int | None = None  # of the machine's init (PID 1 of its namespace)
    status_fd: int | None = None
    buffer: bytes = b""
    killing: bool = False
    gone: asyncio.Event = attrs.field(factory=asyncio.Event)  # no process left
    reported: asyncio.Event = attrs.field(factory=asyncio.Event)  # init's PID known, or gone
    finished: asyncio.Event = attrs.field(factory=asyncio.Event)  # boot program over

    @property
    def alive(self) -> bool:
        return self.process is not None


class Machines:
    """Boots and kills the machines of every simulated cloud (a SimState listener)."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.enabled = config.execute_join_data
        self.agent: Path | None = None
        self.workdir: Path | None = None
        self._owns_workdir = False
        self._machines: dict[tuple[str, str], Machine] = {}
        self._chains: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        if not self.enabled:
            return
        self.agent = self.config.node_agent or find_node_agent()
        if not (self.agent.is_file() and os.access(self.agent, os.X_OK)):
            raise MachineError(f"node agent {self.agent} is not an executable file")
        self.agent = self.agent.resolve()
        if self.config.workdir is not None:
            self.workdir = self.config.workdir.resolve()
            self.workdir.mkdir(parents=True, exist_ok=True)
        else:
            self.workdir = Path(tempfile.mkdtemp(prefix="gpuctl-sim-"))
            self._owns_workdir = True
        try:
            await asyncio.to_thread(probe, self.workdir)
        except BaseException:
            self._remove_workdir()
            raise
        (self.workdir / "boot.sh").write_text(rootfs.BOOT_SH)

    async def stop(self) -> None:
        """Kill every machine, wait until their processes are gone, remove their files."""
        for task in self._tasks:
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        self._chains.clear()
        machines = list(self._machines.values())
        self._machines.clear()
        await asyncio.gather(*(self._kill_now(m, "the simulator stopped") for m in machines))
        for machine in machines:
            machine.dir.remove()
        self._remove_workdir()

    def reset(self) -> None:
        """Forget every machine (Simulator.reset): kill them, remove them in the background."""
        for task in self._tasks:
            task.cancel()
        self._chains.clear()
        machines = list(self._machines.values())
        self._machines.clear()
        for machine in machines:
            self._track(self._discard(machine))

    async def idle(self) -> None:
        """Wait until every queued boot and kill has been carried out."""
        while pending := [t for t in self._tasks if not t.done()]:
            await asyncio.wait(pending)

    # -- what the simulator asks --------------------------------------------------------

    def on_transition(self, instance: SimInstance, old: Phase, new: Phase) -> None:
        """SimState listener: boot on RUNNING, kill when the machine stops or goes away."""
        if new is Phase.RUNNING:
            if not self.enabled:
                instance.join_status = JoinStatus.DISABLED
                instance.join_detail = "join data execution is off (execute_join_data: false)"
                return
            self._enqueue(instance, self._boot)
        elif self.enabled and new in (Phase.STOPPED, Phase.PREEMPTED, Phase.TERMINATING):
            self._enqueue(instance, self._kill)

    def refresh(self, instance: SimInstance) -> None:
        """Notice a join that completed while the boot program still runs."""
        machine = self._machines.get((instance.cloud, instance.id))
        if machine is None or instance.join_status is not JoinStatus.RUNNING:
            return
        if machine.alive and machine.dir.has(rootfs.KUBELET_CONF):
            self._joined(machine)

    def console(self, instance: SimInstance) -> str:
        """The machine's console log so far ("" if it never booted)."""
        machine = self._machines.get((instance.cloud, instance.id))
        if machine is None:
            return ""
        try:
            return machine.dir.console.read_text(errors="replace")
        except OSError:
            return ""

    def machine_file(self, instance: SimInstance, path: str) -> bytes | None:
        machine = self._machines.get((instance.cloud, instance.id))
        return None if machine is None else machine.dir.read(path)

    def machine_dir(self, instance: SimInstance) -> Path | None:
        machine = self._machines.get((instance.cloud, instance.id))
        return None if machine is None else machine.dir.path

    async def wait_join(self, instance: SimInstance, seconds: float) -> None:
        """Until the machine joined, its boot program ended, or it is gone (TimeoutError)."""
        async with asyncio.timeout(seconds):
            while True:
                await self.idle()
                self.refresh(instance)
                if instance.join_status not in (JoinStatus.PENDING, JoinStatus.RUNNING):
                    return
                machine = self._machines.get((instance.cloud, instance.id))
                if machine is None:
                    await asyncio.sleep(0.1)
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(machine.finished.wait(), 0.2)

    async def wait_gone(self, instance: SimInstance, seconds: float) -> None:
        """Until no process of the machine is left (TimeoutError after `seconds`)."""
        async with asyncio.timeout(seconds):
            await self.idle()
            machine = self._machines.get((instance.cloud, instance.id))
            if machine is not None:
                await machine.gone.wait()

    # -- scheduling ---------------------------------------------------------------------

    def _enqueue(
        self, instance: SimInstance, step: Callable[[SimInstance], Awaitable[None]]
    ) -> None:
        key = (instance.cloud, instance.id)
        previous = self._chains.get(key)

        async def run() -> None:
            if previous is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(previous)
            try:
                await step(instance)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                instance.join_status = JoinStatus.FAILED
                instance.join_detail = f"simulator: {step.__name__} failed: {error!r}"
                log.exception("machine %s/%s: %s failed", instance.cloud, instance.id, step)

        self._chains[key] = self._track(run())

    def _track(self, coroutine: Awaitable[None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- boot -----------------------------------------------------------------------------

    async def _boot(self, instance: SimInstance) -> None:
        if instance.phase is not Phase.RUNNING:
            return  # stopped or terminated before its turn came
        machine = self._machine(instance)
        if machine.alive:
            return
        machine.boots += 1
        machine.finished.clear()
        machine.gone.clear()
        machine.reported.clear()
        machine.killing = False
        if machine.boots > 1 and instance.cloud == "runpod":
            machine.dir.wipe_disk()  # a container restarts on a fresh container disk
        hardware = self._hardware(instance)
        result = joindata.plan(instance, hardware, boot=machine.boots)
        if isinstance(result, joindata.NotRun):
            instance.join_status, instance.join_detail = result.status, result.reason
            machine.dir.say(f"boot {machine.boots}: nothing runs: {result.reason}")
            machine.finished.set()
            machine.gone.set()
            machine.reported.set()
            return
        machine.hostname, machine.container = result.hostname, result.container
        for path, (data, mode) in result.files.items():
            machine.dir.write(path, data, mode)
        # kubeadm's packages and systemd put these in /usr/bin: absolute paths work too
        for name, text in rootfs.wrappers(self.agent_path).items():
            if name in rootfs.INSTALLED:
                machine.dir.write(f"/usr/bin/{name}", text.encode(), 0o755)
        env = dict(result.env)
        env["PATH"] = f"{machine.dir.bin}:{env.get('PATH', rootfs.MACHINE_PATH)}"
        init = rootfs.init_script(
            banner=result.banner, command=result.command, env=env, container=result.container
        )
        machine.dir.write(rootfs.INIT_PATH, init.encode(), 0o700)
        instance.join_status, instance.join_detail = JoinStatus.RUNNING, ""
        self._spawn(machine)

    @property
    def agent_path(self) -> Path:
        assert self.agent is not None
        return self.agent

    def _machine(self, instance: SimInstance) -> Machine:
        key = (instance.cloud, instance.id)
        machine = self._machines.get(key)
        if machine is None:
            assert self.workdir is not None and self.agent is not None
            directory = rootfs.MachineDir(self.workdir / f"{instance.cloud}-{instance.id}")
            directory.create(self.agent)
            machine = self._machines[key] = Machine(instance, directory)
        return machine

    def _hardware(self, instance: SimInstance) -> joindata.Hardware:
        shape = self.config.catalog(instance.cloud).types.get(instance.instance_type)
        name = shape.gpu_name if shape is not None else instance.instance_type
        if instance.cloud == "runpod":
            name = instance.instance_type  # RunPod's gpuTypeId is the NVIDIA product name
        return joindata.Hardware(
            cpus=instance.vcpus,
            memory_gib=instance.memory_gib,
            gpus=instance.gpu_count,
            gpu_product=joindata.gpu_product(name),
            gpu_resource=joindata.gpu_resource(name),
        )

    def _spawn(self, machine: Machine) -> None:
        assert self.workdir is not None and self.agent is not None
        unshare = shutil.which("unshare") or "unshare"
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "SIM_MACHINE": str(machine.dir.path),
            "SIM_AGENT": str(self.agent),
            "SIM_HOSTNAME": machine.hostname,
            rootfs.STATUS_FD_VARIABLE: str(write_end),
        }
        try:
            with machine.dir.console.open("ab") as console:
                machine.process = subprocess.Popen(
                    [unshare, *_UNSHARE, "/bin/bash", str(self.workdir / "boot.sh")],
                    stdin=subprocess.DEVNULL,
                    stdout=console,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=machine.dir.path,
                    pass_fds=(write_end,),
                    preexec_fn=die_with_parent,  # noqa: PLW1509 - forked from the loop thread
                )
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        os.set_blocking(read_end, False)
        machine.status_fd = read_end
        machine.pidfd = os.pidfd_open(machine.process.pid)
        loop = asyncio.get_running_loop()
        loop.add_reader(read_end, self._on_status, machine)
        loop.add_reader(machine.pidfd, self._on_exit, machine)

    # -- what a machine reports -----------------------------------------------------------

    def _on_status(self, machine: Machine) -> None:
        assert machine.status_fd is not None
        try:
            chunk = os.read(machine.status_fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._close_status(machine)
            return
        machine.buffer += chunk
        *lines, machine.buffer = machine.buffer.split(b"\n")
        for line in lines:
            self._status_line(machine, line.decode(errors="replace").strip())

    def _status_line(self, machine: Machine, line: str) -> None:
        word, _, rest = line.partition(" ")
        instance = machine.instance
        if word == "pid" and rest.isdigit():
            with contextlib.suppress(OSError):
                machine.init_pidfd = os.pidfd_open(int(rest))
            machine.reported.set()
        elif word == "boot-failed":
            instance.join_status = JoinStatus.FAILED
            instance.join_detail = f"the machine did not boot: {rest}"
            machine.finished.set()
        elif word == "exit" and rest.lstrip("-").isdigit():
            self._boot_program_ended(machine, int(rest))

    def _boot_program_ended(self, machine: Machine, status: int) -> None:
        instance = machine.instance
        if machine.container:
            joined = machine.dir.has(rootfs.KUBELET_CONF)
            instance.join_status = JoinStatus.CONTAINER_EXITED
            instance.join_detail = (
                f"the container's main process exited with status {status}, so the container "
                "stopped and every process in it"
                + (", the kubelet too (it had joined)" if joined else "")
                + f". Console: {machine.dir.console_tail(4)}"
            )
        elif machine.dir.has(rootfs.KUBELET_CONF):
            self._joined(machine)
        elif status == 0:
            instance.join_status = JoinStatus.NOT_JOINED
            instance.join_detail = (
                f"the boot program exited 0 but the machine has no {rootfs.KUBELET_CONF}: "
                f"it did not join. Console: {machine.dir.console_tail(4)}"
            )
        else:
            instance.join_status = JoinStatus.FAILED
            instance.join_detail = (
                f"the boot program exited with status {status}. "
                f"Console: {machine.dir.console_tail(6)}"
            )
        machine.finished.set()

    def _joined(self, machine: Machine) -> None:
        instance = machine.instance
        instance.join_status = JoinStatus.JOINED
        instance.join_detail = ""
        instance.node_name = self._node_name(machine)

    def _node_name(self, machine: Machine) -> str:
        """The kubelet's node name: --hostname-override from kubeadm's flags, else the hostname."""
        for path in ("/var/lib/kubelet/kubeadm-flags.env", "/etc/default/kubelet"):
            text = (machine.dir.read(path) or b"").decode(errors="replace")
            if found := _HOSTNAME_OVERRIDE.search(text):
                return found.group(1).lower()
        return machine.hostname.lower()

    def _close_status(self, machine: Machine) -> None:
        if machine.status_fd is not None:
            asyncio.get_running_loop().remove_reader(machine.status_fd)
            os.close(machine.status_fd)
            machine.status_fd = None

    def _on_exit(self, machine: Machine) -> None:
        """`unshare` exited: the machine has no process left."""
        loop = asyncio.get_running_loop()
        if machine.pidfd is not None:
            loop.remove_reader(machine.pidfd)
            os.close(machine.pidfd)
            machine.pidfd = None
        if machine.status_fd is not None:
            self._on_status(machine)  # what it said last
            self._close_status(machine)
        if machine.init_pidfd is not None:
            os.close(machine.init_pidfd)
            machine.init_pidfd = None
        process, machine.process = machine.process, None
        code = process.wait() if process is not None else None
        instance = machine.instance
        if not machine.killing and instance.join_status is JoinStatus.RUNNING:
            instance.join_status = JoinStatus.FAILED
            instance.join_detail = (
                f"the machine stopped by itself (exit status {code}). "
                f"Console: {machine.dir.console_tail(6)}"
            )
        machine.finished.set()
        machine.gone.set()
        machine.reported.set()

    # -- kill -------------------------------------------------------------------------------

    async def hang(self, instance: SimInstance) -> None:
        """Kill the machine's processes; its instance stays as the cloud reports it."""
        machine = self._machines.get((instance.cloud, instance.id))
        if machine is None:
            raise KeyError(f"{instance.cloud}: instance {instance.id} has no running machine")
        await self._kill_now(machine, "the machine hung")

    async def _kill(self, instance: SimInstance) -> None:
        machine = self._machines.get((instance.cloud, instance.id))
        if machine is not None:
            await self._kill_now(machine, f"the machine is {instance.phase}")

    async def _kill_now(self, machine: Machine, why: str) -> None:
        """SIGKILL the machine's init (its PID namespace dies with it); wait until all is gone."""
        process = machine.process
        if process is None:
            return
        machine.killing = True
        instance = machine.instance
        if instance.join_status in (JoinStatus.PENDING, JoinStatus.RUNNING):
            instance.join_status = JoinStatus.INTERRUPTED
            instance.join_detail = f"{why} while its boot program ran"
        machine.dir.say(f"{why}: every process of the machine is killed (SIGKILL)")
        # Killing the init ends the PID namespace; `unshare` reaps it and exits last, so
        # its exit means no process of the machine is left. The init reports its PID
        # first thing: wait for that rather than kill `unshare` before it.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(machine.reported.wait(), KILL_TIMEOUT / 5)
        if machine.init_pidfd is not None:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(machine.init_pidfd, signal.SIGKILL)
        else:  # not reported yet: the whole session (unshare and its child)
            with contextlib.suppress(OSError):
                os.killpg(process.pid, signal.SIGKILL)
        try:
            await asyncio.wait_for(machine.gone.wait(), KILL_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(OSError):
                os.killpg(process.pid, signal.SIGKILL)
            await machine.gone.wait()

    async def _discard(self, machine: Machine) -> None:
        await self._kill_now(machine, "the simulator was reset")
        machine.dir.remove()

    def _remove_workdir(self) -> None:
        if self._owns_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
            self._owns_workdir = False
