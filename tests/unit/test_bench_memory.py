"""The memory benchmark's argument parsing, objects, metrics parsing and report table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hack"))  # the benchmarks are tools under hack/, not in gpuctl

from bench import memory  # noqa: E402
from bench.figures import to_json  # noqa: E402
from bench.host import Machine  # noqa: E402
from bench.promtext import Metrics, grown, grown_by  # noqa: E402

from gpuctl.api import GPUNodeRequest  # noqa: E402

SCRAPE = """\
# HELP gpuctl_reconcile_total Reconciles per controller and outcome.
# TYPE gpuctl_reconcile_total counter
gpuctl_reconcile_total{controller="gpunoderequest",result="success"} 7.0
gpuctl_reconcile_total{controller="gpunoderequest",result="requeue_after"} 3.0
gpuctl_reconcile_total{controller="gpuprovider",result="success"} 2.0
# HELP gpuctl_workqueue_depth Items waiting in the work queue.
# TYPE gpuctl_workqueue_depth gauge
gpuctl_workqueue_depth{name="gpunoderequest"} 4.0
"""


def test_defaults_are_the_documented_run() -> None:
    options = memory.parse_args([])
    assert (options.requests, options.nodes, options.concurrency) == (10_000, 10_000, 32)
    assert options.profile and options.node_monitor_grace == "1h"  # no kubelet heartbeats
    options = memory.parse_args(
        [
            "--requests",
            "5",
            "--nodes",
            "0",
            "--gpu-type",
            "NOPE-1",
            "--no-profile",
            "--node-monitor-grace",
            "20s",
        ]
    )
    assert (options.requests, options.nodes, options.gpu_type) == (5, 0, "NOPE-1")
    assert options.node_monitor_grace == "20s"
    assert not options.profile
    assert [(v.kind, v.name) for v in memory._variants()][:3] == [
        ("GPUNodeRequest", "as decoded"),
        ("GPUNodeRequest", "managedFields dropped"),
        ("GPUNodeRequest", "operator's transform"),
    ]
    with pytest.raises(SystemExit):
        memory.parse_args(["--nodes", "-1"])


def test_objects_are_valid_and_nodes_name_their_request() -> None:
    request = memory.request_body(7, "H100-80GB")
    GPUNodeRequest.from_dict({**request, "metadata": {"name": "mem-00007"}})
    node = memory.node_body(7)
    labels = node["metadata"]["labels"]
    assert labels["gpuctl.io/request"] == request["metadata"]["name"]
    assert labels["gpuctl.io/instance-name"] == node["metadata"]["name"]
    assert node["status"]["capacity"]["nvidia.com/gpu"] == "8"


def test_metrics_sum_by_label_and_growth() -> None:
    metrics = Metrics.parse(SCRAPE)
    assert metrics.total("gpuctl_reconcile_total", controller="gpunoderequest") == 10.0
    assert metrics.total("gpuctl_workqueue_depth", name="gpunoderequest") == 4.0
    assert metrics.by("gpuctl_reconcile_total", "controller") == {
        "gpunoderequest": 10.0,
        "gpuprovider": 2.0,
    }
    before = Metrics.parse(SCRAPE.replace(" 7.0", " 5.0"))
    assert grown(metrics, before, "gpuctl_reconcile_total") == 2.0
    assert grown_by(metrics, before, "gpuctl_reconcile_total", "result") == {"success": 2.0}


def _steady(rss: int, first_pass: float | None) -> memory.Steady:
    return memory.Steady(
        rss_synced=rss - 5 * 2**20,
        rss=rss,
        hwm=rss + 2**20,
        startup=1.5,
        first_pass=first_pass,
        reconciles_per_second=100.0,
        kube_calls_per_second=80.0,
        cpu_share=0.5,
        queue_depth=0.0,
    )


def test_report_table_and_json() -> None:
    report = memory.MemoryReport(
        machine=Machine("Test CPU", 2, 24 * 2**30, "6.0", "3.11.7"),
        load_before=(0.5, 0.4, 0.3),
        load_after=(1.5, 1.0, 0.5),
        options=memory.Options(requests=1000, nodes=1000),
        baseline=_steady(90 * 2**20, None),
        requests_created=memory.Creation(1000, 2.0),
        nodes_created=memory.Creation(1000, 4.0),
        sizes=memory.Sizes(1000.0, 500.0, 3000.0, 2500.0),
        loaded=_steady(110 * 2**20, 12.0),
        workdir="/tmp/w",
        profile=[memory.CacheProfile("Node", "operator's transform", 1000, 3 * 2**20, 9 * 2**20)],
    )
    assert report.bytes_per_object == 10 * 1024 * 1024 / 1000
    lines = memory.render(report).splitlines()
    assert lines[:2] == ["| figure | value |", "| --- | --- |"]
    assert "| GPUNodeRequests created | 1,000 in 2.0 s (500/s) |" in lines
    assert "| RSS growth after the first pass, per cached object | 20.0 MiB, 10.2 KiB |" in lines
    assert "| RSS growth at /readyz, per cached object | 15.0 MiB, 7.7 KiB |" in lines
    assert "| start -> every request's first status write | 12.0 s |" in lines
    assert (
        "| Node, operator's transform | 3.1 KiB per object, 3.0 MiB for 1,000; "
        "peak while listing 9.0 MiB |" in lines
    )
    assert json.loads(json.dumps(to_json(report), default=str))["loaded"]["rss"] == 110 * 2**20


async def test_untaint_nodes_takes_the_not_ready_taint_off_until_none_has_it() -> None:
    """As the node-lifecycle controller does for a Ready Node (the admission put it on)."""
    node = memory.node_body(0)
    node["metadata"]["resourceVersion"] = "5"
    node["spec"]["taints"].append({"key": memory.NOT_READY_TAINT, "effect": "NoSchedule"})

    class Api:
        patches: list[dict[str, object]] = []

        async def list(self, resource: object) -> dict[str, object]:
            return {"items": [node] if not self.patches else []}

        async def patch(self, resource: object, name: str, body: dict[str, object]) -> None:
            self.patches.append(body)

    api = Api()
    done = await memory.untaint_nodes(api, 4, 60.0)  # type: ignore[arg-type]
    assert done.count == 1 and api.patches == [
        {
            "metadata": {"resourceVersion": "5"},
            "spec": {"taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]},
        }
    ]
