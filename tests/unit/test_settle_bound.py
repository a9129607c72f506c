"""When a process that meets an uncertain attempt may create again (issue 12 item 4).

An attempt with a token and no recorded machine may have a create an earlier process
sent and was killed before recording. Its settle window (look-ups by name finding
nothing for `launch_settle`) starts where the API server's records say every create of
the attempt had ended (`settle.creates_quiet`: the bound + slack + the clock's grain +
the create budget), or at the process's first look, whichever is earlier. Both
directions: no create while one may still be unlisted; no needless wait when the last
create is long past. And a create's own lost answer counts from when it failed.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
from typing import Any

import pytest

from gpuctl.api import GPUProvider
from gpuctl.controllers.request import launch, settle, tokens
from gpuctl.providers.base import (
    Capabilities,
    Instance,
    InstanceState,
    JoinMethod,
    LaunchOutcomeUnknownError,
    LaunchRequest,
)
from gpuctl.runtime.client import ApiError
from tests.unit.test_billing_bounds import T0, annotated, make_ctx, request_obj, stamp
from tests.unit.test_concurrency import provider
from tests.unit.test_token_reuse import Secrets

SECOND = datetime.timedelta(seconds=1)
SETTLE = 15 * SECOND
# Token made at T0 + 10 s; the default request timeout is 30 s, two per create.
MADE = T0 + 10 * SECOND
QUIET = MADE + settle.BOUND_SLACK + settle.CLOCK_GRAIN + 60 * SECOND


def token(made: datetime.datetime = MADE, *, marked: bool = True) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "bootstrap-token-x", "creationTimestamp": stamp(made)}
    if marked:
        metadata["annotations"] = {tokens.BOUND_MARK: "1"}
    data = {"token-id": "YWJjZGVm", "token-secret": "MDEyMzQ1Njc4OWFiY2RlZg=="}
    return {"metadata": metadata, "data": data}


GPUS = GPUProvider.from_dict(provider("p", "lambda"))


def quiet(now: datetime.datetime, obj: dict[str, Any], secret: Any) -> Any:
    return settle.creates_quiet(make_ctx(None, now, obj), GPUS, secret)


def test_the_quiet_moment_is_the_bound_plus_slack_grain_and_create_budget() -> None:
    assert settle.create_budget(GPUS) == 60.0  # 2 x the default 30 s request timeout
    assert quiet(T0 + 300 * SECOND, request_obj(), token()) == QUIET
    # A create written on the request later (refused creates retried, a settle): from it.
    later = T0 + 200 * SECOND
    obj = annotated(request_obj(), f"1 {stamp(later)}")
    assert quiet(T0 + 300 * SECOND, obj, token()) == later + (QUIET - MADE)
    # Another attempt's annotation says nothing of this one: the token's.
    obj = annotated(request_obj(), f"2 {stamp(later)}")
    assert quiet(T0 + 300 * SECOND, obj, token()) == QUIET


def test_no_quiet_moment_where_the_records_cannot_say() -> None:
    now = T0 + 300 * SECOND
    assert quiet(now, request_obj(), None) is None  # no token
    # Made by a version that did not keep creates-from: it may have created much later.
    assert quiet(now, request_obj(), token(marked=False)) is None
    # This attempt's bound, unreadable: an older one would be unsafe.
    for value in ("1 yesterday", "1 2026-11-29T12:03:00"):
        assert quiet(now, annotated(request_obj(), value), token()) is None


def met(now: datetime.datetime, obj: dict[str, Any], secret: Any) -> float:
    """Seconds a process meeting the attempt now (its first look found nothing) waits."""
    ctx = make_ctx(None, now, obj)
    since = settle.uncertain_since(ctx, settle.creates_quiet(ctx, GPUS, secret))
    return settle.settle_wait(ctx, since)


def test_an_attempt_whose_last_create_is_long_past_is_settled_by_one_look() -> None:
    assert met(QUIET + SETTLE, request_obj(), token()) == 0.0
    assert met(T0 + 600 * SECOND, request_obj(), token()) == 0.0


def test_no_create_while_one_may_still_be_unlisted() -> None:
    # A create that may have gone out 10 s ago (written before it): the full window
    # from this first look, never less than before.
    sent = T0 + 100 * SECOND
    obj = annotated(request_obj(), f"1 {stamp(sent)}")
    assert met(sent + 10 * SECOND, obj, token()) == SETTLE.total_seconds()
    # 70 s ago: abandoned by 63 s after its bound at the latest, then 15 s of listing.
    assert met(sent + 70 * SECOND, obj, token()) == 8.0
    # Only the token, 40 s ago: its first create may still be within its budget.
    assert met(MADE + 40 * SECOND, request_obj(), token()) == SETTLE.total_seconds()
    assert met(QUIET + 5 * SECOND, request_obj(), token()) == 10.0
    # An older version's token, an old one: the full window from the first look.
    assert met(T0 + 600 * SECOND, request_obj(), token(marked=False)) == 15.0
    # A bound written in the future (a clock ahead): clamped to now, the full window.
    obj = annotated(request_obj(), f"1 {stamp(T0 + 900 * SECOND)}")
    assert met(T0 + 600 * SECOND, obj, token()) == 15.0


# -- the launch step, as a process that meets the attempt --------------------------------


class Api:
    """The request and its attempt's token Secret, as the API server holds them."""

    def __init__(self, obj: dict[str, Any], secret: dict[str, Any]) -> None:
        self.obj, self.secret = obj, secret
        self.patches: list[Any] = []

    async def get(self, resource: Any, name: str, *, namespace: str | None = None) -> Any:
        return copy.deepcopy(self.secret if namespace else self.obj)

    async def create(self, resource: Any, body: Any, *, namespace: str | None = None) -> Any:
        raise ApiError(409, "AlreadyExists", "exists", {})

    async def patch(self, resource: Any, name: str, body: Any) -> Any:
        self.patches.append(body["metadata"]["annotations"])
        self.obj["metadata"].setdefault("annotations", {}).update(body["metadata"]["annotations"])
        self.obj["metadata"]["resourceVersion"] = str(
            int(self.obj["metadata"]["resourceVersion"]) + 1
        )
        return copy.deepcopy(self.obj)


