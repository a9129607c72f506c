"""What each simulated cloud runs on a new machine (gpuctl.sim.machines.joindata): no
processes here, only the plans (tests/unit/test_sim_machines.py boots them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gpuctl.sim import JoinStatus, SimInstance
from gpuctl.sim.machines import cloudinit, joindata
from gpuctl.sim.machines.joindata import BootPlan, Hardware, NotRun
from gpuctl.sim.machines.rootfs import HARDWARE_PATH, init_script, wrappers
from tests.unit.test_sim_cloudinit import kubeadm_user_data

HARDWARE = Hardware(cpus=208, memory_gib=1800, gpus=8, gpu_product="NVIDIA-H100-80GB-HBM3")


def instance(cloud: str, script: str = "", **request: Any) -> SimInstance:
    return SimInstance(
        cloud=cloud,
        id="abc123",
        name="gpu-a-1",
        instance_type="t",
        region="r",
        gpu_count=8,
        vcpus=208,
        memory_gib=1800,
        spot=False,
        price_per_hour=1.0,
        created_at=0.0,
        join_script=script,
        join_env=request.pop("env", {}),
        public_ip="203.0.113.7",
        request=request,
    )


def boot_plan(result: BootPlan | NotRun) -> BootPlan:
    assert isinstance(result, BootPlan), result
    return result


def test_hardware_file_and_hostname_on_every_machine() -> None:
    plan = boot_plan(joindata.plan(instance("lambda", kubeadm_user_data()), HARDWARE))
    data, mode = plan.files[HARDWARE_PATH]
    assert json.loads(data) == {
        "cpus": 208,
        "memoryGiB": 1800,
        "gpus": 8,
        "gpuProduct": "NVIDIA-H100-80GB-HBM3",
        "gpuResource": "nvidia.com/gpu",
    }
    assert mode == 0o644
    assert plan.files["/etc/hostname"][0] == b"203-0-113-7\n"


@pytest.mark.parametrize(
    ("name", "product"),
    [
        ("NVIDIA H100 80GB HBM3", "NVIDIA-H100-80GB-HBM3"),
        ("H100 (80 GB SXM5)", "NVIDIA-H100-80-GB-SXM5"),
        ("A100-80G", "NVIDIA-A100-80G"),
        ("amd_mi300x", "AMD-MI300X"),
        ("AMD Instinct MI300X", "AMD-Instinct-MI300X"),
    ],
)
def test_gpu_product(name: str, product: str) -> None:
    assert joindata.gpu_product(name) == product


@pytest.mark.parametrize(
    ("name", "resource"),
    [
        ("NVIDIA H100 80GB HBM3", "nvidia.com/gpu"),
        ("nvidia_l40s", "nvidia.com/gpu"),
        ("amd_mi300x", "amd.com/gpu"),  # DigitalOcean's gpu_info.model
        ("AMD Instinct MI300X OAM", "amd.com/gpu"),  # RunPod's gpuTypeId
        ("AMD Instinct MI300X", "amd.com/gpu"),  # the simulated Crusoe's
    ],
)
def test_gpu_resource_follows_the_vendor(name: str, resource: str) -> None:
    assert joindata.gpu_resource(name) == resource


# -- Lambda -------------------------------------------------------------------------


def test_lambda_cloud_config_becomes_cloud_init_stages() -> None:
    plan = boot_plan(joindata.plan(instance("lambda", kubeadm_user_data()), HARDWARE))
    assert plan.command == ("/bin/bash", joindata.CLOUD_INIT_PROGRAM)
    assert not plan.container and "HOME" not in plan.env  # a systemd service has no HOME
    runcmd = plan.files["/var/lib/cloud/instance/scripts/runcmd"]
    assert runcmd[1] == 0o700 and runcmd[0].startswith(b"#!/bin/sh\n'bash' '-euc'")
    program = plan.files[joindata.CLOUD_INIT_PROGRAM][0].decode()
    # write_files before runcmd, the payload staged in the machine's own /var
    assert program.index("write_file /var/lib/cloud/instance/sim-write-files/0-001") < (
        program.index("/var/lib/cloud/instance/scripts/runcmd ||")
    )
    assert "/etc/gpuctl/join.env 600 root:root 0" in program
    assert plan.files["/var/lib/cloud/instance/user-data.txt"][1] == 0o600


def test_lambda_script_user_data_runs_as_part_001() -> None:
    plan = boot_plan(joindata.plan(instance("lambda", "#!/bin/bash\necho hi\n"), HARDWARE))
    assert plan.files["/var/lib/cloud/instance/scripts/part-001"] == (
        b"#!/bin/bash\necho hi\n",
        0o700,
    )
    assert "scripts/part-001 ||" in plan.files[joindata.CLOUD_INIT_PROGRAM][0].decode()


def test_lambda_second_boot_runs_bootcmd_only() -> None:
    text = "#cloud-config\nbootcmd: [echo boot]\nruncmd: [echo once]\n"
    program = boot_plan(joindata.plan(instance("lambda", text), HARDWARE, boot=2))
    script = program.files[joindata.CLOUD_INIT_PROGRAM][0].decode()
    assert "sim-bootcmd.sh" in script and "scripts/runcmd" not in script


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("", JoinStatus.NO_JOIN_DATA),
        ("#include\nhttps://example.com/join\n", JoinStatus.NOT_RUN),
        ("export GPUCTL_API_SERVER=x\n", JoinStatus.NOT_RUN),
        ("#cloud-config\n[not, a, map]\n", JoinStatus.NOT_RUN),
    ],
)
def test_lambda_user_data_cloud_init_does_not_run(text: str, status: JoinStatus) -> None:
    result = joindata.plan(instance("lambda", text), HARDWARE)
    assert isinstance(result, NotRun) and result.status is status and result.reason


# -- Paperspace ---------------------------------------------------------------------


def test_paperspace_runs_its_startup_script_with_bash() -> None:
    script = "#!/bin/bash\necho hi\n"
    plan = boot_plan(joindata.plan(instance("paperspace", script, startupScriptId="s1"), HARDWARE))
    assert plan.command == ("/bin/bash", joindata.PAPERSPACE_SCRIPT)
    assert plan.files[joindata.PAPERSPACE_SCRIPT] == (script.encode(), 0o700)
    assert plan.env["HOME"] == "/root" and plan.hostname == "abc123"


def test_paperspace_takes_a_cloud_config_as_a_bash_script() -> None:
    """It is not refused: Paperspace runs it with bash, where it fails (see the machine tests)."""
    text = kubeadm_user_data()
    plan = boot_plan(joindata.plan(instance("paperspace", text, startupScriptId="s1"), HARDWARE))
    assert plan.files[joindata.PAPERSPACE_SCRIPT][0] == text.encode()


def test_paperspace_script_size_limit() -> None:
    limit = joindata.PAPERSPACE_SCRIPT_LIMIT
    assert limit == 16 * 1024
    at_limit = "#" * limit
    assert isinstance(
        joindata.plan(instance("paperspace", at_limit, startupScriptId="s1"), HARDWARE), BootPlan
    )
    over = joindata.plan(instance("paperspace", at_limit + "#", startupScriptId="s1"), HARDWARE)
    assert isinstance(over, NotRun) and over.status is JoinStatus.NOT_RUN
    assert f"{limit + 1} bytes" in over.reason and "16 KB" in over.reason
    none = joindata.plan(instance("paperspace", ""), HARDWARE)
    assert isinstance(none, NotRun) and none.status is JoinStatus.NO_JOIN_DATA


# -- Crusoe ---------------------------------------------------------------------------


def test_crusoe_runs_its_startup_script_as_root_from_the_root_directory() -> None:
    script = "#!/bin/bash\necho hi\n"
    plan = boot_plan(joindata.plan(instance("crusoe", script), HARDWARE))
    assert plan.command == ("/bin/sh", "-c", f"cd / && exec {joindata.CRUSOE_SCRIPT}")
    assert plan.files[joindata.CRUSOE_SCRIPT] == (script.encode(), 0o755)
    assert plan.env["HOME"] == "/root" and plan.hostname == "gpu-a-1"
    assert not plan.container
    again = boot_plan(joindata.plan(instance("crusoe", script), HARDWARE, boot=2))
    assert again.command == plan.command  # a startup script runs at every boot
    none = joindata.plan(instance("crusoe", ""), HARDWARE)
    assert isinstance(none, NotRun) and none.status is JoinStatus.NO_JOIN_DATA


# -- RunPod ---------------------------------------------------------------------------


def test_runpod_start_command_is_the_containers_main_process() -> None:
    pod = instance(
        "runpod",
        dockerEntrypoint=["/bin/bash"],
        dockerStartCmd=["-c", "kubeadm join x"],
        env={"GPUCTL_NODE_NAME": "n1", "RUNPOD_POD_ID": "set-by-user"},
    )
    plan = boot_plan(joindata.plan(pod, HARDWARE))
    assert plan.command == ("/bin/bash", "-c", "kubeadm join x")
    assert plan.container
    assert plan.env["GPUCTL_NODE_NAME"] == "n1"
    assert plan.env["RUNPOD_POD_ID"] == "set-by-user"  # the pod's env is applied last
    assert plan.env["RUNPOD_GPU_COUNT"] == "8"


def test_runpod_without_a_start_command_runs_the_images_nothing() -> None:
    result = joindata.plan(instance("runpod", env={"GPUCTL_API_SERVER": "x"}), HARDWARE)
    assert isinstance(result, NotRun) and result.status is JoinStatus.NO_JOIN_DATA
    assert "dockerStartCmd" in result.reason


# -- what PID 1 runs ------------------------------------------------------------------


def test_init_script_runs_the_command_with_exactly_its_env() -> None:
    text = init_script(
        banner="b", command=("/bin/bash", "-c", "echo 'x'"), env={"A": "1 2"}, container=True
    )
    assert "env -i 'A=1 2' /bin/bash -c 'echo '\"'\"'x'\"'\"'' {GPUCTL_SIM_STATUS_FD}>&-" in text
    assert text.rstrip().endswith("exit $rc")
    vm = init_script(banner="b", command=("true",), env={}, container=False)
    assert "while :; do sleep 86400 & wait $!; done" in vm


def test_wrappers_hand_the_flags_to_the_agent() -> None:
    scripts = wrappers(Path("/opt/gpuctl node-agent"))
    assert scripts["kubeadm"].splitlines()[-1] == "exec '/opt/gpuctl node-agent' kubeadm \"$@\""
    assert scripts["kubelet"].splitlines()[-1] == "exec '/opt/gpuctl node-agent' kubelet \"$@\""
    assert set(scripts) == {"kubeadm", "kubelet", "systemctl", "curl", "wget", "k3s"}


def test_cloud_config_parse_is_what_the_plan_uses() -> None:
    parsed = cloudinit.parse(kubeadm_user_data())
    assert parsed.config is not None and parsed.config.runcmd is not None
    plan = boot_plan(joindata.plan(instance("lambda", kubeadm_user_data()), HARDWARE))
    assert plan.files["/var/lib/cloud/instance/scripts/runcmd"][0] == parsed.config.runcmd.encode()
