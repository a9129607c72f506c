"""A simulated machine's root file system and the programs its PATH finds first.

Each machine is a directory under the simulator's workdir:

    <machine>/upper, work   overlayfs upper and work dirs: everything the machine writes
    <machine>/rootfs        mount point of the machine's root (only inside its namespaces)
    <machine>/bin           kubeadm, kubelet, systemctl, curl, wget, k3s stand-ins
    <machine>/console.log   the serial console: everything the machine prints

The machine's root is an overlay whose lower layer is the host's `/` and whose
upper layer is `<machine>/upper`, mounted in the machine's own mount namespace
and entered with chroot: every path the machine writes (`/etc`, `/var`, `/run`,
`/root`, `/tmp`, a relative path from the working directory, ...) lands in its
upper dir, never on the host. `/dev` and `/sys` are the host's (bound), `/proc`
is the machine's own PID namespace, `/run` a fresh tmpfs, as after a real boot.
Files the cloud puts on the machine before it boots (the hardware description,
cloud-init's instance data) are written straight into the upper dir.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs

# What PID 1 of a machine runs; generated per machine by `init_script`.
INIT_PATH = "/var/lib/gpuctl-sim/init.sh"
HARDWARE_PATH = "/etc/gpuctl-sim/hardware.json"
KUBELET_CONF = "/etc/kubernetes/kubelet.conf"
STATUS_FD_VARIABLE = "GPUCTL_SIM_STATUS_FD"
# Wrappers also installed in the machine's /usr/bin, where their packages put them.
INSTALLED = ("kubeadm", "kubelet", "systemctl")
MACHINE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Stage 1, on the host side of the machine's fresh mount, UTS and PID namespaces
# (`unshare --mount --uts --pid --fork --kill-child`, so this bash is the
# namespace's PID 1): report the host PID, build the machine's root, set its
# hostname and become its init inside the root.
BOOT_SH = r"""#!/bin/bash
# Stage 1 of a simulated machine's boot (gpuctl.sim.machines). Environment:
# SIM_MACHINE (machine dir), SIM_AGENT (node agent binary), SIM_HOSTNAME,
# GPUCTL_SIM_STATUS_FD (pipe to the simulator).
set -u
report() { echo "$*" >&"$GPUCTL_SIM_STATUS_FD"; }
fail() { echo "[gpuctl-sim] machine boot failed: $*" >&2; report "boot-failed $*"; exit 90; }
read -r host_pid _ </proc/self/stat  # the host's /proc: our PID there
report "pid $host_pid"
R=$SIM_MACHINE/rootfs
mount -t overlay gpuctl-sim-machine \
  -o "lowerdir=/,upperdir=$SIM_MACHINE/upper,workdir=$SIM_MACHINE/work" "$R" \
  || fail "cannot mount the overlay root"
mount --rbind /dev "$R/dev" || fail "cannot bind /dev"
mount --rbind /sys "$R/sys" || fail "cannot bind /sys"
mount -t proc proc "$R/proc" || fail "cannot mount /proc"
mount -t tmpfs -o mode=0755,size=64m tmpfs "$R/run" || fail "cannot mount /run"
mkdir -p "$R$SIM_MACHINE/bin" && mount --bind "$SIM_MACHINE/bin" "$R$SIM_MACHINE/bin" \
  || fail "cannot bind the machine's bin"
mkdir -p "$R$(dirname "$SIM_AGENT")" && { [ -e "$R$SIM_AGENT" ] || : >"$R$SIM_AGENT"; } \
  && mount --bind "$SIM_AGENT" "$R$SIM_AGENT" || fail "cannot bind the node agent"
