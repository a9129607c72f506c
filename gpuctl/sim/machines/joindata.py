"""What each cloud runs on a new machine, from what the client gave it (docs/sim.md#machines).

- Lambda: `user_data` is cloud-init user data (the spec: "a valid cloud-init
  user-data format ... plain text ... cannot exceed 1MB"). The simulated
  cloud-init runs `#cloud-config` (bootcmd, write_files, runcmd) or a `#!`
  script; see `cloudinit`.
- Hyperstack, DigitalOcean: `user_data` is cloud-init user data too ("user_data":
  cloud-init, Hyperstack's VM docs; "user_data ... cloud-config or a shell script ...
  64 KiB", DigitalOcean's create-Droplet docs), run by cloud-init on their Ubuntu
  images exactly as Lambda's; the hostname is the VM's name.
- Paperspace: the machine's startup script is run at boot with bash, as root
  ("For Linux machines, the script should be a bash script", "script data is
  limited to 16KB per script": docs.paperspace.com/core/api-reference/scripts).
  The API takes a longer script without complaint (the OpenAPI spec states no
  limit), so the simulator accepts it and does not run it.
- Crusoe: the VM's `startup_script` is run at every boot once the network is up, as
  root, in the root directory `/` ("Lifecycle scripts": docs.crusoecloud.com; the
  console saves it under /usr/local/bin/crusoe). No size limit is documented.
- RunPod: a pod is a container. Its main process is `dockerEntrypoint` +
  `dockerStartCmd` (each "[]: use the image's"), run with the pod's `env`; when
  it exits, the container stops. The simulated image has no entrypoint and no
  command of its own, so a pod given neither runs nothing.

`plan()` turns an instance into a `BootPlan` (files placed on the machine
before boot, the program its init runs) or a `NotRun` (why nothing runs).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from typing import Any

import attrs

from gpuctl.api.constants import GPU_RESOURCE_NVIDIA, GPU_RESOURCES
from gpuctl.sim.machines import cloudinit
from gpuctl.sim.machines.rootfs import HARDWARE_PATH, MACHINE_PATH
from gpuctl.sim.model import JoinStatus, SimInstance

PAPERSPACE_SCRIPT_LIMIT = 16 * 1024  # bytes; "16KB" read as KiB, the larger reading
CLOUD_INIT = "/var/lib/cloud/instance"
CLOUD_INIT_PROGRAM = "/var/lib/gpuctl-sim/cloud-init.sh"
PAPERSPACE_SCRIPT = "/var/lib/gpuctl-sim/paperspace-startup-script"
CRUSOE_SCRIPT = "/usr/local/bin/crusoe/startup.sh"
_PRODUCT = re.compile(r"[^A-Za-z0-9._-]+")
_AMD = re.compile(r"amd[ _-]", re.IGNORECASE)


@attrs.frozen
class BootPlan:
    banner: str  # the console's first line: what the cloud runs
    command: tuple[str, ...]  # run by the machine's init with exactly `env`
    env: Mapping[str, str]
    files: Mapping[str, tuple[bytes, int]] = attrs.field(factory=dict)  # machine path -> data, mode
    container: bool = False  # the machine stops when `command` exits
    hostname: str = "localhost"


@attrs.frozen
class NotRun:
    status: JoinStatus  # NO_JOIN_DATA or NOT_RUN
    reason: str


@attrs.frozen
class Hardware:
    cpus: int
    memory_gib: int
    gpus: int
    gpu_product: str
    gpu_resource: str = GPU_RESOURCE_NVIDIA  # what its GPUs' device plugin registers

    def as_json(self) -> bytes:
        data = {
            "cpus": self.cpus,
            "memoryGiB": self.memory_gib,
            "gpus": self.gpus,
            "gpuProduct": self.gpu_product,
            "gpuResource": self.gpu_resource,
        }
        return (json.dumps(data, indent=2) + "\n").encode()


def gpu_vendor(gpu_name: str) -> str:
    """ "amd" or "nvidia": the clouds name their AMD parts so (DigitalOcean's
    `amd_mi300x`, "AMD Instinct MI300X ..." on RunPod and Crusoe); every other GPU the
    simulated clouds sell is NVIDIA's."""
    return "amd" if _AMD.match(gpu_name) else "nvidia"


def gpu_resource(gpu_name: str) -> str:
    """The extended resource the GPU's vendor's device plugin registers."""
    return GPU_RESOURCES[gpu_vendor(gpu_name)]


def gpu_product(gpu_name: str) -> str:
    """The product label form: GPU feature discovery's `nvidia.com/gpu.product`
    (NVIDIA-H100-80GB-HBM3), or AMD-<model> for AMD parts (AMD-Instinct-MI300X)."""
    if gpu_vendor(gpu_name) == "amd":
        model = gpu_name[4:]
        name = "AMD " + (model.upper() if model.islower() else model)  # amd_mi300x: MI300X
    elif gpu_name.upper().startswith("NVIDIA"):
        name = gpu_name
    else:
        name = f"NVIDIA {gpu_name}"
    return _PRODUCT.sub("-", name.replace("(", " ").replace(")", " ")).strip("-")[:63]


