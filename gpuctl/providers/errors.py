"""Each cloud's error answers, mapped to the typed errors of `gpuctl.providers.base`.

A mapper takes one non-2xx `HttpFailure` and returns (never raises) the `ProviderError`
that tells the caller what to do. The tables, first match wins:

Lambda  `{"error": {"code", "message", "suggestion"?}}` (branch on `code`, as Lambda asks)
  instance-operations/launch/insufficient-capacity     CapacityError
  global/quota-exceeded                                QuotaError
  global/invalid-parameters                            InvalidRequestError
  global/invalid-api-key, global/account-inactive,
  global/forbidden, global/invalid-address             AuthError
  provider/*  (upstream outages)                       TransientError
  global/object-does-not-exist, global/not-found       NotFoundError (InvalidRequestError
                                                       on launch: a missing SSH key/image)
  then by status: 401/403 Auth, 404 NotFound, 408/409/425/429/5xx Transient,
  other 4xx InvalidRequest

RunPod  problem+json `{title, status, detail, errors[]}` (REST v1 may send `{"error": ...}`)
  401/403 AuthError, 402 QuotaError (insufficient balance), 422 InvalidRequestError,
  404 NotFoundError, 408/409/425/429/5xx TransientError,
  400 on a create operation: CapacityError when the text matches `CAPACITY_TEXT`, else
  InvalidRequestError. RunPod documents that "no capacity" has no machine-readable code
  and shares 400 with rule violations, so the text is the only signal; a rule violation
  misread as capacity costs one failed-over offer, while the reverse would stop the
  request, so the pattern errs towards capacity.
  other 4xx InvalidRequestError

Paperspace  `{message, code, details?}`
  401/403 AuthError, 402 QuotaError, 404 NotFoundError, 408/409/425/429/5xx Transient,
  400/422: CapacityError when the message matches `CAPACITY_TEXT`, QuotaError when it
  matches `QUOTA_TEXT`, else InvalidRequestError; other 4xx InvalidRequestError

Crusoe  `{code, message, error_id?, reason?}` (go-swagger's badReqError, authError, ...)
  401 AuthError; 400/403/422 QuotaError when the message matches `QUOTA_TEXT`; 403
  AuthError (permissions); 400/422 CapacityError when the message (or code) matches
  `CAPACITY_TEXT`, else InvalidRequestError; 404 NotFoundError; 408/409/425/429/5xx
  Transient. A create's operation that FAILED carries `{code, message}` in its
  `result`: `crusoe_failed_operation` reads it the same way (capacity, quota, else
  invalid).

Hyperstack  `{status: false, message, error_reason?}` (ErrorResponseModel)
  401/403 AuthError, 402 QuotaError, 404 NotFoundError; 400/409 on a create:
  CapacityError when the text matches `CAPACITY_TEXT` or speaks of stock, QuotaError
  when it matches `QUOTA_TEXT`, else InvalidRequestError (a 409 there is a name or
  resource conflict, not a retry); other 400 InvalidRequest; 408/409/425/429/5xx
  Transient; a 429 without Retry-After waits the documented minute (all calls are
  blocked for the next minute once the limit is hit)

DigitalOcean  `{id, message, request_id?}` (`id` is a word: unauthorized, not_found,
  unprocessable_entity, too_many_requests, server_error, ...)
  401/403 AuthError, 404 NotFoundError; 422 (and 400): QuotaError when the message
  matches `QUOTA_TEXT` or says it would exceed the droplet limit, CapacityError when it
  matches `CAPACITY_TEXT`, else InvalidRequestError; 408/409/425/429/5xx Transient;
  a 429 waits until its `ratelimit-reset` (Unix time) when it has no Retry-After

Everywhere: a `Retry-After` header (seconds or HTTP date) becomes `retry_after` of a
TransientError; an unparseable body is read as an empty one (status decides).
"""

from __future__ import annotations

import contextlib
import datetime
import email.utils
import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import attrs
import cattrs

from gpuctl.providers.base import (
    AuthError,
    CapacityError,
    Instance,
    InvalidRequestError,
    LaunchOutcomeUnknownError,
    NotFoundError,
    ProviderError,
    QuotaError,
    TransientError,
)

T = TypeVar("T")

# Statuses that say "not now" rather than "never": timeout, conflict, too early, rate limit.
_TRANSIENT_4XX = frozenset({408, 409, 425, 429})
_MAX_TEXT = 300