class Cloud:
    """A driver whose create takes `hang` seconds on the clock and then loses its answer
    (`lose`), or answers with the machine."""

    capabilities = Capabilities(False, JoinMethod.USER_DATA, 60, 16384)

    def __init__(self, clock: list[datetime.datetime], *, lose: bool = False) -> None:
        self.clock, self.lose = clock, lose
        self.started = clock[0]
        self.calls: list[str] = []

    async def find_all(self, name: str, since: Any = None) -> list[Instance]:
        self.calls.append("find_all")
        # A list sent no earlier than the reconcile began (the settle rule counts on it).
        assert since is not None and since >= self.started
        return []

    async def create(self, request: LaunchRequest) -> Instance:
        self.calls.append("create")
        self.clock[0] += 31 * SECOND
        if self.lose:
            raise LaunchOutcomeUnknownError("timed out after 30s", provider="p")
        return Instance("i-1", request.name, InstanceState.PENDING, "booting")


class Drivers:
    def __init__(self, driver: Cloud) -> None:
        self.driver = driver

    def provider(self, name: str) -> GPUProvider:
        return GPUS

    def get(self, name: str) -> Cloud:
        return self.driver


def process(now: datetime.datetime, api: Api, lose: bool = False) -> tuple[Any, Cloud]:
    """A process meeting the attempt at `now`, its clock advancing only by its calls."""
    clock = [now]
    cloud = Cloud(clock, lose=lose)
    ctx = make_ctx(api, now, copy.deepcopy(api.obj), Drivers(cloud))
    ctx.services.clock = lambda: clock[0]
    return ctx, cloud


async def test_a_restarted_process_creates_after_one_look_when_the_bound_is_old() -> None:
    api = Api(request_obj(), token())
    ctx, cloud = process(QUIET + SETTLE, api)
    await launch.reconcile(ctx)
    assert cloud.calls == ["find_all", "create"]
    assert ctx.status.instance is not None
    # The create went out long after the bound: written first, for the next process.
    assert api.patches == [{settle.CREATES_FROM: f"1 {stamp(QUIET + SETTLE)}"}]


async def test_a_restarted_process_waits_while_the_last_create_may_be_at_work() -> None:
    sent = T0 + 100 * SECOND
    api = Api(annotated(request_obj(), f"1 {stamp(sent)}"), token())
    ctx, cloud = process(sent + 20 * SECOND, api)
    result = await launch.reconcile(ctx)
    assert cloud.calls == ["find_all"] and ctx.status.instance is None
    assert result is not None and result.requeue_after == 5.0  # looks again meanwhile
    assert api.patches == []


async def test_a_lost_answer_is_settled_from_when_it_failed_not_from_the_reconcile() -> None:
    api = Api(request_obj(), token())
    now = QUIET + SETTLE
    ctx, cloud = process(now, api, lose=True)
    await launch.reconcile(ctx)
    assert cloud.calls == ["find_all", "create", "find_all"]
    # The create hung 31 s: the window runs from its failure (rounded up), so the
    # machine it may have made just before is given its full listing time.
    failed = now + 31 * SECOND + settle.CLOCK_GRAIN
    assert ctx.services.launches.uncertain[settle.attempt_key(ctx)] == failed


async def test_a_create_that_does_not_end_by_its_deadline_is_an_unknown_outcome() -> None:
    class Hung:
        async def create(self, request: LaunchRequest) -> Instance:
            await asyncio.sleep(3600)
            raise AssertionError("not abandoned")

    request = LaunchRequest(
        name="n", offer=launch.to_offer(make_ctx(None, T0, request_obj()).status.offer)
    )  # type: ignore[arg-type]
    deadline = asyncio.get_running_loop().time()  # already passed: abandoned at once
    with pytest.raises(LaunchOutcomeUnknownError, match="abandoned"):
        await launch.create_within(Hung(), request, deadline)  # type: ignore[arg-type]


async def test_a_token_made_again_for_an_attempt_older_than_a_token_lives_is_not_settled() -> None:
    # The attempt's first token expired and went (the operator down meanwhile): a
    # create may have gone out with it, so the new token does not say "nothing sent".
    young = make_ctx(Secrets(), T0 + 60 * SECOND, request_obj())
    await launch.ensure_token(young, GPUS)
    assert young.services.launches.nothing_there(settle.attempt_key(young))
    old = make_ctx(Secrets(), T0 + datetime.timedelta(hours=10), request_obj())
    await launch.ensure_token(old, GPUS)
    assert not old.services.launches.nothing_there(settle.attempt_key(old))
