"""Error mapping tables of gpuctl.providers.errors, and that mappers never raise."""

from __future__ import annotations

import datetime
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpuctl.providers import errors
from gpuctl.providers.base import (
    AuthError,
    CapacityError,
    InvalidRequestError,
    NotFoundError,
    ProviderError,
    QuotaError,
    TransientError,
)


def failure(
    cloud: str,
    status: int,
    body: object = None,
    *,
    operation: str = "op",
    method: str = "GET",
    headers: dict[str, str] | None = None,
) -> errors.HttpFailure:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return errors.HttpFailure(
        cloud=cloud,
        provider="p",
        operation=operation,
        method=method,
        status=status,
        body=raw,
        headers=headers or {},
    )


def lam(code: str, status: int = 400, **kw: str) -> errors.HttpFailure:
    return failure("lambda", status, {"error": {"code": code, "message": "m"}}, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fail", "kind"),
    [
        (lam("instance-operations/launch/insufficient-capacity"), CapacityError),
        (lam("global/quota-exceeded"), QuotaError),
        (lam("global/invalid-parameters"), InvalidRequestError),
        (lam("global/invalid-api-key", 401), AuthError),
        (lam("global/account-inactive", 403), AuthError),
        (lam("global/invalid-address", 403), AuthError),
        (lam("provider/internal-unavailable", 400), TransientError),
        (lam("provider/quota", 503), TransientError),
        (lam("global/object-does-not-exist", 404), NotFoundError),
        (
            lam("global/object-does-not-exist", 404, operation="launchInstance", method="POST"),
            InvalidRequestError,
        ),
        (lam("global/not-found", 404), NotFoundError),
        (lam("something/new", 401), AuthError),
        (lam("something/new", 403), AuthError),
        (lam("something/new", 404), NotFoundError),
        (lam("something/new", 500), TransientError),
        (lam("something/new", 429), TransientError),
        (lam("something/new", 400), InvalidRequestError),
        (failure("lambda", 502, b"<html>bad gateway</html>"), TransientError),
        (failure("lambda", 401, b""), AuthError),
    ],
)
def test_lambda_table(fail: errors.HttpFailure, kind: type[ProviderError]) -> None:
    error = errors.lambda_error(fail)
    assert type(error) is kind
    assert error.provider == "p"


def test_lambda_error_carries_code_and_message() -> None:
    error = errors.lambda_error(lam("global/quota-exceeded"))
    assert error.code == "global/quota-exceeded"
    assert "global/quota-exceeded" in error.message and "HTTP 400" in error.message


def rp(status: int, detail: str = "x", *, create: bool = False) -> errors.HttpFailure:
    body = {"title": "T", "status": status, "detail": detail}
    if create:
        return failure("runpod", status, body, operation="CreatePod", method="POST")
    return failure("runpod", status, body)


NO_CAPACITY = "There are no longer any instances available with the requested specifications."


@pytest.mark.parametrize(
    ("fail", "kind"),
    [
        (rp(401), AuthError),
        (rp(403), AuthError),
        (rp(402, "insufficient balance", create=True), QuotaError),
        (rp(422, "capacity words do not matter", create=True), InvalidRequestError),
        (rp(400, NO_CAPACITY, create=True), CapacityError),
        (
            rp(400, "This machine does not have the resources to deploy your pod.", create=True),
            CapacityError,
        ),
        (rp(400, "no GPU available in EU-RO-1", create=True), CapacityError),
        (rp(400, "gpuCount must be at most 8", create=True), InvalidRequestError),
        (rp(400, NO_CAPACITY), InvalidRequestError),  # not a create: never capacity
        (rp(404), NotFoundError),
        (rp(429), TransientError),
        (rp(500), TransientError),
        (rp(503), TransientError),
        (
            failure("runpod", 400, {"error": NO_CAPACITY}, operation="CreatePod", method="POST"),
            CapacityError,
        ),
        (failure("runpod", 500, b"not json"), TransientError),
    ],
)
def test_runpod_table(fail: errors.HttpFailure, kind: type[ProviderError]) -> None:
    assert type(errors.runpod_error(fail)) is kind


def ps(status: int, message: str = "x") -> errors.HttpFailure:
    return failure("paperspace", status, {"message": message, "code": "C"})


@pytest.mark.parametrize(
    ("fail", "kind"),
    [
        (ps(401), AuthError),
        (ps(403), AuthError),
        (ps(404), NotFoundError),
        (ps(400, "Invalid machine type"), InvalidRequestError),
        (ps(422, "diskSize: expected number"), InvalidRequestError),
        (ps(400, "Out of capacity for machine type H100x8 in ny2"), CapacityError),
        (ps(400, "Machine type is currently unavailable in this region"), CapacityError),
        (ps(400, "Machine type H100x8 is not available in ny2. Try another region"), CapacityError),
        (ps(400, "Invalid machine type 'H100x9'"), InvalidRequestError),
        (ps(400, "Team quota exceeded"), QuotaError),
        (ps(402), QuotaError),
        (ps(429), TransientError),
        (ps(500), TransientError),
    ],
)
def test_paperspace_table(fail: errors.HttpFailure, kind: type[ProviderError]) -> None:
    assert type(errors.paperspace_error(fail)) is kind


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("3", 3.0), ("0.5", 0.5), ("-2", 0.0), ("soon", None), ("nan", None), ("inf", None)],
)
def test_retry_after_seconds(value: str, seconds: float | None) -> None:
    assert errors.retry_after({"retry-after": value}) == seconds


def test_retry_after_http_date() -> None:
    now = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)
    got = errors.retry_after({"Retry-After": "Thu, 01 Jan 2026 12:00:07 GMT"}, now)
    assert got == 7.0


def test_transient_carries_retry_after() -> None:
    error = errors.runpod_error(failure("runpod", 429, {}, headers={"Retry-After": "2"}))
    assert isinstance(error, TransientError) and error.retry_after == 2.0


def test_structure_guard_turns_model_errors_into_transient() -> None:
    with pytest.raises(TransientError, match="malformed"), errors.structure_guard("c", "op", "p"):
        raise KeyError("id")
    with pytest.raises(AuthError), errors.structure_guard("c", "op", "p"):
        raise AuthError("no")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
error_bodies = st.one_of(
    st.binary(max_size=64),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {"error": st.fixed_dictionaries({"code": json_values, "message": json_values})}
    ).map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"title": json_values, "detail": json_values, "errors": json_values}).map(
        lambda v: json.dumps(v).encode()
    ),
    st.fixed_dictionaries({"message": json_values, "code": json_values}).map(
        lambda v: json.dumps(v).encode()
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    cloud=st.sampled_from(sorted(errors.MAPPERS)),
    status=st.integers(100, 599).filter(lambda s: not 200 <= s < 300),
    body=error_bodies,
    method=st.sampled_from(["GET", "POST", "DELETE"]),
    retry_after=st.none() | st.text(max_size=30),
)
def test_mappers_always_return_a_provider_error(
    cloud: str, status: int, body: bytes, method: str, retry_after: str | None
) -> None:
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    fail = errors.HttpFailure(
        cloud=cloud,
        provider="p",
        operation="CreatePod",
        method=method,
        status=status,
        body=body,
        headers=headers,
    )
    error = errors.MAPPERS[cloud](fail)
    assert isinstance(error, ProviderError)
    assert error.message.startswith(f"{cloud} CreatePod: HTTP {status}")
    if status >= 500 and cloud != "lambda":  # Lambda's code outranks the status
        assert isinstance(error, TransientError)
