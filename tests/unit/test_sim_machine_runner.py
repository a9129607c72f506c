"""Simulated machines booted for real (gpuctl.sim.machines), with a stand-in node agent.

No cluster: tests/data/fake-node-agent records its argv in the machine's
/var/log/fake-node-agent.argv and, for `kubeadm join`, writes what a join leaves
and starts an idle "kubelet". Needs root (mount namespaces, overlayfs): skipped
otherwise. tests/integration/test_sim_machines.py joins the real agent to a cluster.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gpuctl.controllers import bootstrap
from gpuctl.providers.base import JoinMethod
from gpuctl.sim import JoinStatus, MachineError, SimConfig, Simulator
from gpuctl.sim.machines import probe
from tests.unit.test_sim_support import CloudClient

FAKE_AGENT = Path(__file__).resolve().parents[1] / "data" / "fake-node-agent"
ARGV_LOG = "upper/var/log/fake-node-agent.argv"


def can_run_machines() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    try:
        probe(Path("/tmp"))
    except MachineError as error:
        return str(error)
    return None


_SKIP = can_run_machines()
needs_machines = pytest.mark.skipif(_SKIP is not None, reason=f"machines cannot run: {_SKIP}")


def join_params(node: str = "gpu-a-1", taints: tuple[str, ...] = ()) -> bootstrap.JoinParams:
    return bootstrap.JoinParams(
        api_server="https://127.0.0.1:6443",
        token=bootstrap.Token("abcdef", "0123456789abcdef"),
        ca_cert_hash="sha256:" + "ab" * 32,
        node_name=node,
        labels={"gpuctl.io/request": "a"},
        taints=taints,
    )


def render(
    cloud_format: JoinMethod,
    method: bootstrap.Method = bootstrap.Method.KUBEADM,
    **params: Any,
) -> str:
    return bootstrap.render(method, join_params(**params), cloud_format=cloud_format).script


def session_pids(sid: int) -> list[int]:
    """Processes of a session: a machine's session is its `unshare`'s PID."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:
            found.append(int(entry.name))
    return found


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[Simulator]:
    config = SimConfig(
        seed=3,
        boot_seconds=0.0,
        terminate_seconds=0.1,
        execute_join_data=True,
        node_agent=FAKE_AGENT,
        workdir=tmp_path / "machines",
    )
    async with Simulator(config) as simulator:
        yield simulator


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def launch_lambda(sim: Simulator, session: aiohttp.ClientSession, user_data: str) -> str:
    body = {
        "region_name": "us-east-1",
        "instance_type_name": "gpu_8x_h100_sxm5",
        "ssh_key_names": ["gpuctl"],
        "name": "gpu-a-1",
        "user_data": user_data,
    }
    answer = await CloudClient(sim, "lambda", session).call(
        "POST", "/api/v1/instance-operations/launch", json_body=body
    )
    instance_id: str = answer.body["data"]["instance_ids"][0]
    await sim.settle()
    return instance_id


async def launch_paperspace(sim: Simulator, session: aiohttp.ClientSession, script: str) -> str:
    api = CloudClient(sim, "paperspace", session)
    created = await api.call(
        "POST", "/v1/startup-scripts", json_body={"name": "gpu-a-1", "script": script}
    )
    body = {
        "name": "gpu-a-1",
        "machineType": "A100-80Gx8",
        "templateId": "t0nspur5",
        "diskSize": 500,
        "region": "ny2",
        "startupScriptId": created.body["id"],
    }
    machine_id: str = (await api.call("POST", "/v1/machines", json_body=body)).body["data"]["id"]
    await sim.settle()
    return machine_id


async def launch_runpod(sim: Simulator, session: aiohttp.ClientSession, **body: Any) -> str:
    request = {
        "name": "gpu-a-1",
        "gpuTypeIds": ["NVIDIA H100 80GB HBM3"],
        "gpuCount": 2,
        "imageName": "ghcr.io/gpuctl/node:latest",
        **body,
    }
    answer = await CloudClient(sim, "runpod", session).call("POST", "/v1/pods", json_body=request)
    pod_id: str = answer.body["id"]
    await sim.settle()
    return pod_id