hostname "$SIM_HOSTNAME" || fail "cannot set the hostname"
exec chroot "$R" /bin/bash /var/lib/gpuctl-sim/init.sh
fail "cannot enter the machine's root"
"""

_AGENT_WRAPPER = """#!/bin/sh
# {name} on a simulated machine: the real flags go to the gpuctl node agent.
exec {agent} {name} "$@"
"""

_NO_EGRESS = r"""#!/bin/bash
# {name} on a simulated machine: there is no route to the internet, only to this host.
for arg in "$@"; do
  case $arg in
    -*) continue ;;
    *://*) host=${{arg#*://}} ;;
    *.*) host=$arg ;;
    *) continue ;;
  esac
  host=${{host%%/*}}; host=${{host##*@}}
  case $host in \[*\]*) host=${{host%%]*}}; host=${{host#[}} ;; *) host=${{host%%:*}} ;; esac
  case $host in
    127.*|localhost|::1) ;;
    *) echo "{name}: could not resolve host $host: the simulated machine has no internet access" >&2
       exit {code} ;;
  esac
done
exec /usr/bin/{name} "$@"
"""

_K3S = """#!/bin/sh
echo "k3s: not installed: the simulated machine image has no k3s (k3s joins are not simulated)" >&2
exit 127
"""

# systemd's kubelet unit as kubeadm's packages install it (kubelet.service +
# 10-kubeadm.conf), driven by a stand-in for systemctl.
_SYSTEMCTL = r"""#!/bin/bash
# systemctl on a simulated machine: knows one unit, the kubelet installed with kubeadm
# (kubelet.service + the 10-kubeadm.conf drop-in); daemon-reload is accepted.
AGENT={agent}
WANTS=/etc/systemd/system/multi-user.target.wants/kubelet.service
verb= units=() now=0
for arg in "$@"; do
  case $arg in
    --now) now=1 ;;
    -*) ;;
    *) if [ -z "$verb" ]; then verb=$arg; else units+=("${{arg%.service}}"); fi ;;
  esac
done
kubelet_pids() {{ pgrep -f -- "(^|/)${{AGENT##*/}} kubelet( |\$)"; }}
env_file() {{  # systemd EnvironmentFile: KEY=VALUE per line, the whole rest is the value
  [ -f "$1" ] || return 0
  local line key value
  while IFS= read -r line || [ -n "$line" ]; do
    line=${{line#"${{line%%[![:space:]]*}}"}}
    case $line in ''|'#'*|';'*) continue ;; esac
    key=${{line%%=*}}; value=${{line#*=}}
    case $value in \"*\") value=${{value:1:-1}} ;; \'*\') value=${{value:1:-1}} ;; esac
    export "$key=$value"
  done <"$1"
}}
start() {{
  [ -n "$(kubelet_pids)" ] && return 0
  (
    KUBELET_KUBECONFIG_ARGS="--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf"
    KUBELET_KUBECONFIG_ARGS+=" --kubeconfig=/etc/kubernetes/kubelet.conf"
    KUBELET_CONFIG_ARGS="--config=/var/lib/kubelet/config.yaml"
    env_file /var/lib/kubelet/kubeadm-flags.env
    env_file /etc/default/kubelet
    set -f
    # shellcheck disable=SC2086 # systemd splits unbraced $VARS of ExecStart at whitespace
    exec "$AGENT" kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS \
      ${{KUBELET_KUBEADM_ARGS:-}} ${{KUBELET_EXTRA_ARGS:-}} </dev/null >>/var/log/kubelet.log 2>&1
  ) &
}}
stop() {{
  local pids; pids=$(kubelet_pids) || return 0
  kill $pids 2>/dev/null
  for _ in $(seq 50); do [ -z "$(kubelet_pids)" ] && return 0; sleep 0.1; done
  kill -9 $(kubelet_pids) 2>/dev/null; return 0
}}
case $verb in
  daemon-reload|reset-failed) exit 0 ;;
  '') echo "systemctl (gpuctl simulated machine): a verb is needed" >&2; exit 1 ;;
esac
for unit in "${{units[@]}}"; do
  if [ "$unit" != kubelet ]; then
    echo "Failed to $verb $unit.service: Unit $unit.service not found." >&2; exit 5
  fi
  case $verb in
    start) start ;;
    stop) stop ;;
    restart|try-restart|reload-or-restart) stop; start ;;
    enable) mkdir -p "${{WANTS%/*}}"; : >"$WANTS"; [ $now = 1 ] && start ;;
    disable) rm -f "$WANTS"; [ $now = 1 ] && stop ;;
    is-active) if [ -n "$(kubelet_pids)" ]; then echo active; else echo inactive; exit 3; fi ;;
    is-enabled) if [ -e "$WANTS" ]; then echo enabled; else echo disabled; exit 1; fi ;;
    status) if [ -n "$(kubelet_pids)" ]; then echo "kubelet.service: active (running)"
            else echo "kubelet.service: inactive (dead)"; exit 3; fi ;;
    *) echo "systemctl (gpuctl simulated machine): $verb is not simulated" >&2; exit 1 ;;
  esac
done
exit 0
"""


def wrappers(agent: Path) -> dict[str, str]:
    """The programs in a machine's bin dir, first on its PATH."""
    quoted = shlex.quote(str(agent))
    return {
        "kubeadm": _AGENT_WRAPPER.format(name="kubeadm", agent=quoted),
        "kubelet": _AGENT_WRAPPER.format(name="kubelet", agent=quoted),
        "systemctl": _SYSTEMCTL.format(agent=quoted),
        "curl": _NO_EGRESS.format(name="curl", code=6),
        "wget": _NO_EGRESS.format(name="wget", code=4),
        "k3s": _K3S,
    }


