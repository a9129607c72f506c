"""`gpuctl demo` as a user runs it: a subprocess whose output is read line by line.

The demo starts its own control plane, simulated clouds and operator (nothing of
the session's fixtures), applies manifests/samples and prints a line per change
when stdout is not a terminal. Boot is fast and there are no spot interruptions,
so each run takes seconds. After the run, no process of it may remain: every
one of them (the demo, etcd, kube-apiserver, the operator) names the work
directory on its command line, and the simulator lives inside the demo.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import processes_mentioning, wait_gone

ROOT = Path(__file__).resolve().parents[2]
READY = "all 3 requests Ready"
CLEAN = "all requests deleted; no simulated machine left running (3 launched in all)"
# After the pool act (a Deployment on the samples' GPUNodePool) more machines were launched.
CLEAN_AFTER_ACT = "all requests deleted; no simulated machine left running ("
# The cheapest fitting offers in the simulator's catalogue (docs/sim.md): RunPod
# spot H100 8 x 1.99 x 0.6, RTX 4090 2 x 0.34 x 0.6, Hyperstack's A100 80GB PCIe 1.35
# (under RunPod's secure 1.49).
EXPECTED = {
    "h100x8-spot": ("H100-80GB", "8", "spot", "Ready", "runpod", "9.552"),
    "rtx4090x2-spot": ("RTX-4090", "2", "spot", "Ready", "runpod", "0.408"),
    "a100x1-on-demand": ("A100-80GB", "1", "on-demand", "Ready", "hyperstack", "1.35"),
}


class Demo:
    """A `gpuctl demo` subprocess; a thread moves its output lines into a queue."""

    def __init__(self, workdir: Path, *extra: str) -> None:
        self.workdir = workdir
        argv = [
            sys.executable, "-m", "gpuctl.cli.main", "demo",
            "--dir", str(workdir), "--boot-seconds", "0.5", "--interrupt-rate", "0",
            "--timeout", "60", *extra,
        ]  # fmt: skip
        self.process = subprocess.Popen(
            argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def _next(self, deadline: float) -> Iterator[str]:
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                return
            if line is None:
                return
            self.lines.append(line)
            yield line

    def wait_for_line(self, text: str, timeout: float) -> str:
        for line in self._next(time.monotonic() + timeout):
            if text in line:
                return line
        pytest.fail(f"no line with {text!r} within {timeout}s; output:\n" + self.output)

    def finish(self, timeout: float) -> int:
        code = self.process.wait(timeout)
        for _ in self._next(time.monotonic() + 5):
            pass
        return code

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "demo"
    yield path
    for pid in processes_mentioning(str(path)):  # only if a test failed half-way
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def last_rows(output: str) -> dict[str, tuple[str, ...]]:
    """The last table row printed for each request (line mode: whitespace-separated)."""
    rows: dict[str, tuple[str, ...]] = {}
    for line in output.splitlines():
        cells = tuple(line.split())
        if len(cells) == 10 and cells[0] in EXPECTED:
            rows[cells[0]] = cells
    return rows


def test_demo_reaches_ready_then_sigint_tears_everything_down(workdir: Path) -> None:
    demo = Demo(workdir)
    try:
        demo.wait_for_line(READY, 60)
        rows = last_rows(demo.output)
        for name, (gpu, count, capacity, phase, provider, price) in EXPECTED.items():
            cells = rows[name]  # NAME GPU COUNT CAPACITY PHASE PROVIDER REGION $/H NODE AGE
            assert cells[1:6] + cells[7:8] == (gpu, count, capacity, phase, provider, price)
            assert cells[8].startswith("gpuctl-demo-"), cells  # the Node

        # The pool act: the pool buys a machine for 2 one-GPU pods, they run, scale to 0.
        running = demo.wait_for_line("pool act: 2 pods Running", 150)
        assert "machine(s) of pool gpu" in running, running
        kubeconfig = demo.wait_for_line("kubeconfig: ", 120).split(": ", 1)[1]
        url = demo.wait_for_line("dashboard: ", 5).split(": ", 1)[1].split()[0]
        with urllib.request.urlopen(url, timeout=10) as page:
            assert "default-src 'none'" in page.headers["Content-Security-Policy"]
        with urllib.request.urlopen(url + "api/snapshot", timeout=10) as answer:
            shown = {r["name"]: r["phase"] for r in json.load(answer)["fleet"]["requests"]}
        samples = {name: phase for name, phase in shown.items() if not name.startswith("gpu-")}
        assert samples == {name: "Ready" for name in EXPECTED}
        assert kubeconfig == str(workdir.resolve() / "controlplane" / "kubeconfig")
        listed = subprocess.run(
            [str(ROOT / "bin/k8s/kubectl"), "--kubeconfig", kubeconfig, "get", "gnr", "-o", "name",
             "-l", "!gpuctl.io/pool"],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        assert sorted(listed.stdout.split()) == sorted(
            f"gpunoderequest.gpuctl.io/{name}" for name in EXPECTED
        )

        demo.process.send_signal(signal.SIGINT)
        assert demo.finish(90) == 0, demo.output
    finally:
        demo.kill()
    assert CLEAN_AFTER_ACT in demo.output
    assert demo.output.splitlines()[-1] == "stopped (exit 0)"
    assert wait_gone(str(workdir)) == [], "processes of the demo outlived it"


def test_exit_when_ready_exits_zero_after_a_clean_teardown(workdir: Path) -> None:
    demo = Demo(workdir, "--exit-when-ready")
    try:
        code = demo.finish(90)
    finally:
        demo.kill()
    assert code == 0, demo.output
    assert READY in demo.output
    assert "kubeconfig: " not in demo.output  # nothing to try: it has already stopped
    assert CLEAN in demo.output
    assert wait_gone(str(workdir)) == [], "processes of the demo outlived it"
