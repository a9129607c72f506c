"""HttpTransport against a local scripted server: decoding, errors, retries, secrecy."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from gpuctl.providers import errors, metrics
from gpuctl.providers.base import (
    AuthError,
    DriverConfig,
    InvalidRequestError,
    ProviderError,
    RateLimitedError,
    TransientError,
)
from gpuctl.providers.http import HttpTransport, RetryPolicy, retry_policy_for
from gpuctl.providers.ratelimit import AccountLimiter, RateLimits, nonblocking
from tests.unit.test_providers_fakes import FakeCloud, Reply, running

KEY = "secret-key-0123456789"
FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05, timeout=2.0)


@pytest.fixture
async def cloud() -> AsyncIterator[FakeCloud]:
    async with running() as fake:
        yield fake


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def transport(
    session: aiohttp.ClientSession, cloud: FakeCloud, kind: str = "runpod", **kw: object
) -> HttpTransport:
    return HttpTransport(
        session=session,
        cloud=kind,
        provider="prov",
        base_url=cloud.url,
        api_key=KEY,
        error_mapper=errors.MAPPERS[kind],
        retry=kw.pop("retry", FAST),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


async def test_get_decodes_json_and_sends_auth(
    session: aiohttp.ClientSession, cloud: FakeCloud
) -> None:
    cloud.script = [Reply(200, {"ok": [1]})]
    got = await transport(session, cloud).request(
        "GET",
        "/v1/pods",
        operation="ListPods",
        params={"name": "a", "includeMachine": True, "gpuTypeId": ["x", "y"]},
    )
    assert got == {"ok": [1]}
    [seen] = cloud.seen
    assert seen.headers["Authorization"] == f"Bearer {KEY}"
    assert seen.query == [
        ("name", "a"),
        ("includeMachine", "true"),
        ("gpuTypeId", "x"),
        ("gpuTypeId", "y"),
    ]


async def test_empty_body_is_none_and_json_body_is_sent(
    session: aiohttp.ClientSession, cloud: FakeCloud
) -> None:
    cloud.script = [Reply(204)]
    got = await transport(session, cloud).request("POST", "/x", operation="Do", json={"a": 1})
    assert got is None
    assert cloud.seen[0].body == {"a": 1}


async def test_malformed_success_body_is_transient(
    session: aiohttp.ClientSession, cloud: FakeCloud
) -> None:
    cloud.script = [Reply(200, b"{not json")]
    with pytest.raises(TransientError, match="malformed"):
        await transport(session, cloud, retry=RetryPolicy(attempts=1)).request(
            "GET", "/x", operation="Get"
        )


async def test_5xx_is_retried_for_get_then_succeeds(
    session: aiohttp.ClientSession, cloud: FakeCloud
) -> None:
    cloud.script = [Reply(503, {"title": "down"}), Reply(500), Reply(200, {"v": 1})]
    assert await transport(session, cloud).request("GET", "/x", operation="Get") == {"v": 1}
    assert len(cloud.seen) == 3


async def test_retries_are_bounded(session: aiohttp.ClientSession, cloud: FakeCloud) -> None:
    cloud.handler = lambda seen: Reply(502)
    with pytest.raises(TransientError):
        await transport(session, cloud).request("DELETE", "/x", operation="Delete")
    assert len(cloud.seen) == FAST.attempts


async def test_post_is_never_retried(session: aiohttp.ClientSession, cloud: FakeCloud) -> None:
    cloud.handler = lambda seen: Reply(500)
    with pytest.raises(TransientError):
        await transport(session, cloud).request("POST", "/pods", operation="CreatePod", json={})
    assert len(cloud.seen) == 1


async def test_named_idempotent_post_is_retried(
    session: aiohttp.ClientSession, cloud: FakeCloud
) -> None:
    cloud.script = [Reply(500), Reply(200, {"data": {}})]
    t = transport(session, cloud, kind="lambda", idempotent_operations={"terminateInstance"})
    await t.request("POST", "/t", operation="terminateInstance", json={})
    assert len(cloud.seen) == 2


async def test_429_retry_after_is_honoured(
    session: aiohttp.ClientSession, cloud: FakeCloud
) -> None:
    cloud.script = [Reply(429, {"title": "slow down"}, {"Retry-After": "0.4"}), Reply(200, {})]
    await transport(session, cloud).request("GET", "/x", operation="Get")
    first, second = cloud.seen
    assert 0.4 <= second.at - first.at < 1.5


async def test_long_retry_after_goes_to_the_caller(
    session: aiohttp.ClientSession, cloud: FakeCloud
) -> None:
    cloud.script = [Reply(429, {}, {"Retry-After": "120"})]
    with pytest.raises(TransientError) as info:
        await transport(session, cloud).request("GET", "/x", operation="Get")
    assert info.value.retry_after == 120
    assert len(cloud.seen) == 1


async def test_timeout_is_transient(session: aiohttp.ClientSession, cloud: FakeCloud) -> None:
    cloud.handler = lambda seen: Reply(200, {}, delay=1.0)
    policy = RetryPolicy(attempts=1, timeout=0.2)
    with pytest.raises(TransientError, match="timed out") as info:
        await transport(session, cloud, retry=policy).request("GET", "/x", operation="Get")
    assert info.value.code == "timeout"


async def test_connection_refused_is_transient(session: aiohttp.ClientSession) -> None:
    async with running() as gone:
        url = gone.url
    t = HttpTransport(
        session=session,
        cloud="paperspace",
        provider="prov",
        base_url=url,
        api_key=KEY,
        error_mapper=errors.paperspace_error,
        retry=RetryPolicy(attempts=1),
    )
    with pytest.raises(TransientError, match="connection failed"):
        await t.request("GET", "/x", operation="Get")


async def test_auth_error_not_retried_and_key_redacted(
    session: aiohttp.ClientSession, cloud: FakeCloud
) -> None:
    cloud.handler = lambda seen: Reply(401, {"message": f"bad key {KEY}", "code": "AUTH"})
    t = transport(session, cloud, kind="paperspace")
    with pytest.raises(AuthError) as info:
        await t.request("GET", "/auth/session", operation="auth-session")
    assert KEY not in str(info.value) and KEY not in repr(info.value)
    assert KEY not in repr(t)
    assert len(cloud.seen) == 1


async def test_metrics_count_calls_and_errors(
    session: aiohttp.ClientSession, cloud: FakeCloud
) -> None:
    reg = metrics.registry()
    labels = {"provider": "prov", "cloud": "runpod", "operation": "MetricsOp"}
    cloud.script = [Reply(500), Reply(404, {"title": "nope"})]
    with pytest.raises(ProviderError):
        await transport(session, cloud).request("GET", "/x", operation="MetricsOp")
    assert reg.get_sample_value("gpuctl_provider_api_calls_total", {**labels, "code": "500"}) == 1
    assert reg.get_sample_value("gpuctl_provider_api_calls_total", {**labels, "code": "404"}) == 1
    assert (
        reg.get_sample_value(
            "gpuctl_provider_api_errors_total", {**labels, "error": "NotFoundError"}
        )
        == 1
    )


def test_retry_policy_options() -> None:
    cfg = DriverConfig(
        name="p",
        cloud="lambda",
        api_key="k",
        options={"requestTimeoutSeconds": "3", "retryAttempts": "2", "retryBaseSeconds": "0.01"},
    )
    policy = retry_policy_for(cfg)
    assert (policy.timeout, policy.attempts, policy.base_delay) == (3.0, 2, 0.01)
    with pytest.raises(InvalidRequestError):
        retry_policy_for(
            DriverConfig(name="p", cloud="x", api_key="k", options={"retryAttempts": "0"})
        )


def test_backoff_is_jittered_and_capped() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=4.0)
    for retry, ceiling in [(0, 1.0), (1, 2.0), (2, 4.0), (5, 4.0)]:
        delays = {policy.backoff(retry, None) for _ in range(20)}
        assert all(d is not None and ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1
    assert policy.backoff(0, 2.0) is not None and 2.0 <= policy.backoff(0, 2.0) <= 2.2  # type: ignore[operator]


async def test_inside_nonblocking_a_429_is_a_requeue_not_a_retry(
    session: aiohttp.ClientSession, cloud: FakeCloud
) -> None:
    cloud.script = [Reply(429, {"title": "slow down"}, {"Retry-After": "7"})]
    with nonblocking("gpunoderequest/r"), pytest.raises(RateLimitedError) as info:
        await transport(session, cloud).request("POST", "/pods", operation="CreatePod")
    assert info.value.delay == 7 and not info.value.outcome_unknown
    assert info.value.provider == "prov" and len(cloud.seen) == 1


async def test_inside_nonblocking_no_token_means_nothing_sent(
    session: aiohttp.ClientSession, cloud: FakeCloud
) -> None:
    limiter = AccountLimiter(RateLimits(overall_per_second=0.5))
    cloud.script = [Reply(200, {}), Reply(200, {})]
    sender = transport(session, cloud, limiter=limiter)
    with nonblocking("gpunoderequest/r"):
        await sender.request("GET", "/x", operation="Get")
        with pytest.raises(RateLimitedError) as info:
            await sender.request("GET", "/x", operation="Get")
    assert 1.5 < info.value.delay <= 2.0 and len(cloud.seen) == 1
