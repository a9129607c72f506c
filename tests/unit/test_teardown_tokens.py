"""A teardown deletes every attempt's bootstrap token but the current one when that
attempt was Ready: its token went in the reconcile that made it Ready. That must hold
on the teardown's last pass too, after the status write that cleared the machine gone
(the lifecycle benchmark counted one token DELETE answered 404 per teardown)."""

from __future__ import annotations

from gpuctl.controllers.request import termination
from tests.unit.test_billing_bounds import SECOND, T0, Client, make_ctx, request_obj, stamp


def ready_then_gone(*, failed_over_after_ready: bool = False) -> dict[str, object]:
    obj = request_obj(deleted=True)
    status = obj["status"]
    status["phase"] = "Terminating"
    status["readyAt"] = stamp(T0 + 30 * SECOND)  # kept; the machine is cleared
    if failed_over_after_ready:  # interrupted after Ready: attempt 2 began later
        status["attempt"] = 2
        status["failedOffers"] = [
            {
                "provider": "p",
                "instanceType": "gpu_1x_a10",
                "region": "us-west",
                "capacityType": "on-demand",
                "reason": "Interrupted",
                "at": stamp(T0 + 90 * SECOND),
            }
        ]
    return obj


def test_the_ready_attempt_is_known_after_its_machine_was_cleared() -> None:
    ctx = make_ctx(Client(None), T0 + 300 * SECOND, ready_then_gone())
    assert ctx.status.instance is None
    assert termination._current_attempt_was_ready(ctx)


def test_an_attempt_begun_after_the_last_ready_was_not_ready() -> None:
    obj = ready_then_gone(failed_over_after_ready=True)
    ctx = make_ctx(Client(None), T0 + 300 * SECOND, obj)
    assert not termination._current_attempt_was_ready(ctx)