CAPACITY_TEXT = re.compile(
    r"capacity|no longer any instances|no (?:\w+ )?instances? (?:are )?available"
    r"|not enough (?:free )?gpus|no gpus? available|resources to deploy|out of stock"
    r"|(?:not |un)available (?:in|at|right now)\b"
    r"|(?:machine|gpu|instance)s? (?:type )?(?:is |are )?(?:currently )?(?:not |un)available",
    re.IGNORECASE,
)
QUOTA_TEXT = re.compile(r"quota|limit (?:reached|exceeded)|insufficient (?:funds|balance)", re.I)

# What structuring a JSON answer into generated attrs models (or reading it) can raise.
# cattrs' validation errors are ExceptionGroups: catch them by their own base class.
STRUCTURE_ERRORS: tuple[type[BaseException], ...] = (
    cattrs.BaseValidationError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    ArithmeticError,
    RecursionError,
)


@attrs.frozen
class HttpFailure:
    """One non-2xx answer, as the transport received it."""

    cloud: str
    provider: str
    operation: str
    method: str
    status: int
    body: bytes = b""
    headers: Mapping[str, str] = attrs.field(factory=dict)

    def json(self) -> Any:
        """The decoded body, or None when it is not JSON."""
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return None

    @property
    def is_create(self) -> bool:
        return self.method == "POST" and "create" in self.operation.lower()


ErrorMapper = Callable[[HttpFailure], ProviderError]


def retry_after(headers: Mapping[str, str], now: datetime.datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date), None if absent/bad."""
    value = header(headers, "Retry-After")
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
        now = now or datetime.datetime.now(datetime.UTC)
        seconds = (when - now).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by case-insensitive name (aiohttp's mapping is; a plain dict is not)."""
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        for key, found in headers.items():
            if key.lower() == lowered:
                return found
    return value


def _text(value: object) -> str:
    """A short, printable rendering of a cloud's message."""
    if not isinstance(value, str):
        return ""
    return value.replace("\n", " ").strip()[:_MAX_TEXT]


def _by_status(failure: HttpFailure, message: str, code: str) -> ProviderError:
    """The status-only part of every table."""
    status, provider = failure.status, failure.provider
    if status in (401, 403):
        return AuthError(message, code=code, provider=provider)
    if status == 402:
        return QuotaError(message, code=code, provider=provider)
    if status == 404:
        return NotFoundError(message, code=code, provider=provider)
    if status in _TRANSIENT_4XX or status >= 500:
        return TransientError(
            message, code=code, provider=provider, retry_after=retry_after(failure.headers)
        )
    if 400 <= status < 500:
        return InvalidRequestError(message, code=code, provider=provider)
    # 1xx/3xx are not answers any of these APIs gives: treat as a broken intermediary.
    return TransientError(message, code=code, provider=provider)


def _message(failure: HttpFailure, text: str) -> str:
    head = f"{failure.cloud} {failure.operation}: HTTP {failure.status}"
    return f"{head}: {text}" if text else head


# -- Lambda ------------------------------------------------------------------------

_LAMBDA_CODES: dict[str, type[ProviderError]] = {
    "instance-operations/launch/insufficient-capacity": CapacityError,
    "global/quota-exceeded": QuotaError,
    "global/invalid-parameters": InvalidRequestError,
    "global/invalid-api-key": AuthError,
    "global/account-inactive": AuthError,
    "global/forbidden": AuthError,
    "global/invalid-address": AuthError,
    "global/object-does-not-exist": NotFoundError,
    "global/not-found": NotFoundError,
}


def lambda_error(failure: HttpFailure) -> ProviderError:
    body = failure.json()
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    code = error.get("code") if isinstance(error.get("code"), str) else ""
    text = _text(error.get("message"))
    message = _message(failure, f"{code}: {text}" if code else text)
    code = code or str(failure.status)
    kind = _LAMBDA_CODES.get(code)
    if kind is NotFoundError and failure.method == "POST" and "launch" in failure.operation.lower():
        # A launch names an SSH key, image or file system that does not exist: config.
        kind = InvalidRequestError
    if kind is not None:
        return kind(message, code=code, provider=failure.provider)
    if code.startswith("provider/"):
        return TransientError(
            message, code=code, provider=failure.provider, retry_after=retry_after(failure.headers)
        )
    return _by_status(failure, message, code)


