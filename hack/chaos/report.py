"""The chaos suite's report: one table of figures, then the details behind any failure."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from chaos import schedule
from chaos.measure import percentile

if TYPE_CHECKING:
    from chaos.run import Result


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def render(result: Result) -> str:
    f = result.figures
    options = result.schedule.options
    left = result.leftovers
    fired = Counter[str]()
    for row in result.fault_stats:
        fired[str(row["kind"])] += int(row["fired"])
    faults = sum(fired.values())

    def share(count: int) -> str:
        return f"{100 * count / result.calls:.1f} %" if result.calls else "-"

    five = sum(n for k, n in fired.items() if k[0] == "5" or k in ("reset", "drop"))
    timeouts = fired["timeout"] + fired["timeout-before"]
    lat = f.ready_latencies
    starts = sorted(result.operator_startups)
    load = " / ".join(" ".join(f"{v:.2f}" for v in each) for each in result.load)
    rows = [
        ("seed", str(options.seed)),
        ("command", command(options)),
        ("run time", _seconds(result.seconds)),
        *[("schedule", line) for line in schedule.describe(result.schedule)],
        ("load average before / after (1, 5, 15 min)", load),
        (
            "operator SIGKILLs done; its start -> /readyz p50 / max",
            f"{result.kills}; {_seconds(percentile(starts, 50))} / "
            f"{_seconds(percentile(starts, 100))}",
        ),
        (
            "cloud calls / faults",
            f"{result.calls} / {faults} (5xx and resets {share(five)}, 429 "
            f"{share(fired['429'])}, timeouts {share(timeouts)})",
        ),
        ("machines created", str(f.machines)),
        ("**duplicate machines**", f"{f.duplicates} {list(f.duplicate_names) or ''}".strip()),
        ("unowned machine-seconds (all)", f"{f.unowned_seconds:.1f} in {len(f.unowned)} machines"),
        (
            "**unowned machine-seconds beyond one collection period**",
            f"{f.unowned_beyond_seconds:.1f} (period {options.gc_interval + options.gc_grace:g} s)",
        ),
        ("clouds billed / gpuctl ledger", f"${f.cloud_usd:.4f} / ${f.ledger_usd:.4f}"),
        (
            "**ledger - cloud, per request: sum of |diff| / max**",
            f"${f.cost_abs_difference_usd:.4f} / ${f.cost_max_difference_usd:.4f}; "
            f"{len(f.requests_off_by_more_than_a_cent)} requests off by > 1 cent, "
            f"{len(f.unrecorded_requests)} billed but not in the ledger",
        ),
        (
            "time to see machines gone p50 / p90 / max; its cost",
            " / ".join(_seconds(percentile(f.seeing_gone_seconds, q)) for q in (50, 90, 100))
            + f"; ${f.seeing_gone_usd:.4f}",
        ),
        (
            "requests off by > 1 cent beyond that (billing rules' own error)",
            str(len(f.requests_off_beyond_seeing_gone)),
        ),
        (
            "leftovers: machines, Nodes, tokens, requests (finalizers)",
            f"{left.machines}, {left.nodes}, {left.tokens}, {left.requests}"
            + ("" if result.torn_down else " (teardown timed out)"),
        ),
        (
            "requests Ready before deletion / never Ready",
            f"{f.ready_before_delete} / {f.never_ready}",
        ),
        (
            "create -> Ready p50 / p90 / p99 / max",
            " / ".join(_seconds(percentile(lat, q)) for q in (50, 90, 99, 100)),
        ),
        ("spec violations seen by the simulator", str(result.violations)),
        ("verdict", "PASS" if result.ok else "FAIL"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    for unowned in f.unowned[:10]:
        m = unowned.machine
        lines.append(
            f"  unowned {m.cloud} {m.name} ({m.id}): {unowned.seconds:.1f} s, "
            f"{unowned.beyond:.1f} s beyond the period"
        )
    return "\n".join(lines)


def command(options: schedule.Options) -> str:
    defaults = schedule.Options()
    flags = [f"--seed {options.seed}"]
    for name in ("requests", "window", "kills", "apiserver_restarts", "etcd_restarts",
                 "interrupts", "outages", "timeout_seconds"):  # fmt: skip
        value = getattr(options, name)
        if value != getattr(defaults, name):
            flags.append(f"--{name.replace('_', '-')} {value:g}")
    return "PYTHONPATH=hack .venv/bin/python -m chaos.run " + " ".join(flags)
