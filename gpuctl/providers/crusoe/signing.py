"""Crusoe Cloud request signing (signature version 1.0), as Crusoe's SDK does it.

Crusoe's API takes no bearer API key: every request carries an HMAC-SHA256 signature
made with an access key ID and a secret key. Source: crusoecloud/client-go, file
`auth/v1/auth.go` (MIT; commit e23c0629b89a65798182402219bbcb321b529fab), functions
`AddSignature`, `generateMessageV1_0`, `signMessageV1_0`, `canonicalizeQuery` and
`encodeQuery`; the same algorithm as docs.crusoecloud.com/reference/api ("Authentication").

1. `X-Crusoe-Timestamp`: the time of the request, RFC 3339 in UTC to the second
   (Go's `time.Now().UTC().Format(time.RFC3339)`, e.g. `2026-11-29T19:35:10Z`).
2. The message is four lines, each ended by a newline:
   `<URL path>\n<canonical query>\n<METHOD>\n<timestamp>\n`. The URL path is the whole
   path the request goes to, API version included (`/v1/locations`); the canonical
   query is every query parameter, decoded, sorted by key (values of one key in their
   order), each `key=value` re-encoded with Go's `url.QueryEscape` (space as `+`, every
   byte but `A-Za-z0-9-_.~` as `%XX`), joined by `&`; empty without a query. The body
   is not signed.
3. The secret key is base64url without padding (Go's `RawURLEncoding`); the HMAC-SHA256
   of the message under the decoded key is encoded the same way.
4. `Authorization: Bearer 1.0:<access key ID>:<signature>`.

gpuctl keeps the two halves of a Crusoe credential in one Secret value,
`<access key ID>:<secret key>` (`split_credentials`).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from urllib.parse import quote_plus

VERSION = "1.0"
TIMESTAMP_HEADER = "X-Crusoe-Timestamp"
AUTH_HEADER = "Authorization"


class CredentialsError(ValueError):
    """The credential is not `<access key ID>:<secret key>` with a base64url secret."""


def split_credentials(credential: str) -> tuple[str, str]:
    """`<access key ID>:<secret key>` -> (key ID, secret key), the secret checked."""
    key_id, sep, secret = credential.strip().partition(":")
    if not sep or not key_id or not secret:
        raise CredentialsError(
            "a Crusoe credential is '<access key ID>:<secret key>' (both from the console)"
        )
    decode_secret(secret)
    return key_id, secret


def decode_secret(secret: str) -> bytes:
    """The secret key's bytes (base64url, no padding, as Go's RawURLEncoding reads it)."""
    if "=" in secret:
        raise CredentialsError("the Crusoe secret key is base64url without padding")
    try:
        key = base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))
    except (binascii.Error, ValueError):
        raise CredentialsError("the Crusoe secret key is not base64url") from None
    if not key:
        raise CredentialsError("the Crusoe secret key is empty")
    return key


def timestamp(now: datetime.datetime | None = None) -> str:
    """RFC 3339, UTC, whole seconds: what Go's time.RFC3339 prints for a UTC time."""
    moment = (now or datetime.datetime.now(datetime.UTC)).astimezone(datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def canonical_query(pairs: Iterable[tuple[str, str]]) -> str:
    """Decoded query pairs as Crusoe signs them (client-go's canonicalizeQuery)."""
    values: dict[str, list[str]] = {}
    for key, value in pairs:
        if key:
            values.setdefault(key, []).append(value)
    return "&".join(
        f"{_query_escape(key)}={_query_escape(value)}"
        for key in sorted(values)
        for value in values[key]
    )


def _query_escape(text: str) -> str:
    # Go's url.QueryEscape: unreserved bytes stay, space becomes '+', the rest %XX
    # (upper case). quote_plus with nothing extra safe does exactly that.
    return quote_plus(text, safe="")


def message(method: str, path: str, query: Iterable[tuple[str, str]], stamp: str) -> bytes:
    """The signed payload: path, canonical query, method and timestamp, one per line."""
    return f"{path}\n{canonical_query(query)}\n{method.upper()}\n{stamp}\n".encode()


def signature(secret: str, payload: bytes) -> str:
    """base64url (no padding) HMAC-SHA256 of `payload` under the decoded secret key."""
    digest = hmac.new(decode_secret(secret), payload, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def headers(
    key_id: str,
    secret: str,
    method: str,
    path: str,
    query: Iterable[tuple[str, str]] = (),
    *,
    stamp: str | None = None,
) -> dict[str, str]:
    """The two headers that authenticate one request."""
    stamp = stamp or timestamp()
    sig = signature(secret, message(method, path, query, stamp))
    return {TIMESTAMP_HEADER: stamp, AUTH_HEADER: f"Bearer {VERSION}:{key_id}:{sig}"}


def verify(
    credentials: Mapping[str, str],
    method: str,
    path: str,
    query: Iterable[tuple[str, str]],
    received: Mapping[str, str],
    *,
    now: datetime.datetime,
    max_skew_seconds: float,
) -> bool:
    """What the cloud checks (the simulated Crusoe uses it): a known key ID, a timestamp
    within `max_skew_seconds` of `now`, and the signature of this very request.

    `credentials` maps access key IDs to their secret keys.
    """
    stamp = received.get(TIMESTAMP_HEADER, "")
    scheme, _, token = received.get(AUTH_HEADER, "").partition(" ")
    version, _, rest = token.partition(":")
    key_id, _, sig = rest.partition(":")
    secret = credentials.get(key_id)
    if scheme != "Bearer" or version != VERSION or secret is None or not sig:
        return False
    try:
        sent = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S%z")
    except ValueError:
        return False
    if abs((now - sent).total_seconds()) > max_skew_seconds:
        return False
    expected = signature(secret, message(method, path, query, stamp))
    return hmac.compare_digest(expected, sig)
