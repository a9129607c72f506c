"""Talking to the API server in bulk, and waiting for conditions.

- `bounded(items, action, limit)`: a pool of `limit` workers over one shared iterator,
  so at most `limit` calls are in flight and each item is handled exactly once.
- `retrying(call)`: transport errors, 429 and 5xx (an overloaded 2-core API server
  answers some) are retried with exponential backoff (0.2 s doubling, 5 attempts);
  anything else propagates at once. `create_quietly` treats AlreadyExists as success,
  which a create retried after a lost answer can meet.
- `wait_until(check, timeout, what)` polls `check` and raises TimeoutError naming `what`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from kubernetes_asyncio import client as k8s

from gpuctl.api.install import install_crds
from gpuctl.runtime.client import ApiError, Client, TransportError, is_already_exists
from gpuctl.runtime.resources import NAMESPACES

T = TypeVar("T")
OPERATOR_NAMESPACE = "gpuctl-system"


async def wait_until(
    check: Callable[[], Awaitable[bool]],
    timeout: float,  # noqa: ASYNC109
    what: str,
    interval: float = 0.5,
) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(interval)


async def bounded(items: Iterable[T], action: Callable[[T], Awaitable[None]], limit: int) -> None:
    """Run `action` on every item, at most `limit` at a time (a pool of `limit` workers)."""
    iterator = iter(items)

    async def worker() -> None:
        for item in iterator:  # one shared iterator: each item goes to exactly one worker
            await action(item)

    await asyncio.gather(*(worker() for _ in range(max(1, limit))))


async def retrying(call: Callable[[], Awaitable[T]], attempts: int = 5) -> T:
    """`call()`, retried with backoff on transport errors, 429 and 5xx (an overloaded
    2-core API server answers some); other errors propagate at once."""
    for attempt in range(attempts):
        try:
            return await call()
        except (TransportError, ApiError) as err:
            transient = isinstance(err, TransportError) or err.status == 429 or err.status >= 500
            if not transient or attempt == attempts - 1:
                raise
        await asyncio.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


async def create_quietly(api: Client, resource: Any, body: dict[str, Any]) -> None:
    """Create `body`; an object that already exists (a retried create) is fine."""
    try:
        await retrying(lambda: api.create(resource, body))
    except ApiError as err:
        if not is_already_exists(err):
            raise


async def prepare_cluster(api_client: k8s.ApiClient) -> None:
    """The CRDs and the operator's namespace."""
    await install_crds(api_client)
    await create_quietly(Client(api_client), NAMESPACES, {"metadata": {"name": OPERATOR_NAMESPACE}})