def plan(instance: SimInstance, hardware: Hardware, *, boot: int = 1) -> BootPlan | NotRun:
    """What the machine runs on its `boot`-th boot."""
    planner = {
        "lambda": _lambda,
        "paperspace": _paperspace,
        "runpod": _runpod,
        "crusoe": _crusoe,
        "hyperstack": _cloud_init,
        "digitalocean": _cloud_init,
    }[instance.cloud]
    result = planner(instance, boot)
    if isinstance(result, NotRun):
        return result
    files = {HARDWARE_PATH: (hardware.as_json(), 0o644), **result.files}
    files["/etc/hostname"] = (f"{result.hostname}\n".encode(), 0o644)
    return attrs.evolve(result, files=files)


def _vm_env(home: bool) -> dict[str, str]:
    env = {"PATH": MACHINE_PATH, "LANG": "C.UTF-8"}
    if home:
        env["HOME"] = "/root"
    return env


# -- Lambda: cloud-init ------------------------------------------------------------


def _lambda(instance: SimInstance, boot: int) -> BootPlan | NotRun:
    return _cloud_init(instance, boot)


# Hyperstack and DigitalOcean take the same cloud-init user data (`user_data`) and run it
# on their Ubuntu images with cloud-init, as Lambda does.
_CLOUD_INIT_MACHINE = {
    "lambda": "Lambda instance",
    "hyperstack": "Hyperstack VM",
    "digitalocean": "DigitalOcean Droplet",
}


def _cloud_init(instance: SimInstance, boot: int) -> BootPlan | NotRun:
    user_data = cloudinit.parse(instance.join_script)
    if user_data.kind is cloudinit.Kind.EMPTY:
        return NotRun(JoinStatus.NO_JOIN_DATA, user_data.detail)
    if user_data.kind not in (cloudinit.Kind.CLOUD_CONFIG, cloudinit.Kind.SCRIPT):
        return NotRun(JoinStatus.NOT_RUN, f"cloud-init: {user_data.detail}")
    files: dict[str, tuple[bytes, int]] = {
        f"{CLOUD_INIT}/user-data.txt": (instance.join_script.encode(), 0o600),
    }
    program = _cloud_init_program(user_data, instance, boot, files)
    files[CLOUD_INIT_PROGRAM] = (program.encode(), 0o700)
    request: Mapping[str, Any] = instance.request
    default = (instance.public_ip or instance.id).replace(".", "-")
    if instance.cloud != "lambda":  # a Hyperstack VM's or Droplet's hostname is its name
        default = instance.name or default
    hostname = str(request.get("hostname") or default)
    return BootPlan(
        banner=(
            f"{_CLOUD_INIT_MACHINE[instance.cloud]} {instance.id}: cloud-init runs the user "
            f"data ({user_data.kind})"
        ),
        command=("/bin/bash", CLOUD_INIT_PROGRAM),
        # cloud-init runs as a systemd service: root, no HOME, the distribution's PATH
        env=_vm_env(home=False),
        files=files,
        hostname=hostname,
    )


