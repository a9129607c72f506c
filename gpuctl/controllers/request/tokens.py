"""Each attempt's bootstrap token: a kube-system Secret whose name follows from the
request's UID and the attempt (found again after a crash, never duplicated), and which
carries the attempt's billing bound (its creation time, `settle.persisted_bound`).

Made by the launch step (`launch.ensure_token`); deleted once its machine joined or
its attempt ended, so nothing may join with it any more.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from gpuctl.controllers import bootstrap
from gpuctl.controllers.request.context import Ctx
from gpuctl.runtime.client import is_not_found
from gpuctl.runtime.resources import SECRETS

_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
# On the token Secret: made by a version that keeps `creates-from` before every late
# create, so the bound the API server holds says when the attempt's creates ended.
BOUND_MARK = "gpuctl.io/creates-bound"


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
    uid = ctx.request.metadata.uid or ""
    ctx.services.launches.tokens.pop((uid, attempt), None)
    name = token_secret_name(uid, attempt)
    try:
        await ctx.services.client.delete(SECRETS, name, namespace=bootstrap.TOKEN_NAMESPACE)
    except Exception as err:
        if not is_not_found(err):
            raise


async def token_exists(ctx: Ctx, attempt: int) -> bool:
    return await token_secret(ctx, attempt) is not None


async def token_secret(ctx: Ctx, attempt: int | None = None) -> Mapping[str, Any] | None:
    """The token Secret of `attempt` (default: the current one); None once it is gone."""
    if attempt is None:
        attempt = ctx.status.attempt
    name = token_secret_name(ctx.request.metadata.uid or "", attempt)
    try:
        secret: Mapping[str, Any] = await ctx.services.client.get(
            SECRETS, name, namespace=bootstrap.TOKEN_NAMESPACE
        )
    except Exception as err:
        if is_not_found(err):
            return None
        raise
    return secret
