"""`gpuctl demo`'s parts without processes: samples pointed at the simulator, the views."""

from __future__ import annotations

import asyncio
import datetime
import io
from pathlib import Path
from typing import Any

import attrs
import pytest

from gpuctl.cli import demo, demo_samples, demo_view
from gpuctl.cli.demo_operator import OperatorArgs
from gpuctl.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "manifests" / "samples"
TARGET = demo_samples.SimTarget(
    endpoints={c: f"http://127.0.0.1:{8000 + i}" for i, c in enumerate(demo.CLOUDS)},
    api_keys={c: f"sim-{c}-4" for c in demo.CLOUDS},
    api_server="https://127.0.0.1:6443",
    paperspace_templates=("t0nspur5", "tkni3aa4"),
    requests_per_second=50.0,
)
T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def by_name(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in demo_samples.of_kind(objects, kind)}


# -- samples -----------------------------------------------------------------------------


def test_load_reads_the_kustomization_resources_in_order() -> None:
    objects = demo_samples.load(SAMPLES)
    kinds = [o["kind"] for o in objects]
    clouds = len(demo.CLOUDS)  # a Secret and a GPUProvider per cloud, then the requests
    assert kinds[: 2 * clouds] == ["Secret"] * clouds + ["GPUProvider"] * clouds
    assert kinds[2 * clouds : 2 * clouds + 3] == ["GPUNodeRequest"] * 3
    assert [o["metadata"]["name"] for o in objects[2 * clouds : 2 * clouds + 3]] == [
        "h100x8-spot",
        "a100x1-on-demand",
        "rtx4090x2-spot",
    ]


def test_point_at_sets_endpoints_keys_api_server_and_a_known_template() -> None:
    original = demo_samples.load(SAMPLES)
    pointed = demo_samples.point_at(original, TARGET)
    providers = by_name(pointed, "GPUProvider")
    secrets = by_name(pointed, "Secret")
    for cloud in demo.CLOUDS:
        spec = providers[cloud]["spec"]
        assert spec["endpoint"] == TARGET.endpoints[cloud]
        assert spec["bootstrap"]["apiServerEndpoint"] == "https://127.0.0.1:6443"
        assert spec["rateLimit"]["requestsPerSecond"] == 50.0
        ref = spec["credentialsSecretRef"]
        key = ref.get("key", "apiKey")  # the runpod sample leaves the default
        assert secrets[ref["name"]]["stringData"][key] == f"sim-{cloud}-4"
    assert providers["paperspace"]["spec"]["paperspace"]["templateId"] == "t0nspur5"
    assert providers["lambda"]["spec"]["lambda"] == {"sshKeyName": "gpuctl"}  # as written
    assert by_name(pointed, "GPUNodeRequest") == by_name(original, "GPUNodeRequest")
    assert "endpoint" not in by_name(original, "GPUProvider")["lambda"]["spec"]  # copies


def test_point_at_keeps_a_known_template_and_rate_limits_when_asked() -> None:
    provider = {
        "kind": "GPUProvider",
        "metadata": {"name": "p"},
        "spec": {
            "type": "paperspace",
            "paperspace": {"templateId": "tkni3aa4"},
            "rateLimit": {"requestsPerSecond": 2, "launchesPerMinute": 3},
        },
    }
    keep = attrs.evolve(TARGET, requests_per_second=None)
    (pointed,) = demo_samples.point_at([provider], keep)
    assert pointed["spec"]["paperspace"]["templateId"] == "tkni3aa4"
    assert pointed["spec"]["rateLimit"] == {"requestsPerSecond": 2, "launchesPerMinute": 3}


def test_ordered_puts_credentials_before_providers_before_requests() -> None:
    kinds = ["GPUNodeRequest", "GPUProvider", "Secret", "Namespace", "GPUProvider"]
    objects = [{"kind": k, "metadata": {"name": str(i)}} for i, k in enumerate(kinds)]
    names = "".join(o["metadata"]["name"] for o in demo_samples.ordered(objects))
    assert names == "32140"  # stable within a kind


def test_load_reports_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(demo_samples.SampleError, match=r"kustomization\.yaml"):
        demo_samples.load(tmp_path)


# -- the table ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-3, "0s"),
        (59, "59s"),
        (119, "119s"),
        (120, "2m"),
        (185, "3m5s"),
        (600, "10m"),
        (179 * 60, "179m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 60 * 7, "3h7m"),
        (30 * 3600, "30h"),
        (50 * 3600, "2d2h"),
        (9 * 86400, "9d"),
    ],
)
def test_human_age_rounds_like_kubectl(seconds: float, text: str) -> None:
    assert demo_view.human_age(seconds) == text


def request(phase: str | None = None, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "h100x8-spot", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"gpu": {"type": "H100-80GB", "count": 8}, "capacityType": "spot-or-on-demand"},
        "status": {"phase": phase, **status} if phase else {},
    }


READY = request(
    "Ready",
    offer={
        "provider": "runpod",
        "region": "us-central",
        "capacityType": "spot",
        "pricePerHour": "9.552",
    },
    nodeName="gpuctl-demo-abc-1",
)