def _cloud_init_program(
    user_data: cloudinit.UserData,
    instance: SimInstance,
    boot: int,
    files: dict[str, tuple[bytes, int]],
) -> str:
    """The simulated cloud-init: the modules in cloud-init's stage order, as bash."""
    lines = [
        "#!/bin/bash",
        "# cloud-init, as simulated by gpuctl.sim: bootcmd, write_files, runcmd, scripts.",
        "rc=0",
        'say() { echo "cloud-init[sim]: $*"; }',
        "write_file() {  # source dest mode owner append",
        '  mkdir -p -- "$(dirname -- "$2")" || return',
        '  if [ "$5" = 1 ]; then cat -- "$1" >>"$2"; else cat -- "$1" >"$2"; fi || return',
        '  chmod "$3" -- "$2" && chown -- "$4" "$2"',
        "}",
        f"say 'boot {boot} of instance {instance.id}'",
    ]
    scripts = f"{CLOUD_INIT}/scripts"
    if user_data.kind is cloudinit.Kind.SCRIPT:
        assert user_data.script is not None
        files[f"{scripts}/part-001"] = (user_data.script, 0o700)
        if boot == 1:
            lines += _run_script(f"{scripts}/part-001", "user script part-001")
        return "\n".join(lines) + "\n"
    config = user_data.config
    assert config is not None
    for problem in config.problems:
        lines += [f"say {_q('module failed: ' + problem)}", "rc=1"]
    if config.ignored_keys:
        lines.append(f"say {_q('not simulated: ' + ', '.join(config.ignored_keys))}")
    if config.bootcmd is not None:  # init stage, every boot
        files[f"{CLOUD_INIT}/sim-bootcmd.sh"] = (config.bootcmd.encode(), 0o600)
        lines += [
            "say 'running bootcmd'",
            f"INSTANCE_ID={_q(instance.id)} /bin/sh {CLOUD_INIT}/sim-bootcmd.sh"
            ' || { s=$?; say "bootcmd failed (exit status $s)"; rc=$s; }',
        ]
    if boot > 1:  # write_files and runcmd are per instance: first boot only
        lines.append("exit $rc")
        return "\n".join(lines) + "\n"
    for deferred in (False, True):
        group = [f for f in config.write_files if f.defer is deferred]
        if not group:
            continue
        calls = []
        for index, entry in enumerate(group, 1):
            source = f"{CLOUD_INIT}/sim-write-files/{int(deferred)}-{index:03d}"
            files[source] = (entry.content, 0o600)
            calls.append(
                f"write_file {source} {_q(entry.path)} {entry.permissions:o}"
                f" {_q(entry.owner)} {int(entry.append)}"
            )
        module = "write_files_deferred" if deferred else "write_files"
        lines += [
            f"say 'running {module}'",
            "{ " + " && ".join(calls) + "; }"
            f' || {{ s=$?; say "{module} failed (exit status $s)"; rc=$s; }}',
        ]
    if config.runcmd is not None:  # config stage writes it, scripts_user runs it
        files[f"{scripts}/runcmd"] = (config.runcmd.encode(), 0o700)
        lines += _run_script(f"{scripts}/runcmd", "runcmd")
    lines.append("exit $rc")
    return "\n".join(lines) + "\n"


def _run_script(path: str, what: str) -> list[str]:
    return [
        f"say 'scripts_user: running {what}'",
        f'{path} || {{ s=$?; say "{what} failed (exit status $s)"; rc=$s; }}',
    ]


def _q(text: str) -> str:
    return shlex.quote(text)


# -- Paperspace: a bash startup script ----------------------------------------------


def _paperspace(instance: SimInstance, boot: int) -> BootPlan | NotRun:
    script = instance.join_script
    if not instance.request.get("startupScriptId"):
        return NotRun(JoinStatus.NO_JOIN_DATA, "no startup script: Paperspace runs nothing")
    size = len(script.encode())
    if size > PAPERSPACE_SCRIPT_LIMIT:
        return NotRun(
            JoinStatus.NOT_RUN,
            f"startup script of {size} bytes is over Paperspace's documented 16 KB limit "
            f"({PAPERSPACE_SCRIPT_LIMIT} bytes): not run",
        )
    if not script.strip():
        return NotRun(JoinStatus.NO_JOIN_DATA, "the startup script is empty")
    return BootPlan(
        banner=f"Paperspace machine {instance.id}: running the startup script with bash",
        command=("/bin/bash", PAPERSPACE_SCRIPT),
        env=_vm_env(home=True),
        files={PAPERSPACE_SCRIPT: (script.encode(), 0o700)},
        hostname=instance.id.lower(),
    )


# -- Crusoe: the VM's startup script ---------------------------------------------------


def _crusoe(instance: SimInstance, boot: int) -> BootPlan | NotRun:
    script = instance.join_script
    if not script.strip():
        return NotRun(JoinStatus.NO_JOIN_DATA, "no startup_script: Crusoe runs nothing")
    # Executed as a file from /: its #! line picks the shell (sh reads one without).
    return BootPlan(
        banner=f"Crusoe VM {instance.id}: running the startup script as root from /",
        command=("/bin/sh", "-c", f"cd / && exec {CRUSOE_SCRIPT}"),
        env=_vm_env(home=True),
        files={CRUSOE_SCRIPT: (script.encode(), 0o755)},
        hostname=instance.name.lower()[:63] or instance.id.lower(),
    )


# -- RunPod: the container's main process ---------------------------------------------


def _runpod(instance: SimInstance, boot: int) -> BootPlan | NotRun:
    request = instance.request
    argv = [*request.get("dockerEntrypoint", []), *request.get("dockerStartCmd", [])]
    if not argv:
        return NotRun(
            JoinStatus.NO_JOIN_DATA,
            "no dockerStartCmd or dockerEntrypoint: the image's own command runs, and the "
            "simulated image has none (its env alone starts nothing)",
        )
    env = {
        **_vm_env(home=True),
        "RUNPOD_POD_ID": instance.id,
        "RUNPOD_GPU_COUNT": str(instance.gpu_count),
        **{str(k): str(v) for k, v in instance.join_env.items()},
    }
    return BootPlan(
        banner=f"RunPod pod {instance.id}: the container starts its main process",
        command=tuple(str(a) for a in argv),
        env=env,
        container=True,
        hostname=instance.id.lower(),
    )
