"""manifests/prometheus checked with Prometheus' own promtool (bin/promtool, `make promtool`):
`promtool check rules`, `promtool test rules` with a firing and a quiet case for every
alert, and the Grafana dashboard's queries against the metrics gpuctl exports. The
`promtool check metrics` run on a live scrape is in tests/browser/test_dashboard.py,
where an operator with traffic is running anyway."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest

import gpuctl.controllers.operator  # noqa: F401 - registers every gpuctl_* metric
from gpuctl.providers import metrics as provider_metrics
from gpuctl.runtime.metrics import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "manifests" / "prometheus"
PROMTOOL = ROOT / "bin" / "promtool"


def promtool() -> Path:
    if not os.access(PROMTOOL, os.X_OK):
        if os.environ.get("CI"):
            pytest.fail("bin/promtool is missing: make promtool")
        pytest.skip("bin/promtool is missing: make promtool")
    return PROMTOOL


def rules() -> dict[str, Any]:
    """The PrometheusRule's spec: a plain Prometheus rule file."""
    rule: dict[str, Any] = yaml.safe_load((PROMETHEUS / "prometheus_rule.yaml").read_text())
    spec: dict[str, Any] = rule["spec"]
    return spec


def alerts() -> set[str]:
    return {r["alert"] for g in rules()["groups"] for r in g["rules"] if "alert" in r}


def run(*args: str | Path, cwd: Path | None = None, stdin: bytes | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args], check=False, cwd=cwd, input=stdin, capture_output=True, timeout=120
    )
    output = (done.stdout + done.stderr).decode()
    assert done.returncode == 0, output
    return output


def test_promtool_checks_the_rules_and_runs_a_unit_test_for_every_alert(tmp_path: Path) -> None:
    tool = promtool()
    (tmp_path / "gpuctl-rules.yaml").write_text(yaml.safe_dump(rules()))
    shutil.copy(PROMETHEUS / "tests" / "rules_test.yaml", tmp_path / "rules_test.yaml")
    assert f"SUCCESS: {len(alerts())} rules found" in run(
        tool, "check", "rules", tmp_path / "gpuctl-rules.yaml"
    )
    assert "SUCCESS" in run(tool, "test", "rules", "rules_test.yaml", cwd=tmp_path)
    tests = yaml.safe_load((PROMETHEUS / "tests" / "rules_test.yaml").read_text())["tests"]
    firing = {
        check["alertname"]
        for test in tests
        for check in test["alert_rule_test"]
        if check["exp_alerts"]
    }
    quiet = {
        check["alertname"]
        for test in tests
        if test["name"].endswith("stays quiet")
        for check in test["alert_rule_test"]
    }
    assert firing == alerts() == quiet  # every alert fires once and stays quiet once


def exported() -> set[str]:
    """Every series name gpuctl exports (driver metrics made to exist by one call each)."""
    provider_metrics.api_call("p", "lambda", "op", "200", 0.1)
    provider_metrics.api_error("p", "lambda", "op", "AuthError")
    text = generate_latest(REGISTRY).decode()
    names = set(re.findall(r"^(gpuctl_[a-z_]+)", text, re.M))
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    for name, kind in re.findall(r"^# TYPE (gpuctl_[a-z_]+) (\w+)", text, re.M):
        names |= {name, *(name + suffix for suffix in suffixes.get(kind, ()))}
    return names


def test_grafana_dashboard_queries_metrics_gpuctl_exports() -> None:
    dashboard = json.loads((PROMETHEUS / "grafana_dashboard.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == [
        "Fleet",
        "Cost",
        "Launches",
        "Providers: errors and rate limiting",
        "Reconcile queue",
    ]
    names = exported()
    for panel in panels:
        for target in panel["targets"]:
            used = set(re.findall(r"\b(gpuctl_[a-z_]+)", target["expr"]))
            assert used and used <= names, (panel["title"], used - names)
            assert target["datasource"]["uid"] == "${datasource}"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for rule in (r for g in rules()["groups"] for r in g["rules"]):
        used = set(re.findall(r"\b(gpuctl_[a-z_]+)", rule["expr"]))
        assert used <= names, (rule["alert"], used - names)
