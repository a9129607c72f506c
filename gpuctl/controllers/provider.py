"""The GPUProvider controller: are the credentials good, and what does the catalog offer?

Per GPUProvider: build its driver (credentials from its Secret), validate the
credentials, refresh the offers (through the driver's price cache) and publish
`CredentialsValid`, `Ready`, `offerCount` and `lastPriceRefresh`. A bad credential,
a missing Secret or an outage shows as conditions, a Warning Event and
`gpuctl_provider_ready{provider}=0`; it never stops other providers or requests
(the offer step skips a provider that cannot answer). Runs again every
`refresh_interval`, and at once when the provider or its Secret changes.

Providers are reconciled in parallel (several workers, one key per provider) and a
reconcile never waits for a rate-limit token (`ratelimit.nonblocking`): a provider whose
token is not there is requeued for the token's time with its status untouched, so one
slow or rate-limited cloud never delays another.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
from collections.abc import Callable

import attrs

from gpuctl.api import (
    ConditionType,
    GPUProvider,
    GPUProviderStatus,
    ObjectError,
    is_true,
    set_condition,
)
from gpuctl.controllers.drivers import DriverPool, ProviderUnavailableError
from gpuctl.controllers.metrics import PROVIDER_READY
from gpuctl.controllers.resources import GPUPROVIDERS
from gpuctl.providers.base import AuthError, ProviderError, RateLimitedError
from gpuctl.providers.ratelimit import nonblocking
from gpuctl.runtime.events import EventRecorder
from gpuctl.runtime.reconcile import Result, TerminalError
from gpuctl.runtime.status import StatusWriter
from gpuctl.runtime.store import Store

log = logging.getLogger(__name__)


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


@attrs.define
class ProviderReconciler:
    providers: Store
    drivers: DriverPool
    status_writer: StatusWriter
    events: EventRecorder
    refresh_interval: float = 300.0
    retry_interval: float = 30.0
    clock: Callable[[], datetime.datetime] = _utcnow

    async def reconcile(self, key: str) -> Result:
        obj = self.providers.get(key)
        if obj is None:
            with contextlib.suppress(KeyError):
                PROVIDER_READY.remove(key)
            return Result()
        try:
            provider = GPUProvider.from_dict(obj)
        except ObjectError as err:
            raise TerminalError(f"GPUProvider {key}: {err}") from err
        status = attrs.evolve(provider.status, conditions=list(provider.status.conditions))
        now = self.clock()
        was_ready = is_true(status.conditions, ConditionType.READY)
        try:
            with nonblocking(f"gpuprovider/{key}"):
                delay, problem = await self._check(provider, status, now)
        except RateLimitedError as err:
            return Result(requeue_after=err.delay)  # not a verdict on the provider
        status.observed_generation = provider.metadata.generation
        ready = problem is None
        PROVIDER_READY.labels(key).set(1 if ready else 0)
        body = attrs.evolve(provider, status=status).status_to_dict()
        await self.status_writer.update_status(GPUPROVIDERS, obj, body)
        if problem is not None:
            reason, message = problem
            await self.events.record(obj, "Warning", reason, message)
            log.warning("%s", message, extra={"provider": key, "reason": reason})
        elif not was_ready:
            await self.events.record(obj, "Normal", "Ready", status.message or "ready")
        return Result(requeue_after=delay)

    async def _check(
        self, provider: GPUProvider, status: GPUProviderStatus, now: datetime.datetime
    ) -> tuple[float, tuple[str, str] | None]:
        conditions = status.conditions
        generation = provider.metadata.generation

        def condition(type_: str, ok: bool, reason: str, message: str) -> None:
            set_condition(
                conditions, type_, ok, reason, message, observed_generation=generation, now=now
            )

        try:
            driver = self.drivers.get(provider.name)
            await driver.validate_credentials()
            condition(ConditionType.CREDENTIALS_VALID, True, "Accepted", "the API key works")
            offers = await driver.list_offers()
        except ProviderUnavailableError as err:
            condition(ConditionType.CREDENTIALS_VALID, False, err.reason, err.message)
            return self._not_ready(status, condition, err.reason, err.message)
        except AuthError as err:
            message = f"the cloud rejected the API key: {err.message}"
            condition(ConditionType.CREDENTIALS_VALID, False, "AuthFailed", message)
            return self._not_ready(status, condition, "AuthFailed", message)
        except RateLimitedError:
            raise
        except ProviderError as err:
            message = f"{type(err).__name__}: {err.message}"
            return self._not_ready(status, condition, "ProviderUnavailable", message)
        available = sum(1 for o in offers if o.available)
        message = f"{len(offers)} offers, {available} with capacity"
        status.offer_count = len(offers)
        status.last_price_refresh = now
        status.message = message
        condition(ConditionType.READY, True, "OffersAvailable", message)
        return self.refresh_interval, None

    def _not_ready(
        self,
        status: GPUProviderStatus,
        condition: Callable[[str, bool, str, str], None],
        reason: str,
        message: str,
    ) -> tuple[float, tuple[str, str]]:
        status.message = message
        condition(ConditionType.READY, False, reason, message)
        return self.retry_interval, (reason, message)