def machine_dir(sim: Simulator, cloud: str, instance_id: str) -> Path:
    path = sim.machines.machine_dir(sim.state.instance(cloud, instance_id))
    assert path is not None
    return path


def agent_calls(sim: Simulator, cloud: str, instance_id: str) -> list[list[str]]:
    log = machine_dir(sim, cloud, instance_id) / ARGV_LOG
    return [line.split("\t") for line in log.read_text().splitlines()] if log.exists() else []


def sid_of(sim: Simulator, cloud: str, instance_id: str) -> int:
    machine = sim.machines._machines[(cloud, instance_id)]
    assert machine.process is not None
    return machine.process.pid


# -- Lambda ----------------------------------------------------------------------------


@needs_machines
async def test_lambda_runs_gpuctls_cloud_init_and_kubeadm_join(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    user_data = render(JoinMethod.USER_DATA, taints=("nvidia.com/gpu=present:NoSchedule",))
    iid = await launch_lambda(sim, session, user_data)
    machine = await sim.wait_join("lambda", iid, 30)
    assert machine.join_status is JoinStatus.JOINED, machine.join_detail
    assert machine.node_name == "gpu-a-1"
    assert agent_calls(sim, "lambda", iid) == [
        [
            "kubeadm",
            "join",
            "127.0.0.1:6443",
            "--token",
            "abcdef.0123456789abcdef",
            "--discovery-token-ca-cert-hash",
            "sha256:" + "ab" * 32,
            "--node-name",
            "gpu-a-1",
        ],
        ["kubelet", "--fake"],
    ]
    root = machine_dir(sim, "lambda", iid) / "upper"
    assert (root / "etc/default/kubelet").read_text() == (
        "KUBELET_EXTRA_ARGS=--node-labels=gpuctl.io/request=a"
        " --register-with-taints=nvidia.com/gpu=present:NoSchedule\n"
    )
    env = root / "etc/gpuctl/join.env"
    assert oct(env.stat().st_mode & 0o777) == "0o600"
    assert "export GPUCTL_NODE_NAME=gpu-a-1" in env.read_text()
    assert '"gpus": 8' in (root / "etc/gpuctl-sim/hardware.json").read_text()
    assert not Path("/etc/gpuctl/join.env").exists()  # the host's /etc is untouched
    console = sim.console("lambda", iid)
    assert "This node has joined the cluster" in console
    assert "cloud-init[sim]: running write_files" in console


@needs_machines
async def test_terminate_kills_every_process_of_the_machine(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    iid = await launch_lambda(sim, session, render(JoinMethod.USER_DATA))
    await sim.wait_join("lambda", iid, 30)
    sid = sid_of(sim, "lambda", iid)
    assert len(session_pids(sid)) >= 3  # unshare, init, the "kubelet" (+ its sleep)
    await CloudClient(sim, "lambda", session).call(
        "POST", "/api/v1/instance-operations/terminate", json_body={"instance_ids": [iid]}
    )
    await sim.settle()
    assert session_pids(sid) == []
    machine = sim.instance("lambda", iid)
    assert machine.join_status is JoinStatus.JOINED  # it did join; it is gone now
    assert "every process of the machine is killed" in sim.console("lambda", iid)


@needs_machines
async def test_a_flag_kubeadm_rejects_fails_the_join(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    user_data = "#cloud-config\nruncmd:\n  - [kubeadm, join, '10.0.0.1:6443', --unknown-flag]\n"
    iid = await launch_lambda(sim, session, user_data)
    machine = await sim.wait_join("lambda", iid, 30)
    assert machine.join_status is JoinStatus.FAILED
    assert "unknown flag: --unknown-flag" in machine.join_detail
    assert machine.node_name is None


@needs_machines
async def test_k3s_join_cannot_download_k3s(sim: Simulator, session: aiohttp.ClientSession) -> None:
    user_data = render(JoinMethod.USER_DATA, bootstrap.Method.K3S)
    iid = await launch_lambda(sim, session, user_data)
    machine = await sim.wait_join("lambda", iid, 30)
    # `curl ... | sh -s - agent`: curl fails, sh runs an empty script and exits 0
    assert machine.join_status is JoinStatus.NOT_JOINED, machine.join_detail
    assert "could not resolve host get.k3s.io" in sim.console("lambda", iid)
    assert agent_calls(sim, "lambda", iid) == []


@needs_machines
async def test_user_data_cloud_init_ignores_never_runs(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    iid = await launch_lambda(sim, session, "kubeadm join 10.0.0.1:6443\n")
    machine = await sim.wait_join("lambda", iid, 10)
    assert machine.join_status is JoinStatus.NOT_RUN
    assert "text/x-not-multipart" in machine.join_detail
    assert sim.machines._machines[("lambda", iid)].process is None  # nothing was started
    assert "nothing runs" in sim.console("lambda", iid)


@needs_machines
async def test_systemctl_starts_the_kubelet_with_kubeadms_drop_in(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    script = """#!/bin/bash
set -eu
mkdir -p /var/lib/kubelet
echo 'KUBELET_KUBEADM_ARGS="--hostname-override=n1 --v=2"' > /var/lib/kubelet/kubeadm-flags.env
echo 'KUBELET_EXTRA_ARGS=--node-labels=a=b --register-with-taints=x=y:NoSchedule' \
  > /etc/default/kubelet
systemctl daemon-reload
systemctl enable --now kubelet
for i in $(seq 50); do systemctl is-active kubelet && break; sleep 0.1; done
systemctl is-enabled kubelet.service
if systemctl start containerd; then exit 1; fi
"""
    iid = await launch_lambda(sim, session, script)
    machine = await sim.wait_join("lambda", iid, 30)
    assert machine.join_status is JoinStatus.NOT_JOINED, machine.join_detail
    assert agent_calls(sim, "lambda", iid) == [
        [
            "kubelet",
            "--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf",
            "--kubeconfig=/etc/kubernetes/kubelet.conf",
            "--config=/var/lib/kubelet/config.yaml",
            "--hostname-override=n1",
            "--v=2",
            "--node-labels=a=b",
            "--register-with-taints=x=y:NoSchedule",
        ]
    ]
    console = sim.console("lambda", iid)
    assert "active\nenabled\n" in console
    assert "Unit containerd.service not found." in console


@needs_machines
async def test_the_machine_never_writes_the_hosts_files(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    marker = f"gpuctl-sim-test-{os.getpid()}"
    paths = [f"/etc/{marker}", f"/var/{marker}", f"/run/{marker}", f"/{marker}", f"/tmp/{marker}"]
    script = "#!/bin/sh\nset -e\n" + "".join(f"echo x > {p}\n" for p in paths)
    script += f"echo x > relative-{marker}\nhostname\n"
    iid = await launch_lambda(sim, session, script)
    machine = await sim.wait_join("lambda", iid, 30)
    assert machine.join_status is JoinStatus.NOT_JOINED, machine.join_detail
    for path in paths:
        assert not Path(path).exists(), path
    upper = machine_dir(sim, "lambda", iid) / "upper"
    for path in paths:
        if not path.startswith("/run/"):  # /run is the machine's own tmpfs
            assert (upper / path.lstrip("/")).read_text() == "x\n"
    assert (upper / "root" / f"relative-{marker}").exists()  # the working directory is /root
    assert "203-0-113-1\n" in sim.console("lambda", iid)  # its own hostname


# -- Paperspace ------------------------------------------------------------------------


@needs_machines
async def test_paperspace_runs_the_startup_script_with_bash(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    mid = await launch_paperspace(sim, session, render(JoinMethod.STARTUP_SCRIPT))
    machine = await sim.wait_join("paperspace", mid, 30)
    assert machine.join_status is JoinStatus.JOINED, machine.join_detail
    assert agent_calls(sim, "paperspace", mid)[0][:2] == ["kubeadm", "join"]


@needs_machines
async def test_paperspace_never_joins_with_a_cloud_config(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    mid = await launch_paperspace(sim, session, render(JoinMethod.USER_DATA))
    machine = await sim.wait_join("paperspace", mid, 30)
    assert machine.join_status is JoinStatus.FAILED, machine.join_detail
    console = sim.console("paperspace", mid)
    assert "write_files:: command not found" in console
    assert "/etc/gpuctl/join.env: No such file or directory" in console
    # bash goes on: `content: | export GPUCTL_API_SERVER=...` ran in a pipeline's subshell,
    # so kubeadm gets an empty endpoint and refuses it
    (call,) = agent_calls(sim, "paperspace", mid)
    assert call[:3] == ["kubeadm", "join", ""]
    assert "apiServerEndpoint: Required value" in console


@needs_machines
async def test_a_missing_variable_fails_the_join(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    script = render(JoinMethod.STARTUP_SCRIPT).replace("$GPUCTL_NODE_NAME", "$GPUCTL_NODE")
    mid = await launch_paperspace(sim, session, script)
    machine = await sim.wait_join("paperspace", mid, 30)
    assert machine.join_status is JoinStatus.FAILED
    assert "GPUCTL_NODE: unbound variable" in machine.join_detail
    assert agent_calls(sim, "paperspace", mid) == []


@needs_machines
async def test_paperspace_never_runs_a_script_over_16_kb(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    script = render(JoinMethod.STARTUP_SCRIPT) + "#" * (16 * 1024)
    mid = await launch_paperspace(sim, session, script)
    machine = await sim.wait_join("paperspace", mid, 10)
    assert machine.join_status is JoinStatus.NOT_RUN
    assert "16 KB" in machine.join_detail
    assert "over Paperspace's documented 16 KB limit" in sim.console("paperspace", mid)


# -- RunPod ----------------------------------------------------------------------------


@needs_machines
async def test_runpod_container_stops_when_its_start_command_exits(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    """A start command that joins and exits: the container stops with its kubelet."""
    script = render(JoinMethod.CONTAINER_ENV).replace("exec sleep infinity", "true")
    pod = await launch_runpod(sim, session, dockerStartCmd=["bash", "-c", script])
    machine = await sim.wait_gone("runpod", pod, 30)
    assert machine.join_status is JoinStatus.CONTAINER_EXITED
    assert "the kubelet too (it had joined)" in machine.join_detail
    assert [c[:2] for c in agent_calls(sim, "runpod", pod)] == [
        ["kubeadm", "join"],
        ["kubelet", "--fake"],
    ]


@needs_machines
async def test_runpod_start_command_that_stays_up_keeps_the_node(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    script = render(JoinMethod.CONTAINER_ENV)  # gpuctl's own: it stays up after the join
    assert "exec sleep infinity" in script
    env = {"GPUCTL_NODE_NAME": "from-env"}
    pod = await launch_runpod(sim, session, dockerStartCmd=["bash", "-c", script], env=env)
    machine = await sim.wait_join("runpod", pod, 30)
    assert machine.join_status is JoinStatus.JOINED
    sid = sid_of(sim, "runpod", pod)
    api = CloudClient(sim, "runpod", session)
    await api.call("POST", f"/v1/pods/{pod}/stop")
    await sim.settle()
    assert session_pids(sid) == []
    await api.call("POST", f"/v1/pods/{pod}/start")
    await sim.settle()
    again = await sim.wait_join("runpod", pod, 30)
    assert again.join_status is JoinStatus.JOINED
    # a fresh container disk: only the second boot's calls are there
    assert [c[:2] for c in agent_calls(sim, "runpod", pod)] == [
        ["kubeadm", "join"],
        ["kubelet", "--fake"],
    ]


@needs_machines
async def test_runpod_without_a_start_command_never_joins(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    pod = await launch_runpod(sim, session, env={"GPUCTL_API_SERVER": "https://127.0.0.1:6443"})
    machine = await sim.wait_join("runpod", pod, 10)
    assert machine.join_status is JoinStatus.NO_JOIN_DATA
    assert "dockerStartCmd" in machine.join_detail


# -- lifecycle ---------------------------------------------------------------------------


@needs_machines
async def test_preemption_interrupts_a_running_boot_program(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    iid = await launch_lambda(sim, session, "#!/bin/sh\nsleep 600\n")
    sid = sid_of(sim, "lambda", iid)
    sim.state.interrupt("lambda", iid)
    await sim.settle()
    machine = sim.instance("lambda", iid)
    assert machine.join_status is JoinStatus.INTERRUPTED
    assert "preempted" in machine.join_detail
    assert session_pids(sid) == []


@needs_machines
async def test_stop_kills_machines_and_removes_their_files(tmp_path: Path) -> None:
    config = SimConfig(boot_seconds=0.0, execute_join_data=True, node_agent=FAKE_AGENT)
    sim = Simulator(config)
    await sim.start()
    try:
        async with aiohttp.ClientSession() as session:
            iid = await launch_lambda(sim, session, "#!/bin/sh\nsleep 600\n")
        workdir = sim.machines.workdir
        assert workdir is not None and workdir.is_dir()
        sid = sid_of(sim, "lambda", iid)
        sim.reset()
        await sim.settle()
        assert session_pids(sid) == []
        async with aiohttp.ClientSession() as session:
            iid = await launch_lambda(sim, session, "#!/bin/sh\nsleep 600\n")
        sid = sid_of(sim, "lambda", iid)
    finally:
        await sim.stop()
    assert session_pids(sid) == []
    assert not workdir.exists()


@needs_machines
async def test_thirty_machines_at_once(sim: Simulator, session: aiohttp.ClientSession) -> None:
    sim.state.set_capacity("lambda", "us-east-1", "gpu_1x_a10", 30)
    api = CloudClient(sim, "lambda", session)
    started = time.monotonic()
    ids = []
    for n in range(30):
        body = {
            "region_name": "us-east-1",
            "instance_type_name": "gpu_1x_a10",
            "ssh_key_names": ["gpuctl"],
            "user_data": render(JoinMethod.USER_DATA, node=f"gpu-{n}"),
        }
        answer = await api.call("POST", "/api/v1/instance-operations/launch", json_body=body)
        ids.append(answer.body["data"]["instance_ids"][0])
    await sim.settle()
    joined = await asyncio.gather(*(sim.wait_join("lambda", i, 60) for i in ids))
    assert {m.join_status for m in joined} == {JoinStatus.JOINED}
    assert sorted(m.node_name or "" for m in joined) == sorted(f"gpu-{n}" for n in range(30))
    assert time.monotonic() - started < 30


def test_machines_need_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("gpuctl.sim.machines.runner.os.geteuid", lambda: 1000)
    with pytest.raises(MachineError, match="running join data needs root"):
        probe(tmp_path)


async def test_simulator_says_so_at_start(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("gpuctl.sim.machines.runner.os.geteuid", lambda: 1000)
    config = SimConfig(execute_join_data=True, node_agent=FAKE_AGENT, workdir=tmp_path / "m")
    with pytest.raises(MachineError, match="needs root"):
        await Simulator(config).start()
    missing = SimConfig(execute_join_data=True, node_agent=tmp_path / "nope")
    with pytest.raises(MachineError, match="not an executable file"):
        await Simulator(missing).start()
