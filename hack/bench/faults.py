"""The issue-12 fault mix on every call of every simulated cloud (`--faults`).

The rates are the chaos suite's (`chaos.run.fault_mix` at its defaults: 10 % 5xx, half of
them after the cloud acted; 5 % 429; 2 % timeouts, half after the cloud acted, hanging
31 s, past gpuctl's 30 s client timeout), seeded, set through the simulator's control API
(`POST /fault-rates`, docs/sim.md), so a benchmark run and a chaos run fail alike.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.processes import SimProcess

RETRY_AFTER = 2  # seconds, where the cloud documents a Retry-After on its 429s
SEED = 1


def fault_rates() -> tuple[dict[str, float], float]:
    """The chaos suite's mix (kind -> share of calls) and its timeout's hang, seconds."""
    # Imported here: the chaos suite imports bench.lifecycle, which imports this module.
    from chaos.run import fault_mix  # noqa: PLC0415
    from chaos.schedule import Options  # noqa: PLC0415

    defaults = Options()
    return fault_mix(defaults), defaults.timeout_seconds


async def set_faults(sim: SimProcess, clouds: Sequence[str]) -> None:
    rates, hang = fault_rates()
    for cloud in clouds:
        await sim.post(
            "/fault-rates",
            {"cloud": cloud, "rates": rates, "seconds": hang, "retry_after": RETRY_AFTER,
             "seed": SEED},
        )  # fmt: skip
