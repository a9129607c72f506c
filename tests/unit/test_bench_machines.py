"""The lifecycle benchmark's view of the simulated machines (/proc) and of their Nodes.

No simulator runs here: stand-in processes whose working directory is a "machine"
directory are found the way the benchmark finds a machine's processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hack"))  # the benchmarks are tools under hack/, not in gpuctl

from bench import machines  # noqa: E402
from bench.joins import NodeTimes, NodeTracker, gpus, is_ready, join_latencies  # noqa: E402
from bench.machines import MachineMemory, MachineTimes, MachineWatch, Proc  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def test_stat_line_with_spaces_and_parens_in_the_name() -> None:
    # fields 3 to 22 of proc(5): state, ppid, ..., utime (14), stime (15), ..., starttime (22)
    rest = ["0"] * 20
    rest[0], rest[1] = "S", "41"
    rest[11], rest[12], rest[19] = str(3 * TICKS), str(TICKS), str(1234 * TICKS)
    line = f"42 (gpuctl (node) agent) {' '.join(rest)} 1000 200 rest"
    assert machines.parse_stat(line) == (41, 1234.0, 4.0)


def test_a_process_belongs_to_the_machine_holding_its_root_or_cwd() -> None:
    work = "/tmp/bench/machines"
    rootfs = f"{work}/lambda-abc/rootfs"
    assert machines.machine_of(rootfs, f"{rootfs}/root", work + "/") == "lambda-abc"
    assert machines.machine_of("/", f"{work}/paperspace-ps1", work) == "paperspace-ps1"  # unshare
    assert machines.machine_of("/", "/tmp/bench/machines-other/x", work) is None
    assert machines.machine_of("/", work, work) is None  # the simulator's workdir itself
    assert machines.machine_of("/", "/root", work) is None


def test_agent_processes_and_their_role() -> None:
    agent = "/work/main/bin/k8s/gpuctl-node-agent"
    assert machines.agent_role([agent, "kubeadm", "join", "127.0.0.1:6443"]) == "kubeadm"
    assert machines.agent_role([agent, "kubelet", "--config=/x"]) == "kubelet"
    assert machines.agent_role(["/bin/bash", "/var/lib/gpuctl-sim/init.sh"]) is None
    assert machines.agent_role([agent]) is None


def test_smaps_rollup_pss_and_rss() -> None:
    text = (
        "55d0a0000000-7ffd00000000 ---p 00000000 00:00 0  [rollup]\n"
        "Rss:               78000 kB\nPss:               20480 kB\nPss_Anon:  100 kB\n"
    )
    assert machines.parse_smaps_rollup(text) == (20480 * 1024, 78000 * 1024)
    pss, rss = machines.pss_rss_of(os.getpid())
    assert 0 < pss <= rss
    assert machines.pss_rss_of(2**22 + 1) == (0, 0)


def test_machine_times_keep_the_earliest_start_per_role() -> None:
    times = MachineTimes()
    for start, argv in [
        (12.0, ("/bin/gpuctl-node-agent", "kubelet")),
        (10.0, ("/usr/bin/unshare", "--mount")),
        (11.0, ("/bin/gpuctl-node-agent", "kubeadm", "join")),
        (13.0, ("/bin/gpuctl-node-agent", "kubelet")),
    ]:
        times.see(Proc(1, 0, start, 0.0, argv, "lambda-a"))
    assert (times.boot, times.agent, times.kubelet) == (10.0, 11.0, 12.0)


@pytest.fixture
def machine_process(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    """A stand-in machine process: `sleep` working in <workdir>/lambda-i1."""
    workdir = tmp_path / "machines"
    (workdir / "lambda-i1").mkdir(parents=True)
    process = subprocess.Popen(["sleep", "30"], cwd=workdir / "lambda-i1")
    try:
        yield workdir, process
    finally:
        process.kill()
        process.wait()


def test_scan_finds_the_machines_processes_and_their_start(
    machine_process: tuple[Path, subprocess.Popen[bytes]],
) -> None:
    workdir, process = machine_process
    found = machines.scan(workdir)
    assert [(p.pid, p.machine, p.argv) for p in found] == [
        (process.pid, "lambda-i1", ("sleep", "30"))
    ]
    assert found[0].ppid == os.getpid()
    assert abs(machines.boot_to_wall(found[0].start) - time.time()) < 5  # just started
    assert process.pid in machines.descendants(os.getpid())
    assert machines.scan(workdir / "lambda-i1") == []  # not below a machine of its own


def test_watch_keeps_times_memory_cpu_and_host_peak(
    machine_process: tuple[Path, subprocess.Popen[bytes]],
) -> None:
    workdir, process = machine_process
    watch = MachineWatch(workdir)
    memory = watch.memory()
    assert (memory.machines, memory.processes, memory.agents) == (1, 1, 0)
    assert 0 < memory.pss <= memory.rss and memory.agent_pss == 0
    assert watch.peak == memory
    assert watch.snapshot()["lambda-i1"].boot is not None
    assert watch.snapshot()["lambda-i1"].agent is None
    assert watch.cpu_seconds() >= 0.0
    assert 0 < watch.host_peak_used <= machines.meminfo()["MemTotal"]
    process.kill()
    process.wait()
    assert watch.memory().processes == 0
    assert watch.peak == memory  # the peak stays
    assert "lambda-i1" in watch.times  # so do the start times


def test_memory_of_agent_processes_is_counted_apart() -> None:
    me = Proc(os.getpid(), 1, 0.0, 0.0, ("/x/gpuctl-node-agent", "kubelet"), "lambda-a")
    memory = MachineMemory.of([me])
    assert memory.agents == 1 and memory.agent_pss == memory.pss > 0


def _node(name: str, ready: bool, gpu: str | None = None) -> dict[str, object]:
    status: dict[str, object] = {
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]
    }
    if gpu is not None:
        status["allocatable"] = {"cpu": "4", "nvidia.com/gpu": gpu}
    labels = {"gpuctl.io/instance-name": f"inst-{name}", "gpuctl.io/request": f"req-{name}"}
    return {"metadata": {"name": name, "labels": labels}, "status": status}


def test_node_tracker_stamps_registered_ready_and_gpus() -> None:
    now = [100.0]
    tracker = NodeTracker(clock=lambda: now[0])
    tracker.on_add(_node("a", ready=False))
    now[0] = 101.0
    tracker.on_update(_node("a", False), _node("a", ready=True))
    tracker.on_add(_node("b", ready=True, gpu="1"))
    now[0] = 102.0
    tracker.on_update(_node("a", True), _node("a", ready=True, gpu="1"))
    a = tracker.nodes["a"]
    assert (a.registered, a.ready, a.usable) == (100.0, 101.0, 102.0)
    assert (a.instance_name, a.request) == ("inst-a", "req-a")
    assert tracker.registered == 2 and tracker.ever_ready == 2 and tracker.most_ready == 2
    tracker.on_update(_node("b", True), _node("b", ready=False))
    tracker.on_delete(_node("a", True))
    assert tracker.ready_now == set() and tracker.most_ready == 2
    assert tracker.ever_ready == 2  # once Ready counts


def test_node_readiness_and_gpus() -> None:
    assert is_ready(_node("a", True)) and not is_ready(_node("a", False))
    assert not is_ready({"metadata": {"name": "x"}})
    assert gpus(_node("a", True, "8")) == 8
    assert gpus(_node("a", True)) == 0 and gpus(_node("a", True, "lots")) == 0


def test_join_latencies_per_machine() -> None:
    instances = [
        {"cloud": "lambda", "id": "i1", "name": "n1", "running_at": 1000.0, "node_name": "node-1"},
        {"cloud": "paperspace", "id": "p1", "name": "inst-p", "running_at": 1001.0},  # by label
        {"cloud": "lambda", "id": "i3", "name": "n3", "running_at": 1002.0},  # never booted
    ]
    times = {
        "lambda-i1": MachineTimes(boot=1000.0, agent=1000.2, kubelet=1001.0),
        "paperspace-p1": MachineTimes(boot=1001.0, agent=1001.5, kubelet=1002.0),
    }
    nodes = {
        "node-1": NodeTimes("n1", "req-1", registered=1001.2, ready=1002.2, usable=1002.7),
        "p1": NodeTimes("inst-p", "req-2", registered=1002.5, ready=1003.5, usable=1003.5),
    }
    ready = {"req-1": 1003.0, "req-2": 1004.0}
    joins = join_latencies(instances, times, nodes, ready, to_wall=lambda boot: boot)
    assert joins.matched == 2
    assert joins.running_to_agent is not None and joins.running_to_ready is not None
    assert joins.running_to_agent.count == 2
    assert joins.running_to_agent.max == pytest.approx(0.5)
    assert joins.agent_to_registered is not None
    assert joins.agent_to_registered.p50 == pytest.approx(1.0)
    assert joins.agent_to_ready is not None and joins.agent_to_ready.max == pytest.approx(2.0)
    assert joins.running_to_ready.max == pytest.approx(2.5)
    assert joins.ready_to_usable is not None
    assert joins.ready_to_usable.max == pytest.approx(0.5)
    assert joins.usable_to_request_ready is not None
    assert joins.usable_to_request_ready.max == pytest.approx(0.5)
    empty = join_latencies([], {}, {})
    assert empty.matched == 0 and empty.agent_to_ready is None
