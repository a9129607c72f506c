"""SimState: capacity, lifecycle with delays, interruptions deterministic under a seed."""

from __future__ import annotations

import pytest

from gpuctl.sim import ManualClock, Phase, SimConfig, SimInstance
from gpuctl.sim.state import (
    InvalidTransitionError,
    NoCapacityError,
    SimState,
    UnknownObjectError,
)

A10 = ("lambda", "us-east-1", "gpu_1x_a10")
H100 = "NVIDIA H100 80GB HBM3"


def make(seed: int = 1, interrupt_rate: float = 0.0) -> tuple[SimState, ManualClock]:
    clock = ManualClock()
    config = SimConfig(
        seed=seed, boot_seconds=10, terminate_seconds=5, interrupt_rate=interrupt_rate
    )
    return SimState(config, clock), clock


def launch(state: SimState, n: int, *, spot: bool = False, cloud: str = "lambda") -> SimInstance:
    kind = A10[2] if cloud == "lambda" else H100
    region = A10[1] if cloud == "lambda" else "US-GA-1"
    return state.launch(
        cloud,
        instance_id=f"i{n}",
        name=f"node-{n}",
        instance_type=kind,
        region=region,
        gpu_count=1,
        vcpus=8,
        memory_gib=32,
        units=1,
        spot=spot,
        price_per_hour=1.0,
    )


def test_lifecycle_follows_delays_and_capacity() -> None:
    state, clock = make()
    seen: list[tuple[str, Phase, Phase]] = []
    state.subscribe(lambda i, old, new: seen.append((i.id, old, new)))
    state.set_capacity(*A10, 1)
    instance = launch(state, 1)
    assert state.cloud("lambda").free("us-east-1", "gpu_1x_a10") == 0
    with pytest.raises(NoCapacityError):
        launch(state, 2)
    clock.advance(9.9)
    state.advance()
    assert instance.phase is Phase.BOOTING
    clock.advance(0.1)
    state.advance()
    assert instance.phase is Phase.RUNNING
    assert instance.phase_since == pytest.approx(clock.now())
    state.terminate(instance)
    assert instance.phase is Phase.TERMINATING
    state.terminate(instance)  # idempotent
    clock.advance(5)
    state.advance()
    assert instance.phase is Phase.TERMINATED
    assert state.cloud("lambda").free("us-east-1", "gpu_1x_a10") == 1
    assert [(old, new) for _, old, new in seen] == [
        (Phase.BOOTING, Phase.RUNNING),
        (Phase.RUNNING, Phase.TERMINATING),
        (Phase.TERMINATING, Phase.TERMINATED),
    ]


def test_transitions_happen_at_their_due_time_even_when_observed_late() -> None:
    state, clock = make()
    instance = launch(state, 1)
    state.terminate(instance)
    clock.advance(3600)
    state.advance()
    assert instance.phase is Phase.TERMINATED
    assert instance.terminated_at == pytest.approx(clock.now() - 3600 + 5)


def test_preemption_returns_capacity_and_restart_takes_it_again() -> None:
    state, _ = make()
    state.set_capacity(*A10, 1)
    instance = launch(state, 1)
    state.interrupt("lambda", "i1")
    assert instance.phase is Phase.PREEMPTED
    assert state.cloud("lambda").free("us-east-1", "gpu_1x_a10") == 1
    with pytest.raises(InvalidTransitionError):
        state.interrupt("lambda", "i1")
    state.start(instance)
    assert instance.phase is Phase.BOOTING
    assert state.cloud("lambda").free("us-east-1", "gpu_1x_a10") == 0


def test_stop_keeps_capacity() -> None:
    state, _ = make()
    instance = launch(state, 1, cloud="runpod")
    before = state.cloud("runpod").free("US-GA-1", H100)
    state.stop(instance)
    assert instance.phase is Phase.STOPPED
    assert state.cloud("runpod").free("US-GA-1", H100) == before


def schedule(seed: int) -> list[float | None]:
    state, _ = make(seed, interrupt_rate=2.0)
    state.set_capacity("runpod", "US-GA-1", H100, 20)
    return [launch(state, n, spot=True, cloud="runpod").interrupt_at for n in range(20)]


def test_interruptions_are_deterministic_under_a_seed() -> None:
    assert schedule(3) == schedule(3)
    assert schedule(3) != schedule(4)
    assert all(t is not None for t in schedule(3))


def test_interruptions_happen_at_the_configured_rate() -> None:
    state, clock = make(5, interrupt_rate=1.0)  # one per instance-hour
    state.set_capacity("runpod", "US-GA-1", H100, 401)
    pods = [launch(state, n, spot=True, cloud="runpod") for n in range(400)]
    on_demand = launch(state, 999, cloud="runpod")
    clock.advance(10 + 3600)
    state.advance()
    preempted = sum(p.phase is Phase.PREEMPTED for p in pods)
    # P(interrupted within 1 h) = 1 - e^-1 = 0.632; 400 draws stay well inside 0.55..0.71.
    assert 220 < preempted < 285
    assert on_demand.phase is Phase.RUNNING


def test_next_due_and_reset() -> None:
    state, clock = make()
    assert state.next_due() is None
    launch(state, 1)
    assert state.next_due() == pytest.approx(clock.now() + 10)
    state.reset()
    assert state.next_due() is None
    assert not state.cloud("lambda").instances


def test_knobs_validate_names() -> None:
    state, _ = make()
    with pytest.raises(UnknownObjectError):
        state.set_capacity("lambda", "mars-1", "gpu_1x_a10", 1)
    with pytest.raises(UnknownObjectError):
        state.set_price("runpod", "nope", 1.0)
    with pytest.raises(ValueError, match="capacity_type"):
        state.set_price("runpod", H100, 1.0, "reserved")
    state.set_price("runpod", H100, 0.5, "spot")
    assert state.cloud("runpod").price(H100, "spot") == 0.5
    with pytest.raises(UnknownObjectError):
        state.cloud("aws")
