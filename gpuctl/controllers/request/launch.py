"""Pending -> Provisioning: launch the recorded offer, exactly once per attempt.

Idempotence, in order:
1. the attempt's bootstrap token Secret has a deterministic name (from the request
   UID and attempt): found again after a crash, never duplicated;
2. the request is read fresh from the API server (a quorum read): a stale cache must
   not launch an attempt the server has already moved past;
3. the driver launches under the attempt's deterministic instance name and, before
   any launch, looks that name up and adopts what it finds.
So a crash between the cloud's answer and the status write leaves an instance the
next reconcile adopts, not a second one.

Failures: capacity, quota, auth and invalid-request errors fail over (the offer is
marked in the capacity cache and a new attempt picks another); transient errors
retry the same attempt with backoff.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from typing import Any

from gpuctl.api import (
    ConditionType,
    GPUProvider,
    InstanceStatus,
    Phase,
    registration_timeout,
)
from gpuctl.controllers import bootstrap
from gpuctl.controllers.drivers import ProviderUnavailableError
from gpuctl.controllers.metrics import LAUNCHES
from gpuctl.controllers.request.context import Ctx, to_offer
from gpuctl.controllers.request.nodes import node_labels
from gpuctl.controllers.resources import GPUNODEREQUESTS
from gpuctl.providers.base import (
    AuthError,
    CapacityError,
    Instance,
    InstanceState,
    InvalidRequestError,
    JoinData,
    JoinMethod,
    LaunchRequest,
    ProviderError,
    QuotaError,
)
from gpuctl.runtime.client import is_already_exists, is_not_found
from gpuctl.runtime.reconcile import Result
from gpuctl.runtime.resources import SECRETS
from gpuctl.util.crashpoints import crash_point

_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
# Errors that end an attempt (fail over to another offer): metric result, condition reason.
_FAILOVER: tuple[tuple[type[ProviderError], str, str], ...] = (
    (CapacityError, "capacity", "CapacityError"),
    (QuotaError, "quota", "QuotaExceeded"),
    (AuthError, "auth", "AuthFailed"),
    (InvalidRequestError, "invalid", "LaunchRejected"),
)


def failover_kind(err: ProviderError) -> tuple[str, str] | None:
    for kind, result, reason in _FAILOVER:
        if isinstance(err, kind):
            return result, reason
    return None


class StaleCacheError(Exception):
    """The cached request is behind the API server; retry once the cache catches up."""


def token_id(uid: str, attempt: int) -> str:
    """A deterministic bootstrap token id for (request, attempt); the secret part is random."""
    digest = hashlib.sha256(f"{uid}/{attempt}".encode()).digest()
    return "".join(_ALPHABET[b % len(_ALPHABET)] for b in digest[:6])


def token_secret_name(uid: str, attempt: int) -> str:
    """The kube-system Secret holding the attempt's token (found again after a crash)."""
    return bootstrap.Token(token_id(uid, attempt), "").secret_name


async def delete_token(ctx: Ctx, attempt: int) -> None:
    """Remove an attempt's bootstrap token: once its machine joined, or the attempt ended,
    nothing may join with it any more (it would otherwise live until it expires)."""
    name = token_secret_name(ctx.request.metadata.uid or "", attempt)
    try:
        await ctx.services.client.delete(SECRETS, name, namespace=bootstrap.TOKEN_NAMESPACE)
    except Exception as err:
        if not is_not_found(err):
            raise


async def ensure_token(ctx: Ctx, provider: GPUProvider) -> bootstrap.Token:
    """The attempt's bootstrap token: the existing Secret's, or a new one."""
    client = ctx.services.client
    uid = ctx.request.metadata.uid or ""
    name = token_secret_name(uid, ctx.status.attempt)
    try:
        return bootstrap.Token.from_secret(
            await client.get(SECRETS, name, namespace=bootstrap.TOKEN_NAMESPACE)
        )
    except Exception as err:
        if not is_not_found(err):
            raise
    token = bootstrap.Token(token_id(uid, ctx.status.attempt), bootstrap.Token.generate().secret)
    ttl = registration_timeout(ctx.request.spec, provider.spec) + ctx.settings.token_margin
    body = bootstrap.token_secret(
        token, request=ctx.name, attempt=ctx.status.attempt, expires=ctx.now + ttl
    )
    try:
        await client.create(SECRETS, body, namespace=bootstrap.TOKEN_NAMESPACE)
    except Exception as err:
        if not is_already_exists(err):  # a concurrent create won: read its secret
            raise
        return await ensure_token(ctx, provider)
    return token