# -- RunPod ------------------------------------------------------------------------


def runpod_error(failure: HttpFailure) -> ProviderError:
    body = failure.json()
    body = body if isinstance(body, dict) else {}
    parts = [_text(body.get(k)) for k in ("title", "detail", "error", "message")]
    errors = body.get("errors")
    if isinstance(errors, list):
        parts += [_text(e) for e in errors[:5]]
    text = "; ".join(p for p in parts if p)[:_MAX_TEXT]
    message, code = _message(failure, text), str(failure.status)
    if failure.status == 422:
        return InvalidRequestError(message, code=code, provider=failure.provider)
    if failure.status == 400 and failure.is_create and CAPACITY_TEXT.search(text):
        return CapacityError(message, code=code, provider=failure.provider)
    return _by_status(failure, message, code)


# -- Paperspace ----------------------------------------------------------------------


def paperspace_error(failure: HttpFailure) -> ProviderError:
    body = failure.json()
    body = body if isinstance(body, dict) else {}
    text = _text(body.get("message"))
    cloud_code = body.get("code") if isinstance(body.get("code"), str) else ""
    message = _message(failure, f"{cloud_code}: {text}" if cloud_code else text)
    code = cloud_code or str(failure.status)
    if failure.status in (400, 422):
        if CAPACITY_TEXT.search(text):
            return CapacityError(message, code=code, provider=failure.provider)
        if QUOTA_TEXT.search(text):
            return QuotaError(message, code=code, provider=failure.provider)
        return InvalidRequestError(message, code=code, provider=failure.provider)
    return _by_status(failure, message, code)


# -- Crusoe ---------------------------------------------------------------------------


def crusoe_error(failure: HttpFailure) -> ProviderError:
    body = failure.json()
    body = body if isinstance(body, dict) else {}
    text = _text(body.get("message"))
    cloud_code = body.get("code") if isinstance(body.get("code"), str) else ""
    message = _message(failure, f"{cloud_code}: {text}" if cloud_code else text)
    code = cloud_code or str(failure.status)
    if failure.status in (400, 403, 422) and QUOTA_TEXT.search(f"{cloud_code} {text}"):
        return QuotaError(message, code=code, provider=failure.provider)
    if failure.status in (400, 422):
        if CAPACITY_TEXT.search(f"{cloud_code} {text}".replace("_", " ")):
            return CapacityError(message, code=code, provider=failure.provider)
        return InvalidRequestError(message, code=code, provider=failure.provider)
    return _by_status(failure, message, code)


def crusoe_failed_operation(result: object, provider: str) -> ProviderError:
    """The typed error of a Crusoe operation that FAILED (`result`: `{code, message}`)."""
    result = result if isinstance(result, dict) else {}
    code = result.get("code") if isinstance(result.get("code"), str) else ""
    text = _text(result.get("message"))
    message = f"crusoe createInstance: operation failed: {code}: {text}".rstrip(": ")
    seen = f"{code} {text}".replace("_", " ")
    if CAPACITY_TEXT.search(seen):
        return CapacityError(message, code=code or "failed", provider=provider)
    if QUOTA_TEXT.search(seen):
        return QuotaError(message, code=code or "failed", provider=provider)
    return InvalidRequestError(message, code=code or "failed", provider=provider)


# -- Hyperstack ---------------------------------------------------------------------

_STOCK_TEXT = re.compile(r"\bstock\b|not enough (?:resources|gpus?)", re.IGNORECASE)


# Hyperstack: "If you exceed this limit, all API calls for the next minute will be
# blocked" (429, no Retry-After documented).
HYPERSTACK_BLOCK_SECONDS = 60.0


def hyperstack_error(
    failure: HttpFailure, block_seconds: float = HYPERSTACK_BLOCK_SECONDS
) -> ProviderError:
    body = failure.json()
    body = body if isinstance(body, dict) else {}
    text = "; ".join(t for t in (_text(body.get("message")), _text(body.get("error_reason"))) if t)
    message, code = _message(failure, text), str(failure.status)
    if failure.status in (400, 409) and failure.is_create:
        if CAPACITY_TEXT.search(text) or _STOCK_TEXT.search(text):
            return CapacityError(message, code=code, provider=failure.provider)
        if QUOTA_TEXT.search(text):
            return QuotaError(message, code=code, provider=failure.provider)
        return InvalidRequestError(message, code=code, provider=failure.provider)
    if failure.status == 429 and retry_after(failure.headers) is None:
        return TransientError(
            message, code=code, provider=failure.provider, retry_after=block_seconds
        )
    return _by_status(failure, message, code)


