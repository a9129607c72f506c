"""The seam between generated API operations and the HTTP machinery.

Generated operations (`gpuctl/providers/<cloud>/_generated/operations*.py`) call
`Transport.request` with the spec's method and path template already filled in;
the concrete transport (`gpuctl/providers/http.py`) owns the aiohttp session,
authentication, rate limiting, retries and the mapping of each cloud's error
format to the typed errors of `gpuctl.providers.base`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

Params = Mapping[str, str | int | float | bool | Sequence[str]]


class Transport(Protocol):
    async def request(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        params: Params | None = None,
        json: Any = None,
    ) -> Any:
        """Send one request; return the decoded JSON body (None for an empty body).

        `operation` is the spec's operationId (or a stable name), used for rate
        limiting classes, metrics and errors. Raises a `ProviderError` subclass.
        """
        ...