def _template(ctx: Ctx, provider: GPUProvider) -> str | None:
    ref = provider.spec.bootstrap.template_secret_ref
    if ref is None:
        return None
    secret = ctx.services.drivers.secret(ref.namespace, ref.name)
    data: Mapping[str, Any] = secret.get("data") or {}
    if ref.key not in data:
        raise ProviderUnavailableError(
            "TemplateMissing", f"Secret {ref.namespace}/{ref.name} has no key {ref.key!r}"
        )
    return base64.b64decode(data[ref.key]).decode()


def join_params(ctx: Ctx, provider: GPUProvider, token: bootstrap.Token) -> bootstrap.JoinParams:
    spec, boot = ctx.request.spec, provider.spec.bootstrap
    labels = node_labels(ctx)
    taints = tuple(
        f"{t.key}={t.value or ''}:{t.effect.value}" for t in (spec.node.taints if spec.node else [])
    )
    return bootstrap.JoinParams(
        api_server=boot.api_server_endpoint or ctx.settings.join_endpoint,
        token=token,
        ca_cert_hash=boot.ca_cert_hash or ctx.settings.ca_cert_hash,
        node_name=ctx.instance_name,
        labels=labels,
        taints=taints,
        kubernetes_version=boot.kubernetes_version or "",
        extra_args=tuple(boot.extra_args),
    )


def _render(
    ctx: Ctx, provider: GPUProvider, cloud_format: JoinMethod, token: bootstrap.Token
) -> JoinData:
    """The join payload in the form this cloud runs; a bootstrap the cloud cannot run
    makes the provider unusable (a condition and an Event), not a crash loop."""
    try:
        return bootstrap.render(
            bootstrap.Method(provider.spec.bootstrap.method.value),
            join_params(ctx, provider, token),
            _template(ctx, provider),
            cloud_format=cloud_format,
        )
    except ValueError as err:
        raise ProviderUnavailableError("BootstrapUnsupported", str(err)) from err


async def _check_fresh(ctx: Ctx) -> None:
    fresh = await ctx.services.client.get(GPUNODEREQUESTS, ctx.name)
    if fresh["metadata"].get("resourceVersion") != ctx.obj["metadata"].get("resourceVersion"):
        raise StaleCacheError(ctx.name)


def record_instance(ctx: Ctx, instance: Instance) -> None:
    ctx.status.instance = InstanceStatus(
        id=instance.id,
        name=instance.name,
        state=instance.native_state,
        public_ip=instance.public_ip,
        launched_at=instance.launched_at or ctx.now,
    )
    booting = instance.state in (InstanceState.PENDING, InstanceState.UNKNOWN)
    ctx.status.phase = Phase.PROVISIONING if booting else Phase.JOINING


async def reconcile(ctx: Ctx) -> Result | None:
    offer = ctx.status.offer
    if offer is None or ctx.status.instance is not None:
        return None
    provider = ctx.services.drivers.provider(offer.provider)
    driver = ctx.services.drivers.get(offer.provider)
    token = await ensure_token(ctx, provider)
    join = _render(ctx, provider, driver.capabilities.join_method, token)
    await _check_fresh(ctx)
    request = LaunchRequest(
        name=ctx.instance_name,
        offer=to_offer(offer),
        join=join,
        tags={"gpuctl-cluster": ctx.settings.cluster_name, "gpuctl-request": ctx.name},
    )
    labels = (offer.provider, offer.capacity_type.value)
    crash_point("before-launch")
    try:
        instance = await driver.launch(request)
        crash_point("after-launch")  # the cloud has the machine; status does not know it yet
    except ProviderError as err:
        kind = failover_kind(err)
        LAUNCHES.labels(*labels, kind[0] if kind else "transient").inc()
        if kind is None:
            raise  # transient: the same attempt again, with backoff
        reason = kind[1]
        ctx.services.capacity.mark(request.offer, reason)
        message = f"{offer.provider} {offer.instance_type} in {offer.native_region}: {err.message}"
        ctx.condition(ConditionType.LAUNCHED, False, reason, message)
        ctx.event("Warning", reason, f"attempt {ctx.status.attempt}: {message}; failing over")
        ctx.fail_offer(reason, err.message)
        return ctx.stop()
    LAUNCHES.labels(*labels, "success").inc()
    record_instance(ctx, instance)
    message = (
        f"{instance.name} ({instance.id}) on {offer.provider} {offer.instance_type} "
        f"in {offer.native_region}, {offer.capacity_type.value} at ${offer.price_per_hour:.2f}/h"
    )
    ctx.status.message = f"launched {message}"
    ctx.condition(ConditionType.LAUNCHED, True, "Launched", message)
    ctx.event("Normal", "Launched", message)
    return ctx.stop()