# -- DigitalOcean -------------------------------------------------------------------

_DROPLET_LIMIT = re.compile(r"exceed (?:your|the) (?:\w+ )?limit", re.IGNORECASE)


def digitalocean_error(failure: HttpFailure) -> ProviderError:
    body = failure.json()
    body = body if isinstance(body, dict) else {}
    cloud_code = body.get("id") if isinstance(body.get("id"), str) else ""
    text = _text(body.get("message"))
    message = _message(failure, f"{cloud_code}: {text}" if cloud_code else text)
    code = cloud_code or str(failure.status)
    if failure.status in (400, 422):
        if QUOTA_TEXT.search(text) or _DROPLET_LIMIT.search(text):
            return QuotaError(message, code=code, provider=failure.provider)
        if CAPACITY_TEXT.search(text):
            return CapacityError(message, code=code, provider=failure.provider)
        return InvalidRequestError(message, code=code, provider=failure.provider)
    if failure.status == 429 and retry_after(failure.headers) is None:
        # DigitalOcean answers a 429 with `ratelimit-reset`: when (Unix time) the oldest
        # request of the window expires and a new one is allowed.
        reset = header(failure.headers, "ratelimit-reset")
        wait = _seconds_until(reset)
        return TransientError(message, code=code, provider=failure.provider, retry_after=wait)
    return _by_status(failure, message, code)


def _seconds_until(epoch: str | None) -> float | None:
    try:
        when = float(epoch) if epoch is not None else math.nan
    except ValueError:
        return None
    return max(0.0, when - time.time()) if math.isfinite(when) else None


MAPPERS: dict[str, ErrorMapper] = {
    "lambda": lambda_error,
    "runpod": runpod_error,
    "paperspace": paperspace_error,
    "crusoe": crusoe_error,
    "hyperstack": hyperstack_error,
    "digitalocean": digitalocean_error,
}


def malformed(cloud: str, operation: str, provider: str) -> TransientError:
    return TransientError(
        f"{cloud} {operation}: malformed response", code="malformed", provider=provider
    )


@contextlib.contextmanager
def structure_guard(cloud: str, operation: str, provider: str) -> Iterator[None]:
    """Turn any failure to read an answer into generated models into TransientError.

    A cloud that answers 200 with a shape its spec does not allow is having a bad day;
    the caller retries later rather than crashing on it.
    """
    try:
        yield
    except ProviderError:
        raise
    except STRUCTURE_ERRORS as exc:
        raise malformed(cloud, operation, provider) from exc


def preferred(instances: Iterable[Instance]) -> list[Instance]:
    """Instances of one name, the one to keep first: a serviceable one (booting, up or
    unknown) before a preempted, stopped, failed or terminating one, then the oldest
    (launch time, where the cloud reports one), then by id. Every other one is a twin."""
    far = datetime.datetime.max.replace(tzinfo=datetime.UTC)
    return sorted(
        instances,
        key=lambda i: (not i.state.serviceable, i.launched_at or far, i.id),
    )


async def launch_or_recover(
    name: str,
    find_all: Callable[[str], Awaitable[list[Instance]]],
    create: Callable[[], Awaitable[Instance]],
) -> Instance:
    """The launch protocol every driver follows; `name` is the idempotency key.

    1. Whatever exists under `name` (in any state but terminated: a preempted or stopped
       machine still bills and must be adopted, then terminated, never duplicated) is
       returned: the preferred one (`preferred`).
    2. Otherwise `create()` is called once. When its outcome is unknown
       (LaunchOutcomeUnknownError: timeout, dropped connection, 5xx, unreadable answer)
       the name is looked up once more: found, it is returned; not found, the error goes
       to the caller, who must give the cloud's listing time to catch up before a new
       create (the controller records the uncertain attempt and lists again for a
       bounded time). Other errors go straight up: the cloud created nothing.
    """
    existing = await find_all(name)
    if existing:
        return existing[0]
    try:
        return await create()
    except LaunchOutcomeUnknownError:
        found = await find_all(name)
        if found:
            return found[0]
        raise