def test_row_of_a_ready_request_shows_the_offer_and_node() -> None:
    row = demo_view.row_of(READY)
    assert row.cells(T0 + datetime.timedelta(seconds=75)) == (
        "h100x8-spot",
        "H100-80GB",
        "8",
        "spot",  # what was rented, once there is an offer
        "Ready",
        "runpod",
        "us-central",
        "9.552",
        "gpuctl-demo-abc-1",
        "75s",
    )


def test_row_of_a_new_request_shows_what_is_asked_and_dashes() -> None:
    row = demo_view.row_of(request())
    assert row.content == ("h100x8-spot", "H100-80GB", "8", "spot-or-on-demand") + ("-",) * 5


def test_table_aligns_columns_under_the_header() -> None:
    lines = demo_view.table([demo_view.row_of(READY)], T0)
    assert lines[0].split() == list(demo_view.COLUMNS)
    assert lines[0].index("PHASE") == lines[1].index("Ready")
    assert lines[0].index("NODE") == lines[1].index("gpuctl-demo-abc-1")


def test_phase_changes_name_creations_transitions_and_deletions() -> None:
    new, ready = demo_view.row_of(request()), demo_view.row_of(READY)
    assert demo_view.phase_changes([], [new]) == ["h100x8-spot: created"]
    assert demo_view.phase_changes([], [ready]) == ["h100x8-spot: created (Ready)"]
    assert demo_view.phase_changes([new], [ready]) == ["h100x8-spot: new -> Ready"]
    assert demo_view.phase_changes([ready], [ready]) == []
    assert demo_view.phase_changes([ready], []) == ["h100x8-spot: deleted"]


def test_line_view_prints_a_row_per_change_not_per_tick() -> None:
    out = io.StringIO()
    view = demo_view.LineView(out)
    view.update([demo_view.row_of(request())], T0)
    view.update([demo_view.row_of(request())], T0 + datetime.timedelta(seconds=5))  # age only
    view.notice("a notice")
    view.update([demo_view.row_of(READY)], T0 + datetime.timedelta(seconds=9))
    view.update([], T0 + datetime.timedelta(seconds=10))
    lines = out.getvalue().splitlines()
    assert lines[0].split() == list(demo_view.COLUMNS)
    assert lines[1].split()[4] == "-" and lines[1].split()[-1] == "0s"
    assert lines[2] == "a notice"
    assert lines[3].split()[4] == "Ready" and lines[3].split()[-1] == "9s"
    assert lines[4] == "h100x8-spot deleted"
    assert len(lines) == 5


def test_terminal_view_redraws_in_place_and_keeps_notices_above() -> None:
    out = io.StringIO()
    view = demo_view.TerminalView(out)
    view.update([demo_view.row_of(request())], T0)
    first = out.getvalue()
    assert "\x1b[" not in first  # nothing drawn before: nothing to erase
    height = first.count("\n")  # header, row, blank, "recent changes:", one change
    assert height == 5
    view.notice("hello")
    view.update([demo_view.row_of(READY)], T0)
    after = out.getvalue()[len(first) :]
    assert after.startswith(f"\x1b[{height}A\r\x1b[Jhello\n")
    assert "h100x8-spot: new -> Ready" in after
    view.close()
    view.notice("bye")
    view.update([], T0)  # closed: the last table stays as it is
    assert out.getvalue().endswith("\r\x1b[Kbye\n")


# -- command line and plumbing -----------------------------------------------------------


def test_operator_argv_is_a_valid_gpuctl_run_command_line() -> None:
    args = OperatorArgs(Path("/k/kubeconfig"), "https://127.0.0.1:6443", health_port=9999)
    argv = args.argv()
    assert argv[1:3] == ["-m", "gpuctl.cli.main"]
    parsed = build_parser().parse_args(argv[3:])
    assert parsed.command == "run"
    assert (parsed.kubeconfig, parsed.health_port, parsed.health_host) == (
        Path("/k/kubeconfig"),
        9999,
        "127.0.0.1",
    )
    assert parsed.join_endpoint == "https://127.0.0.1:6443"
    assert parsed.cluster_name == "demo" and parsed.namespace == "gpuctl-system"
    assert parsed.ui  # `make demo` prints the dashboard's URL


def test_demo_options_and_their_defaults() -> None:
    parsed = build_parser().parse_args(["demo", "--no-wait", "--seed", "9"])
    assert parsed.exit_when_ready and parsed.seed == 9
    assert parsed.boot_seconds == demo.DEFAULT_BOOT_SECONDS
    assert parsed.interrupt_rate == demo.DEFAULT_INTERRUPT_RATE
    assert parsed.timeout == demo.DEFAULT_TIMEOUT and parsed.dir is None


async def test_first_names_the_first_to_finish_and_cancels_the_rest() -> None:
    slow = asyncio.Event()
    assert await demo._first(5, never=slow.wait(), soon=asyncio.sleep(0.01)) == "soon"
    assert await demo._first(0.01, never=slow.wait()) is None