def init_script(
    *,
    banner: str,
    command: Sequence[str],
    env: Mapping[str, str],
    container: bool,
) -> str:
    """PID 1 of the machine, inside its root: run the cloud's boot program, report, then idle.

    A VM stays up after its boot program (init keeps reaping orphans such as the
    kubelet); a container stops when its main process exits, taking every process
    of the machine with it (the PID namespace ends with its init).
    """
    words = " ".join(shlex.quote(w) for w in command)
    variables = " ".join(shlex.quote(f"{k}={v}") for k, v in env.items())
    status = f'"${STATUS_FD_VARIABLE}"'
    lines = [
        "#!/bin/bash",
        "# PID 1 of a simulated machine (gpuctl.sim.machines): the cloud's boot program.",
        "exec </dev/null",
        "cd /root 2>/dev/null || cd /",
        f"echo {shlex.quote('[gpuctl-sim] ' + banner)}",
        f"env -i {variables} {words} {{{STATUS_FD_VARIABLE}}}>&-",
        "rc=$?",
        'echo "[gpuctl-sim] boot program exited with status $rc"',
        f'echo "exit $rc" >&{status}',
        f"exec {{{STATUS_FD_VARIABLE}}}>&-",
    ]
    if container:
        lines.append('echo "[gpuctl-sim] the container stops: its main process exited"')
        lines.append("exit $rc")
    else:
        lines.append("while :; do sleep 86400 & wait $!; done")
    return "\n".join(lines) + "\n"


@attrs.frozen
class MachineDir:
    path: Path

    @property
    def upper(self) -> Path:
        return self.path / "upper"

    @property
    def work(self) -> Path:
        return self.path / "work"

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"

    @property
    def bin(self) -> Path:
        return self.path / "bin"

    @property
    def console(self) -> Path:
        return self.path / "console.log"

    def create(self, agent: Path) -> None:
        for directory in (self.upper, self.work, self.rootfs, self.bin):
            directory.mkdir(parents=True, exist_ok=True)
        for name, text in wrappers(agent).items():
            target = self.bin / name
            target.write_text(text)
            target.chmod(0o755)

    def wipe_disk(self) -> None:
        """A fresh root (a container restarted on a new container disk)."""
        for directory in (self.upper, self.work):
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir()

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def host_path(self, machine_path: str) -> Path:
        """Where `machine_path` of the machine lives in its upper dir."""
        relative = os.path.normpath(machine_path).lstrip("/")
        if relative.startswith(".."):
            raise ValueError(f"not an absolute machine path: {machine_path!r}")
        return self.upper / relative

    def write(self, machine_path: str, data: bytes, mode: int = 0o644) -> None:
        """Put a file on the machine before it boots (the upper dir is not mounted yet)."""
        target = self.host_path(machine_path)
        self._parents(target)
        target.write_bytes(data)
        target.chmod(mode)

    def read(self, machine_path: str) -> bytes | None:
        """A file the machine wrote (its upper dir only); None if it has none."""
        try:
            return self.host_path(machine_path).read_bytes()
        except OSError:
            return None

    def has(self, machine_path: str) -> bool:
        return self.host_path(machine_path).is_file()

    def console_tail(self, lines: int = 8) -> str:
        try:
            with self.console.open("rb") as console:
                console.seek(0, os.SEEK_END)
                console.seek(max(0, console.tell() - 8192))
                text = console.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def say(self, line: str) -> None:
        """A line on the console from the cloud itself (not from the machine)."""
        with self.console.open("a") as console:
            console.write(f"[gpuctl-sim] {line}\n")

    def _parents(self, target: Path) -> None:
        """Create missing parents in the upper dir with the host directory's mode and owner.

        The merged directory takes its attributes from the upper one, so a parent
        created here must look like the host's (e.g. /root is 0700).
        """
        missing: list[Path] = []
        parent = target.parent
        while parent != self.upper and not parent.is_dir():
            missing.append(parent)
            parent = parent.parent
        for directory in reversed(missing):
            directory.mkdir()
            host = Path("/") / directory.relative_to(self.upper)
            try:
                info = host.stat()
            except OSError:
                directory.chmod(0o755)
                continue
            directory.chmod(stat.S_IMODE(info.st_mode))
            os.chown(directory, info.st_uid, info.st_gid)