async def create_once(create: Awaitable[T]) -> T:
    """Await one create; a TransientError that may hide a done create becomes
    LaunchOutcomeUnknownError (the drivers' `create` wrap their cloud call in this)."""
    try:
        return await create
    except LaunchOutcomeUnknownError:
        raise
    except TransientError as err:
        if not err.outcome_unknown:
            raise
        raise LaunchOutcomeUnknownError(
            f"{err.message} (the create may have happened)",
            code=err.code,
            provider=err.provider,
            retry_after=err.retry_after,
        ) from err


@contextlib.contextmanager
def create_guard(cloud: str, operation: str, provider: str) -> Iterator[None]:
    """`structure_guard` for reading a create's answer: an answer that cannot be read
    says the create went through without saying what it made, so the outcome is unknown."""
    try:
        yield
    except ProviderError:
        raise
    except STRUCTURE_ERRORS as exc:
        raise LaunchOutcomeUnknownError(
            f"{cloud} {operation}: malformed response (the create may have happened)",
            code="malformed",
            provider=provider,
        ) from exc


# Seconds during which a terminate the cloud accepted is not sent again for the same id.
TERMINATE_RESEND_SECONDS = 30.0


class TerminateLog:
    """What became of each terminate a driver sent: one terminate per instance per poll.

    Every caller (the termination step every few seconds, liveness, the leak collector)
    may ask to terminate the same machine; the cloud hears it once per
    `resend_after` seconds while it holds the machine, and never again once it said the
    machine is gone. Failures are not remembered: the next call tries again.
    """

    def __init__(
        self,
        resend_after: float = TERMINATE_RESEND_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.resend_after = resend_after
        self._clock = clock
        self._accepted: dict[str, float] = {}
        self._gone: dict[str, float] = {}

    def due(self, instance_id: str) -> bool:
        """Whether a terminate for `instance_id` should go to the cloud now."""
        now = self._clock()
        self._expire(now)
        if instance_id in self._gone:
            return False
        sent = self._accepted.get(instance_id)
        return sent is None or now - sent >= self.resend_after

    def accepted(self, instance_id: str) -> None:
        self._accepted[instance_id] = self._clock()

    def gone(self, instance_id: str) -> None:
        self._accepted.pop(instance_id, None)
        self._gone[instance_id] = self._clock()

    def _expire(self, now: float) -> None:
        # Gone ids are kept an hour (a late caller must not terminate again), accepted
        # ones until they are due again: the log stays small however long gpuctl runs.
        for key in [k for k, t in self._gone.items() if now - t > 3600]:
            del self._gone[key]
        for key in [k for k, t in self._accepted.items() if now - t >= self.resend_after]:
            del self._accepted[key]


def make_strict(converter: cattrs.Converter) -> None:
    """Make `converter` refuse JSON values of the wrong type for str/int/float/bool fields.

    cattrs structures a `str` field from 12345 by calling str(): an answer whose every
    leaf has the wrong type would pass as data. With these hooks a field gets exactly
    its JSON type (an integer for a float field is fine, a boolean for a number is not),
    so such an answer fails to structure and becomes TransientError("malformed response").
    Unknown keys are still ignored: a cloud may add fields, not change their types.

    Workaround: the generated converters (`_generated/models*.py`) are lenient; the
    drivers make them strict at import until the code generator emits these hooks.
    """
    converter.register_structure_hook(str, _exact(str))
    converter.register_structure_hook(bool, _exact(bool))
    converter.register_structure_hook(int, _integer)
    converter.register_structure_hook(float, _number)


def _exact(kind: type[Any]) -> Callable[[Any, Any], Any]:
    def structure(value: Any, _: Any) -> Any:
        if type(value) is not kind:
            raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
        return value

    return structure


def _integer(value: Any, _: Any) -> int:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if type(value) is not int:
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value


def _number(value: Any, _: Any) -> float:
    # Clouds do send numbers as strings (RunPod's own example has "costPerHr": "0.74"):
    # a numeric string is a number; any other string is a malformed answer.
    if type(value) is str:
        try:
            number = float(value)
        except ValueError:
            raise TypeError(f"expected a number, got the string {value[:20]!r}") from None
        if not math.isfinite(number):
            raise TypeError("expected a finite number")
        return number
    if type(value) not in (int, float):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    return float(value)
