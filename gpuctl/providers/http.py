"""`HttpTransport`: the `Transport` generated operations call, over aiohttp.

One transport per cloud API server of one driver; every transport of the process shares
ONE `aiohttp.ClientSession`, which the caller owns and closes. Per request:

1. take a token from the account's rate limiter (class `launch` for the driver's launch
   operations, `read` for GET, else `mutate`); inside `ratelimit.nonblocking()` a token
   that is not there soon is a RateLimitedError (nothing sent), and so is a 429 answer
   (its Retry-After, else 1 s): never retried here, the controller requeues;
2. send it with a bearer token (or the headers of the driver's `signer`: Crusoe signs
   each request) and a total timeout (`RetryPolicy.timeout`, 30 s; a GET or HEAD gives up
   after `read_timeout`, 10 s: it is retried here, and a hung look-up after a create
   with no answer would otherwise hold the launch as long as the create), never
   following redirects;
3. 2xx: return the decoded JSON (None for an empty body); a body that is not JSON is a
   TransientError("malformed response");
4. otherwise: the cloud's `ErrorMapper` turns the answer into a typed error; connection
   failures and timeouts are TransientError too. A TransientError says whether the
   request may have been acted on (`outcome_unknown`): not for a refused connection or
   a 408/425/429, yes for a timeout, a connection dropped after sending, a 5xx or an
   unreadable answer.

Retries: only TransientError, and only for idempotent operations (GET, HEAD, PUT, DELETE
and the operations a driver names, such as Lambda's terminate). Up to `attempts` tries,
with jittered exponential backoff ("equal jitter": half fixed, half random); a
`Retry-After` is honoured exactly (plus up to 10 % jitter) unless it is longer than
`max_retry_after`, in which case the error goes to the caller with its `retry_after`.
A non-idempotent request (a launch) is never retried here: the driver decides, by
looking the instance up by name first.

The API key is only ever put in the Authorization header: it is redacted from every
error message and never logged.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar
from urllib.parse import urlsplit

import aiohttp
import attrs

from gpuctl.providers import metrics
from gpuctl.providers.base import (
    DriverConfig,
    InvalidRequestError,
    ProviderError,
    RateLimitedError,
    TransientError,
)
from gpuctl.providers.errors import ErrorMapper, HttpFailure, malformed, structure_guard
from gpuctl.providers.ratelimit import AccountLimiter, OpClass, RateLimits, current_holder
from gpuctl.providers.transport import Params, Transport

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

# (METHOD, URL path, query pairs) -> the headers that authenticate that very request.
Signer = Callable[[str, str, Sequence[tuple[str, str]]], Mapping[str, str]]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_READS = frozenset({"GET", "HEAD"})
# Answers that say the server did not act on the request (timeout before processing,
# too early, rate limited): a create answered so created nothing.
_NOTHING_DONE = frozenset({408, 425, 429})
TOO_MANY_REQUESTS = 429
DEFAULT_RETRY_AFTER = 1.0  # a 429 without Retry-After, in non-blocking mode


@attrs.frozen
class RetryPolicy:
    attempts: int = 4  # tries in all, for idempotent operations
    base_delay: float = 0.5  # seconds, doubled per retry
    max_delay: float = 10.0
    max_retry_after: float = 60.0  # a longer Retry-After is left to the caller
    timeout: float = 30.0  # seconds per request, connect to last byte
    # A read (GET, HEAD) gives up sooner: it is retried here (idempotent), and a look-up
    # after a create with no answer is what a launch waits on. Never above `timeout`.
    read_timeout: float = 10.0

    def timeout_for(self, method: str) -> float:
        """Seconds the request may take in all, connect to last byte."""
        return min(self.read_timeout, self.timeout) if method in _READS else self.timeout

    def backoff(self, retry: int, retry_after: float | None) -> float | None:
        """Seconds to wait before retry number `retry` (0-based); None: do not retry here."""
        if retry_after is not None:
            if retry_after > self.max_retry_after:
                return None
            return retry_after * (1 + 0.1 * random.random())
        ceiling = min(self.max_delay, self.base_delay * 2.0**retry)
        return ceiling / 2 + random.uniform(0, ceiling / 2)


def retry_policy_for(config: DriverConfig) -> RetryPolicy:
    """Defaults, overridden by options requestTimeoutSeconds / readTimeoutSeconds /
    retryAttempts / retryBaseSeconds."""
    policy = RetryPolicy()
    options = config.options
    if "requestTimeoutSeconds" in options:
        policy = attrs.evolve(policy, timeout=_number(options, "requestTimeoutSeconds", 0.001))
    if "readTimeoutSeconds" in options:
        policy = attrs.evolve(policy, read_timeout=_number(options, "readTimeoutSeconds", 0.001))
    if "retryAttempts" in options:
        policy = attrs.evolve(policy, attempts=int(_number(options, "retryAttempts", 1)))
    if "retryBaseSeconds" in options:
        base = _number(options, "retryBaseSeconds", 0.0)
        policy = attrs.evolve(policy, base_delay=base, max_delay=max(base, policy.max_delay))
    return policy


def _number(options: Mapping[str, str], key: str, minimum: float) -> float:
    try:
        value = float(options[key])
    except ValueError:
        value = minimum - 1
    if not (math.isfinite(value) and value >= minimum):
        raise InvalidRequestError(f"option {key}: want a number >= {minimum}")
    return value


@attrs.define
class HttpTransport:
    """Implements `gpuctl.providers.transport.Transport` for one cloud API server."""

    session: aiohttp.ClientSession
    cloud: str
    provider: str  # the GPUProvider name, for errors and metrics
    base_url: str  # prepended to the operation's path, e.g. https://cloud.lambda.ai
    api_key: str = attrs.field(repr=False)
    error_mapper: ErrorMapper
    limiter: AccountLimiter = attrs.field(factory=lambda: AccountLimiter(RateLimits.unlimited()))
    retry: RetryPolicy = attrs.field(factory=RetryPolicy)
    idempotent_operations: Collection[str] = frozenset()  # POSTs that are safe to repeat
    launch_operations: Collection[str] = frozenset()  # rate-limited as `launch`
    signer: Signer | None = None  # None: `Authorization: Bearer <api_key>`

    async def call(
        self,
        function: Callable[Concatenate[Transport, P], Awaitable[R]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """`await function(self, *args, **kwargs)` for a generated operation `function`.

        An answer the operation cannot structure into its models becomes
        TransientError("malformed response") (`errors.structure_guard`).
        """
        with structure_guard(self.cloud, function.__name__, self.provider):
            return await function(self, *args, **kwargs)

    async def request(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        params: Params | None = None,
        json: Any = None,
    ) -> Any:
        method = method.upper()
        retry = 0
        while True:
            try:
                return await self._attempt(method, path, operation, params, json)
            except RateLimitedError as error:
                # Nothing was sent (or the server refused it): the caller requeues.
                error.provider = self.provider
                error.message = f"{self.cloud} {operation}: {error.message}"
                error.args = (error.message,)
                metrics.api_error(self.provider, self.cloud, operation, type(error).__name__)
                raise
            except ProviderError as error:
                self._redact(error)
                delay = self._retry_delay(method, operation, error, retry)
                if delay is None:
                    metrics.api_error(self.provider, self.cloud, operation, type(error).__name__)
                    raise
                log.debug(
                    "%s %s: %s, retry %d in %.2fs", self.cloud, operation, error, retry + 1, delay
                )
                retry += 1
                await asyncio.sleep(delay)

    def _retry_delay(
        self, method: str, operation: str, error: ProviderError, retry: int
    ) -> float | None:
        if not isinstance(error, TransientError) or retry + 1 >= self.retry.attempts:
            return None
        if method not in IDEMPOTENT_METHODS and operation not in self.idempotent_operations:
            return None
        return self.retry.backoff(retry, error.retry_after)

    def _op_class(self, method: str, operation: str) -> OpClass:
        if operation in self.launch_operations:
            return OpClass.LAUNCH
        return OpClass.READ if method in ("GET", "HEAD") else OpClass.MUTATE

    async def _attempt(
        self, method: str, path: str, operation: str, params: Params | None, body: Any
    ) -> Any:
        await self.limiter.acquire(self._op_class(method, operation))
        url = self.base_url.rstrip("/") + path
        query = _query(params)
        started = time.monotonic()
        code = "connection"
        timeout = self.retry.timeout_for(method)
        try:
            async with self.session.request(
                method,
                url,
                params=query,
                json=body,
                headers={**self._auth(method, url, query), "Accept": "application/json"},
                timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=False,
            ) as response:
                code = str(response.status)
                data = await response.read()
                status, headers = response.status, response.headers
        except TimeoutError as exc:
            code = "timeout"
            raise TransientError(
                f"{self.cloud} {operation}: timed out after {timeout:g}s",
                code=code,
                provider=self.provider,
            ) from exc
        except asyncio.CancelledError:
            code = "cancelled"
            raise
        except aiohttp.ClientConnectorError as exc:
            # Not even connected: the request never went out, so nothing happened.
            raise TransientError(
                f"{self.cloud} {operation}: connection failed ({type(exc).__name__})",
                code=code,
                provider=self.provider,
                outcome_unknown=False,
            ) from exc
        except aiohttp.ClientError as exc:
            raise TransientError(
                f"{self.cloud} {operation}: connection failed ({type(exc).__name__})",
                code=code,
                provider=self.provider,
            ) from exc
        finally:
            metrics.api_call(self.provider, self.cloud, operation, code, time.monotonic() - started)
        self.limiter.observe(headers)
        if not 200 <= status < 300:
            error = self.error_mapper(
                HttpFailure(
                    cloud=self.cloud,
                    provider=self.provider,
                    operation=operation,
                    method=method,
                    status=status,
                    body=data,
                    headers=headers,
                )
            )
            if isinstance(error, TransientError) and status in _NOTHING_DONE:
                error.outcome_unknown = False  # the server refused before acting
            if status == TOO_MANY_REQUESTS and current_holder() is not None:
                wait = getattr(error, "retry_after", None) or DEFAULT_RETRY_AFTER
                raise RateLimitedError(
                    f"HTTP 429, retry in {wait:.2f}s", retry_after=wait
                ) from error
            raise error
        if not data.strip():
            return None
        try:
            return jsonlib.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise malformed(self.cloud, operation, self.provider) from exc

    def _auth(
        self, method: str, url: str, query: list[tuple[str, str]] | None
    ) -> Mapping[str, str]:
        if self.signer is None:
            return {"Authorization": f"Bearer {self.api_key}"}
        # Signed after the rate limiter's wait, so the timestamp is the sending time.
        return self.signer(method, urlsplit(url).path, query or [])

    def _redact(self, error: ProviderError) -> None:
        if len(self.api_key) >= 4 and self.api_key in error.message:
            error.message = error.message.replace(self.api_key, "<redacted>")
            error.args = (error.message,)


def _query(params: Params | None) -> list[tuple[str, str]] | None:
    """Query pairs: booleans as true/false, sequences as repeated keys (OpenAPI explode)."""
    if not params:
        return None
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            pairs.append((key, "true" if value else "false"))
        elif isinstance(value, str | int | float):
            pairs.append((key, str(value)))
        elif isinstance(value, Sequence):
            pairs += [(key, str(item)) for item in value]
    return pairs
