"""The lifecycle benchmark's argument parsing, figures and report table (it is not run here)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hack"))  # the benchmarks are tools under hack/, not in gpuctl

from bench import lifecycle, lifecycle_steady  # noqa: E402
from bench.faults import fault_rates  # noqa: E402
from bench.figures import Summary, to_json  # noqa: E402
from bench.host import Machine, cpu_seconds_of, memory_of  # noqa: E402
from bench.joins import JoinLatencies  # noqa: E402
from bench.lifecycle_report import (  # noqa: E402
    BASE_BUDGET,
    DEFAULT_CLOUDS,
    MACHINE_BUDGET,
    Agents,
    Latencies,
    LifecycleReport,
    Options,
    Pacing,
    Work,
    pacing_floor,
    render,
)
from bench.machines import MachineMemory  # noqa: E402

from gpuctl.controllers import naming  # noqa: E402

MiB = 2**20


def test_defaults_are_the_documented_run() -> None:
    options = lifecycle.parse_args([])
    assert options == Options()
    # 100 real node agents fit the 2-core, 24 GiB machine; 1,000 do not (docs/benchmarks.md)
    assert options.requests == 100 and options.workers == 0  # 0: gpuctl run's sizing
    assert options.clouds == DEFAULT_CLOUDS == ("lambda", "paperspace")
    assert options.ready_poll is None  # gpuctl run's own defaults
    assert options.hold == 30.0 and not options.ignore_memory_check


def test_flags_override() -> None:
    options = lifecycle.parse_args(
        ["--requests", "12", "--clouds", "runpod,lambda", "--workers", "8", "--timeout", "60",
         "--joining-poll", "0.5", "--json", "/tmp/x.json", "--hold", "0",
         "--ignore-memory-check"]
    )  # fmt: skip
    assert options.requests == 12 and options.workers == 8 and options.timeout == 60
    assert options.clouds == ("runpod", "lambda")
    assert options.joining_poll == 0.5
    assert options.json_path == Path("/tmp/x.json")
    assert options.hold == 0 and options.ignore_memory_check


@pytest.mark.parametrize(
    "argv", [["--requests", "0"], ["--clouds", "aws"], ["--clouds", ","], ["--hold", "-1"]]
)
def test_bad_flags_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        lifecycle.parse_args(argv)


def test_preflight_wants_root_and_memory_for_every_agent() -> None:
    hundred, thousand = Options(requests=100), Options(requests=1000)
    assert lifecycle.memory_needed(100) == 100 * MACHINE_BUDGET + BASE_BUDGET
    plenty = 22 * 2**30  # what this 24 GiB machine has available when quiet
    lifecycle.preflight(hundred, euid=0, available=plenty)
    with pytest.raises(SystemExit, match="run it as root"):
        lifecycle.preflight(hundred, euid=1000, available=plenty)
    with pytest.raises(SystemExit, match="1000 requests run 1000 node agents"):
        lifecycle.preflight(thousand, euid=0, available=plenty)
    lifecycle.preflight(Options(requests=1000, ignore_memory_check=True), euid=0, available=0)
    lifecycle.preflight(Options(requests=1000, agents=False), euid=1000, available=0)


def test_requests_spread_round_robin_pinned_to_one_provider() -> None:
    assigned = list(lifecycle.assignments(5, ("lambda", "paperspace")))
    assert [cloud for _, cloud in assigned] == ["lambda", "paperspace"] * 2 + ["lambda"]
    body = lifecycle.request_body(3, "paperspace")
    assert body["metadata"]["name"] == "bench-00003"
    assert body["spec"] == {"gpu": {"type": "RTX-A4000", "count": 1},
                            "providers": ["bench-paperspace"]}  # fmt: skip


def test_tracker_stamps_first_launch_ready_and_delete() -> None:
    tracker = lifecycle.Tracker()
    pending = {"metadata": {"name": "a"}, "status": {"phase": "Pending"}}
    launched = {"metadata": {"name": "a"}, "status": {"phase": "Joining", "instance": {"id": "i"}}}
    ready = {"metadata": {"name": "a"}, "status": {"phase": "Ready", "instance": {"id": "i"}}}
    tracker.on_add(pending)
    assert tracker.count("launched") == 0
    tracker.on_update(pending, launched)
    first = tracker.timelines["a"].launched
    tracker.on_update(launched, ready)
    tracker.on_update(ready, ready)
    assert tracker.timelines["a"].launched == first  # the first sighting counts
    assert tracker.count("ready") == 1 and tracker.count("gone") == 0
    tracker.on_delete(ready)
    assert tracker.count("gone") == 1


def test_status_latencies_use_the_objects_timestamps() -> None:
    obj = {
        "metadata": {"creationTimestamp": "2026-06-01T00:00:00Z"},
        "status": {"instance": {"launchedAt": "2026-06-01T00:00:02Z"},
                   "readyAt": "2026-06-01T00:00:05Z"},
    }  # fmt: skip
    assert lifecycle.status_latencies([obj, {"metadata": {}}]) == ([2.0], [5.0])


def test_summary_is_nearest_rank() -> None:
    summary = Summary.of([4.0, 1.0, 3.0, 2.0])
    assert summary == Summary(count=4, p50=2.0, p90=4.0, p99=4.0, max=4.0)
    assert Summary.of([]) is None


def test_proc_figures_of_this_process() -> None:
    memory = memory_of(os.getpid())
    assert 0 < memory.rss <= memory.hwm
    assert cpu_seconds_of(os.getpid()) > 0
    assert cpu_seconds_of(2**22 + 1) == 0.0  # no such process
    assert Machine.current().cores >= 1


def _work() -> Work:
    return Work(
        seconds=10.0,
        status_writes=30.0,
        kube_calls=130.0,
        kube_calls_by={"create events": 60.0, "update gpunoderequests.gpuctl.io/status": 30.0},
        provider_calls=40.0,
        provider_seconds_by={"lambda launchInstance": 0.5},
        ledger_calls=40,
        ledger_by={"lambda launchInstance": 5, "lambda getInstance": 35},
        reconciles=50.0,
        reconcile_errors=0.0,
        reconcile_seconds=20.0,
        queue_wait_mean=0.25,
        cpu_seconds={"operator": 3.0, "kube-apiserver": 5.0},
    )


def _agents(**overrides: object) -> Agents:
    ready = MachineMemory(
        machines=10, processes=40, pss=200 * MiB, rss=800 * MiB, agents=10,
        agent_pss=190 * MiB, agent_rss=780 * MiB,
    )  # fmt: skip
    fields: dict[str, object] = dict(
        machines=10,
        nodes_registered=10,
        nodes_ever_ready=10,
        nodes_ready_at_all_ready=10,
        nodes_most_ready=10,
        joins=JoinLatencies(
            Summary.of([0.1]),
            Summary.of([0.5]),
            Summary.of([1.0]),
            Summary.of([1.2]),
            Summary.of([0.3]),
            Summary.of([0.05]),
            10,
        ),
        memory_ready=ready,
        memory_peak=ready,
        memory_idle=ready,
        hold_seconds=10.0,
        idle_cpu_seconds=0.5,
        host_used_before=2 * 2**30,
        host_used_ready=4 * 2**30,
        host_used_peak=6 * 2**30,
        left_after_teardown=40,
        gone_after=0.5,
        left_after_sim_stop=0,
    )
    fields.update(overrides)
    return Agents(**fields)  # type: ignore[arg-type]


def _report(**overrides: object) -> LifecycleReport:
    fields: dict[str, object] = dict(
        machine=Machine("Test CPU", 2, 24 * 2**30, "6.0", "3.11.7"),
        load_before=(0.5, 0.4, 0.3),
        load_after=(1.5, 1.0, 0.5),
        options=Options(requests=10),
        operator_startup=0.7,
        created_in=0.5,
        ready=10,
        ready_in=3.5,
        latencies=Latencies(Summary.of([1.0, 2.0]), Summary.of([3.0]), None, None, None),
        up=_work(),
        pacing=[Pacing("lambda", 5, 0.4, 10.0, 10.0, Summary.of([0.1] * 4))],
        gone=10,
        teardown_in=2.0,
        down=_work(),
        live_instances=0,
        nodes_left=0,
        tokens_left=0,
        violations=0,
        ledger_bytes=3500,
        operator_peak_rss=100 * 2**20,
        operator_rss_ready=90 * 2**20,
        operator_rss_end=95 * 2**20,
        workdir="/tmp/w",
        agents=_agents(),
        workers=4,
    )
    fields.update(overrides)
    return LifecycleReport(**fields)  # type: ignore[arg-type]


def test_report_table_and_json() -> None:
    report = _report()
    table = render(report)
    lines = table.splitlines()
    assert lines[:2] == ["| figure | value |", "| --- | --- |"]
    assert all(line.startswith("| ") and line.endswith(" |") for line in lines)
    assert "| time to all Ready | 3.5 s |" in lines
    assert "| status writes / request | 3.00 |" in lines
    assert "| Kubernetes API calls / request | 13.00 |" in lines
    assert "| reconcile workers (4) busy / mean queue wait | 50 % / 250 ms |" in lines
    assert "| instances not terminated at the clouds | 0 |" in lines
    assert "| peak RSS (VmHWM) | 100.0 MiB |" in lines
    assert any(line.startswith("| lambda | 5 launches in 0.4 s = 10.0/s (100 %") for line in lines)
    assert "| **machines: real node agents (kubeadm join, kubelet)** | |" in lines
    assert "| Nodes Ready: at all Ready / ever / most at once | 10 / 10 / 10 (of 10) |" in lines
    assert "| agent start -> Node Ready | 1.00 / 1.00 / 1.00 / 1.00 s (n=1) |" in lines
    assert "| machine processes at all Ready (node agents) | 40 (10) in 10 machines |" in lines
    assert ("| PSS / RSS of machine processes at all Ready | 200.0 MiB / 800.0 MiB "
            "(20.0 MiB / 80.0 MiB per machine) |") in lines  # fmt: skip
    assert ("| idle 10 s after all Ready: CPU of machine processes | "
            "5.0 % of a core (0.50 % per machine) |") in lines  # fmt: skip
    assert ("| host memory in use (MemTotal - MemAvailable): before / at all Ready / peak | "
            "2.0 GiB / 4.0 GiB / 6.0 GiB (25 % of 24.0 GiB) |") in lines  # fmt: skip
    assert ("| machine processes left after teardown | "
            "40 when the last request was gone; none left after 0.5 s |") in lines  # fmt: skip
    assert "| machine processes left after the simulator stopped | 0 |" in lines
    assert report.ok
    decoded = json.loads(json.dumps(to_json(report), default=str))
    assert decoded["up"]["status_writes"] == 30.0
    assert decoded["latencies"]["watch_create_to_launch"]["p50"] == 1.0
    assert decoded["agents"]["memory_ready"]["pss"] == 200 * MiB
    assert decoded["agents"]["joins"]["agent_to_ready"]["p50"] == 1.0


def test_without_agents_or_idle_hold_the_rows_are_left_out() -> None:
    assert "machines: real node agents" not in render(_report(agents=None))
    quiet = render(_report(agents=_agents(hold_seconds=0.0, memory_idle=None)))
    assert "idle" not in quiet and "| RUNNING -> Node Ready |" in quiet


def test_a_leak_or_a_timeout_fails_the_run() -> None:
    assert not _report(live_instances=1).ok
    assert not _report(ready=9).ok
    assert not _report(agents=_agents(gone_after=None)).ok  # a machine process stayed
    assert not _report(agents=_agents(left_after_sim_stop=2)).ok
    assert _report(agents=_agents(left_after_sim_stop=None)).ok  # not checked yet
    failed = _report(teardown_in=None, errors=["timed out after 60 s waiting for 10 gone"])
    assert not failed.ok
    assert "| teardown (first delete -> last gone) | did not finish |" in render(failed)


def test_without_agents_the_way_up_ends_at_launched() -> None:
    options = Options(requests=1000, agents=False)
    assert not lifecycle.parse_args(["--requests", "1000", "--no-agents"]).agents
    report = _report(
        options=options, agents=None, ready=0, ready_in=None, launched=1000, launched_in=55.0
    )
    lines = render(report).splitlines()
    assert "| time to all launched / pacing floor (goal <= 1.15) | 1.10 |" in lines
    assert "| create -> launched p50 / time to all launched (watch; goal <= 0.55) | 0.02 |" in lines
    assert report.ok and not _report(options=options, agents=None, launched=999).ok


def test_the_pacing_floor_and_the_ratio_to_it() -> None:
    # Lambda + Paperspace at 10 launches/s each: 1,000 requests take 49.9 s of launches.
    floor = pacing_floor(1000, ("lambda", "paperspace"))
    assert round(floor.up, 1) == 49.9 and floor.down == 0.0
    # RunPod's API takes 60 calls a minute: 100 requests x 3 calls - a burst of 60 = 240 s.
    mixed = pacing_floor(300, ("lambda", "runpod", "paperspace"))
    assert mixed.by_cloud["runpod"] == (100, 240.0, 140.0) and mixed.up == 240.0
    options = Options(requests=300, clouds=("lambda", "runpod", "paperspace"))
    report = _report(ready_in=480.0, options=options)
    lines = render(report).splitlines()
    assert "| time to all Ready / pacing floor | 2.00 |" in lines


def test_steady_rate_mode_options_and_pieces() -> None:
    options = lifecycle.parse_args(["--rate", "100", "--duration", "60", "--no-agents"])
    assert (options.rate, options.duration, options.agents) == (100.0, 60.0, False)
    assert lifecycle.parse_args([]).rate is None  # the burst run by default
    # 10 launches/s per provider: 100/s over two clouds needs 6 per cloud (120/s in all).
    assert lifecycle_steady.providers_needed(100, 2) == 6
    assert lifecycle_steady.providers_needed(5, 2) == 1
    uid = "0123456789ab-cdef-0000-0000-000000000000"
    name = naming.instance_name(lifecycle_steady.CLUSTER, uid, 1)
    ledger = [
        {"operation": "listInstances", "body": None, "time": 1.0},
        {"operation": "launchInstance", "body": {"name": name}, "time": 2.5},
        {"operation": "launchInstance", "body": {"name": name}, "time": 9.0},  # a retry
        {"operation": "CreatePod", "body": {"name": "someone-else"}, "time": 3.0},
    ]
    assert lifecycle_steady.launch_calls(ledger, {naming.uid_part(uid): "bench-00001"}) == {
        "bench-00001": 2.5
    }


def test_faults_flag_takes_the_chaos_suites_mix() -> None:
    assert lifecycle.parse_args(["--faults"]).faults and not lifecycle.parse_args([]).faults
    rates, hang = fault_rates()
    five = sum(v for k, v in rates.items() if k not in {"429", "timeout", "timeout-before"})
    assert round(five, 3) == 0.10  # 5xx, resets and drops: issue 12's "about 10 % 5xx"
    assert rates["429"] == 0.05 and rates["timeout"] + rates["timeout-before"] == 0.02
    assert hang > 30  # past gpuctl's client timeout
