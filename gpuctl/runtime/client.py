"""A raw-JSON Kubernetes client: objects are plain dicts exactly as the API server sends them.

Why not kubernetes_asyncio's generated APIs: deserializing into its models is slow and
memory-hungry, and the operator keeps 10,000 Nodes plus 10,000 requests in memory; even
importing them costs 38 MiB. The transport is anything with `ApiClient.call_api(...,
_preload_content=False)`'s shape handing back the raw aiohttp response: the operator's
own `gpuctl.runtime.transport.HttpTransport` (kubeconfig / in-cluster config, TLS,
bearer token, proxy), or a kubernetes_asyncio `ApiClient` (tests and tools use one).

Semantics:
- Every request carries a timeout (kubernetes_asyncio has none by default, so a dead TCP
  connection hangs forever): `request_timeout` in total for ordinary calls; for watches
  no total bound but `read_timeout` of socket silence (the server sends a BOOKMARK about
  every 60 s, so 70 s of silence means the connection is dead).
- Non-2xx answers raise `ApiError` carrying the API server's Status (code, reason and the
  server's own message, which names the offending field for invalid objects). Network
  failures and timeouts raise `TransportError`. Nothing else escapes, except bugs.
- `list_all` follows `limit`/`continue` pagination and stamps `apiVersion`/`kind` on every
  item (the server leaves them out of list items), so listed and watched objects look
  alike.
- `watch` decodes the streaming response line by line; ERROR events raise `ApiError`
  with the Status' code (410 for a too old resourceVersion).
- Each request is counted in `gpuctl_kube_api_requests_total{verb,resource,code}`
  (code `<error>` when no HTTP answer came back), on the registry given to `Client`, or
  by default `gpuctl.runtime.metrics.REGISTRY` when that module exists, else
  prometheus_client's global registry (`default_registry()`).

The `is_*` helpers mirror apimachinery's `errors.IsNotFound` & co.: the Status reason
decides, the HTTP code only when the reason is unknown.
"""

from __future__ import annotations

import codecs
import importlib
import json
import re
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Sequence
from typing import Any, ClassVar, Literal

import aiohttp
import attrs
import prometheus_client
from prometheus_client import CollectorRegistry, Counter

from gpuctl.runtime.resources import Resource
from gpuctl.runtime.transport import Transport

JSON = dict[str, Any]
Body = JSON | list[JSON]  # a JSON patch is a list of operations
PatchType = Literal["merge", "json", "strategic", "apply"]

_PATCH_CONTENT_TYPES: dict[str, str] = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "apply": "application/apply-patch+yaml",  # JSON is YAML: the body is sent as JSON
}

# Status reasons the API server uses; a reason outside this set counts as unknown.
_KNOWN_REASONS = frozenset(
    {
        "Unauthorized",
        "Forbidden",
        "NotFound",
        "AlreadyExists",
        "Conflict",
        "Gone",
        "Invalid",
        "ServerTimeout",
        "StoreReadError",
        "Timeout",
        "TooManyRequests",
        "BadRequest",
        "MethodNotAllowed",
        "NotAcceptable",
        "RequestEntityTooLarge",
        "UnsupportedMediaType",
        "InternalError",
        "Expired",
        "ServiceUnavailable",
    }
)


# -- errors --------------------------------------------------------------------------


class ApiError(Exception):
    """The API server answered with an error Status (HTTP code >= 300, or a watch ERROR)."""

    def __init__(self, status: int, reason: str, message: str, body: JSON | str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.body = body

    @classmethod
    def from_status(cls, status: JSON, http_status: int = 0, http_reason: str = "") -> ApiError:
        """From a metav1.Status object (an error body or a watch ERROR event's object)."""
        code = int(status.get("code") or http_status or 500)
        reason = str(status.get("reason") or http_reason or "")
        return cls(code, reason, str(status.get("message") or ""), status)

    @classmethod
    def from_response(cls, http_status: int, http_reason: str, data: bytes) -> ApiError:
        text = data.decode("utf-8", errors="replace")
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("kind") == "Status":
            return cls.from_status(body, http_status, http_reason)
        return cls(http_status, http_reason, text.strip(), text)

    @property
    def causes(self) -> list[JSON]:
        """`details.causes` of the Status (field-level reasons for Invalid), if any."""
        if isinstance(self.body, dict):
            causes = (self.body.get("details") or {}).get("causes") or []
            return [c for c in causes if isinstance(c, dict)]
        return []


class TransportError(Exception):
    """No usable HTTP answer: connection refused or reset, TLS failure, or a timeout."""


def _has_reason(err: BaseException, reason: str, code: int) -> bool:
    if not isinstance(err, ApiError):
        return False
    if err.reason in _KNOWN_REASONS:
        return err.reason == reason
    return err.status == code


def is_not_found(err: BaseException) -> bool:
    return _has_reason(err, "NotFound", 404)


def is_already_exists(err: BaseException) -> bool:
    return isinstance(err, ApiError) and err.reason == "AlreadyExists"


def is_conflict(err: BaseException) -> bool:
    """409 because of a stale resourceVersion or a precondition (not AlreadyExists)."""
    return _has_reason(err, "Conflict", 409)


def is_gone(err: BaseException) -> bool:
    """410: the resourceVersion (or continue token) is too old (reason Expired or Gone)."""
    return _has_reason(err, "Expired", 410) or _has_reason(err, "Gone", 410)


def is_forbidden(err: BaseException) -> bool:
    return _has_reason(err, "Forbidden", 403)


def is_invalid(err: BaseException) -> bool:
    """422: the object failed validation; `err.message` names the field."""
    return _has_reason(err, "Invalid", 422)


def is_resource_version_too_large(err: BaseException) -> bool:
    """The server has not seen that resourceVersion yet (e.g. after an etcd restore)."""
    if not isinstance(err, ApiError):
        return False
    if any(c.get("reason") == "ResourceVersionTooLarge" for c in err.causes):
        return True
    return "too large resource version" in err.message.lower()


# -- metrics -------------------------------------------------------------------------

_COUNTERS: weakref.WeakKeyDictionary[CollectorRegistry, dict[str, Counter]] = (
    weakref.WeakKeyDictionary()
)


def default_registry() -> CollectorRegistry:
    """`gpuctl.runtime.metrics.REGISTRY` if that module exists, else the global registry.

    Imported lazily so this module does not depend on the metrics module being present
    (it belongs to the manager) and never imports it at module load time.
    """
    try:
        module = importlib.import_module("gpuctl.runtime.metrics")
    except ModuleNotFoundError as err:
        if err.name != "gpuctl.runtime.metrics":
            raise
        return prometheus_client.REGISTRY
    registry = getattr(module, "REGISTRY", None)
    return registry if isinstance(registry, CollectorRegistry) else prometheus_client.REGISTRY


def registry_counter(
    registry: CollectorRegistry, name: str, documentation: str, labelnames: Sequence[str]
) -> Counter:
    """The counter `name` on `registry`, created once per registry (no duplicate error)."""
    counters = _COUNTERS.setdefault(registry, {})
    if name not in counters:
        counters[name] = Counter(name, documentation, labelnames, registry=registry)
    return counters[name]


# -- the client ----------------------------------------------------------------------


@attrs.frozen
class ListResult:
    """All items of a (possibly paginated) list, the list's resourceVersion, and how many
    pages the server split it into (1 when it ignored `limit`, as the watch cache does
    for resourceVersion "0")."""

    items: list[JSON]
    resource_version: str
    pages: int = 1


Query = list[tuple[str, str]]
ItemFunc = Callable[[JSON], JSON]


class Client:
    """Raw-JSON API access over a transport (which the caller closes): the operator's own
    (`gpuctl.runtime.transport`), or a kubernetes_asyncio `ApiClient` (tests, tools)."""

    def __init__(
        self,
        api_client: Transport,
        *,
        request_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.api_client = api_client
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self._requests = registry_counter(
            registry if registry is not None else default_registry(),
            "gpuctl_kube_api_requests_total",
            "Requests to the Kubernetes API server by verb, resource and HTTP code.",
            ("verb", "resource", "code"),
        )

    # -- reads -------------------------------------------------------------------

    async def get(self, resource: Resource, name: str, *, namespace: str | None = None) -> JSON:
        return await self._json("get", resource, "GET", resource.path(namespace, name))

    async def list(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        resource_version: str | None = None,
        resource_version_match: str | None = None,
        limit: int | None = None,
        continue_: str | None = None,
        item: ItemFunc | None = None,
    ) -> JSON:
        """One page: the raw List object (`items`, `metadata.resourceVersion`/`continue`).

        With `item`, the answer is decoded as it arrives (`ListDecoder`) and each
        element of `items` is replaced by `item(element)` as soon as it is decoded: the
        whole decoded list never exists at once, nor the answer's bytes or text. The
        API server's watch cache answers a list at resourceVersion "0" in one page
        whatever the limit, so for 10,000 Nodes that is ~190 MiB of dicts avoided, and
        tens of MiB of JSON text."""
        query = _query(
            labelSelector=label_selector,
            fieldSelector=field_selector,
            resourceVersion=resource_version,
            resourceVersionMatch=resource_version_match,
            limit=limit,
            **{"continue": continue_},
        )
        path = resource.path(namespace)
        return await self._json("list", resource, "GET", path, query=query, item=item)

    async def list_all(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        resource_version: str | None = None,
        resource_version_match: str | None = None,
        limit: int | None = 500,
    ) -> ListResult:
        """Every page of a list. Pages after the first carry only the continue token
        (the server rejects resourceVersion with continue); the result's resourceVersion
        is the first page's, which is the snapshot all pages come from."""
        items: list[JSON] = []
        first = await self.list(
            resource,
            namespace=namespace,
            label_selector=label_selector,
            field_selector=field_selector,
            resource_version=resource_version,
            resource_version_match=resource_version_match,
            limit=limit,
        )
        page, pages = first, 1
        while True:
            items += _typed(page.get("items") or [], resource)
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                break
            pages += 1
            page = await self.list(
                resource,
                namespace=namespace,
                label_selector=label_selector,
                field_selector=field_selector,
                limit=limit,
                continue_=token,
            )
        rv = str((first.get("metadata") or {}).get("resourceVersion") or "")
        return ListResult(items, rv, pages)

    async def watch(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        resource_version: str,
        timeout_seconds: int,
        allow_bookmarks: bool = True,
        label_selector: str | None = None,
        field_selector: str | None = None,
        read_timeout: float = 70.0,
    ) -> AsyncGenerator[tuple[str, JSON], None]:
        """`(type, object)` for each event: ADDED, MODIFIED, DELETED, BOOKMARK.

        Ends when the server closes the watch (after `timeout_seconds`). ERROR events
        raise `ApiError`; `read_timeout` seconds without a byte raise `TransportError`.
        Closing the iterator early closes the connection.
        """
        query = _query(
            watch="true",
            resourceVersion=resource_version,
            timeoutSeconds=timeout_seconds,
            allowWatchBookmarks="true" if allow_bookmarks else None,
            labelSelector=label_selector,
            fieldSelector=field_selector,
        )
        # No total bound beyond the server's own timeout plus slack: the server ends the
        # watch; only silence (sock_read) or a server that never ends it is our problem.
        timeout = aiohttp.ClientTimeout(
            total=timeout_seconds + read_timeout,
            sock_connect=self.connect_timeout,
            sock_read=read_timeout,
        )
        path = resource.path(namespace)
        response = await self._send(
            "watch", resource, "GET", path, query=query, client_timeout=timeout
        )
        finished = False
        try:
            if response.status != 200:
                data = await response.read()
                raise ApiError.from_response(response.status, response.reason or "", data)
            async for line in _lines(response.content):
                kind, obj = _decode_event(line)
                if kind == "ERROR":
                    raise ApiError.from_status(obj)
                yield kind, obj
            finished = True
        except (aiohttp.ClientError, TimeoutError) as err:
            raise TransportError(f"watch {path}: {err!r}") from err
        finally:
            if finished:
                response.release()
            else:
                response.close()

    # -- writes ------------------------------------------------------------------

    async def create(
        self,
        resource: Resource,
        body: JSON,
        *,
        namespace: str | None = None,
        field_manager: str | None = None,
        subresource: str | None = None,
    ) -> JSON:
        """POST `body`; the namespace defaults to `body.metadata.namespace`.

        With `subresource` (e.g. a pod's `eviction`), POST to that subresource of the
        object `body.metadata.name` names.
        """
        ns = _namespace(resource, namespace, body)
        path = resource.path(ns, _name(body), subresource) if subresource else resource.path(ns)
        query = _query(fieldManager=field_manager)
        return await self._json(
            "create", resource, "POST", path, query=query, body=body, subresource=subresource
        )

    async def replace(self, resource: Resource, body: JSON) -> JSON:
        """PUT the whole object; `metadata.resourceVersion`, if set, must be current (409)."""
        path = resource.path(_namespace(resource, None, body), _name(body))
        return await self._json("update", resource, "PUT", path, body=body)

    async def replace_status(self, resource: Resource, body: JSON) -> JSON:
        """PUT the status subresource (only `status` is taken; optimistic like replace)."""
        path = resource.path(_namespace(resource, None, body), _name(body), "status")
        return await self._json("update", resource, "PUT", path, body=body, subresource="status")

    async def patch(
        self,
        resource: Resource,
        name: str,
        body: Body,
        *,
        namespace: str | None = None,
        patch_type: PatchType = "merge",
        subresource: str | None = None,
        field_manager: str = "gpuctl",
        force: bool = False,
    ) -> JSON:
        """PATCH; `force` (take over conflicting fields) is only valid for server-side apply."""
        if force and patch_type != "apply":
            raise ValueError("force is only valid for patch_type='apply'")
        path = resource.path(namespace, name, subresource)
        query = _query(fieldManager=field_manager, force="true" if force else None)
        return await self._json(
            "patch",
            resource,
            "PATCH",
            path,
            query=query,
            body=body,
            content_type=_PATCH_CONTENT_TYPES[patch_type],
            subresource=subresource,
        )

    async def delete(
        self,
        resource: Resource,
        name: str,
        *,
        namespace: str | None = None,
        uid: str | None = None,
        resource_version: str | None = None,
        propagation_policy: Literal["Orphan", "Background", "Foreground"] | None = None,
        grace_period_seconds: int | None = None,
    ) -> JSON:
        """DELETE with optional preconditions (a mismatch is a 409 Conflict).

        Returns the server's answer: the object (still present while finalizers run,
        or as deleted) or a Status.
        """
        options: JSON = {"apiVersion": "v1", "kind": "DeleteOptions"}
        preconditions = {
            k: v for k, v in (("uid", uid), ("resourceVersion", resource_version)) if v
        }
        if preconditions:
            options["preconditions"] = preconditions
        if propagation_policy is not None:
            options["propagationPolicy"] = propagation_policy
        if grace_period_seconds is not None:
            options["gracePeriodSeconds"] = grace_period_seconds
        path = resource.path(namespace, name)
        return await self._json("delete", resource, "DELETE", path, body=options)

    # -- transport ---------------------------------------------------------------

    async def _json(
        self,
        verb: str,
        resource: Resource,
        method: str,
        path: str,
        *,
        query: Query | None = None,
        body: Body | None = None,
        content_type: str = "application/json",
        subresource: str | None = None,
        item: ItemFunc | None = None,
    ) -> JSON:
        timeout = aiohttp.ClientTimeout(
            total=self.request_timeout, sock_connect=self.connect_timeout
        )
        response = await self._send(
            verb,
            resource,
            method,
            path,
            query=query,
            body=body,
            content_type=content_type,
            subresource=subresource,
            client_timeout=timeout,
        )
        if item is not None and 200 <= response.status < 300:
            return await _decode_streamed(response, item, f"{method} {path}")
        try:
            data = await response.read()
        except (aiohttp.ClientError, TimeoutError) as err:
            raise TransportError(f"{method} {path}: {err!r}") from err
        finally:
            response.release()
        if not 200 <= response.status < 300:
            raise ApiError.from_response(response.status, response.reason or "", data)
        try:
            decoded = json.loads(data) if data else {}
        except ValueError as err:
            raise TransportError(f"{method} {path}: answer is not JSON: {data[:200]!r}") from err
        if not isinstance(decoded, dict):
            raise TransportError(f"{method} {path}: answer is not a JSON object")
        return decoded

    async def _send(
        self,
        verb: str,
        resource: Resource,
        method: str,
        path: str,
        *,
        query: Query | None = None,
        body: Body | None = None,
        content_type: str = "application/json",
        subresource: str | None = None,
        client_timeout: aiohttp.ClientTimeout,
    ) -> aiohttp.ClientResponse:
        label = resource.qualified_name + (f"/{subresource}" if subresource else "")
        headers = {"Accept": "application/json", "Content-Type": content_type}
        try:
            response: aiohttp.ClientResponse = await self.api_client.call_api(
                path,
                method,
                query_params=query or [],
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=client_timeout,
            )
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            self._requests.labels(verb, label, "<error>").inc()
            raise TransportError(f"{method} {path}: {err!r}") from err
        self._requests.labels(verb, label, str(response.status)).inc()
        return response


# -- helpers -------------------------------------------------------------------------


def _query(**params: str | int | None) -> Query:
    return [(key, str(value)) for key, value in params.items() if value is not None]


def _name(body: JSON) -> str:
    name = (body.get("metadata") or {}).get("name")
    if not name:
        raise ValueError("object has no metadata.name")
    return str(name)


def _namespace(resource: Resource, namespace: str | None, body: JSON) -> str | None:
    if not resource.namespaced:
        return None
    namespace = namespace or (body.get("metadata") or {}).get("namespace")
    if not namespace:
        raise ValueError(f"{resource.qualified_name} is namespaced: no namespace given")
    return str(namespace)


def _typed(items: Iterable[JSON], resource: Resource) -> list[JSON]:
    typed = []
    for item in items:
        item.setdefault("apiVersion", resource.api_version)
        item.setdefault("kind", resource.kind)
        typed.append(item)
    return typed


_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")


STREAM_CHUNK = 1 << 16


async def _decode_streamed(response: aiohttp.ClientResponse, item: ItemFunc, what: str) -> JSON:
    """A List answer decoded chunk by chunk as it arrives (`ListDecoder`)."""
    decoder = ListDecoder(item)
    text = codecs.getincrementaldecoder("utf-8")()
    try:
        async for chunk in response.content.iter_chunked(STREAM_CHUNK):
            decoder.feed(text.decode(chunk))
        decoder.feed(text.decode(b"", final=True))
        return decoder.finish()
    except (aiohttp.ClientError, TimeoutError) as err:
        raise TransportError(f"{what}: {err!r}") from err
    except ValueError as err:  # UnicodeDecodeError included
        raise TransportError(f"{what}: answer is not a JSON List: {err}") from err
    finally:
        response.release()


def decode_list(text: str, item: ItemFunc) -> JSON:
    """`json.loads(text)` of a List object, `item` applied to each element of its `items`
    the moment that element is decoded, so only one raw element exists at a time."""
    decoder = ListDecoder(item)
    decoder.feed(text)
    return decoder.finish()


class ListDecoder:
    """`decode_list` fed piece by piece (`feed(text)`, then `finish()`), as the answer
    arrives: neither the answer's bytes nor its text is ever held whole, only what is
    not decoded yet (at most one element of `items` and a chunk). A List is an object
    whose `items` value is an array; any other member is decoded whole."""

    _SELF_DELIMITED = ("{", "[", '"')

    def __init__(self, item: ItemFunc) -> None:
        self.item = item
        self.result: JSON = {}
        self._buf = ""
        self._pos = 0
        self._state = "start"
        self._key = ""
        self._items: list[JSON] = []

    def feed(self, text: str) -> None:
        self._buf = self._buf[self._pos :] + text if self._pos else self._buf + text
        self._pos = 0
        self._run(final=False)

    def finish(self) -> JSON:
        self._run(final=True)
        if self._state != "done" or self._buf[self._pos :].strip():
            raise ValueError(
                f"a List is a JSON object: incomplete or trailing data ({self._state})"
            )
        return self.result

    def _run(self, *, final: bool) -> None:
        while self._step(final):
            pass

    def _next(self) -> str | None:
        """The next non-blank character (consumed blanks), None if none buffered yet."""
        match = _SPACE.match(self._buf, self._pos)
        self._pos = match.end() if match else self._pos
        return self._buf[self._pos] if self._pos < len(self._buf) else None

    def _value(self, final: bool) -> tuple[Any, bool]:
        """One whole JSON value at the position, or (None, False) until more arrives."""
        first = self._buf[self._pos]
        try:
            value, end = _DECODER.raw_decode(self._buf, self._pos)
        except ValueError:
            if final:
                raise
            return None, False  # cut off by the end of what has arrived (or bad: see finish)
        if end >= len(self._buf) and first not in self._SELF_DELIMITED and not final:
            return None, False  # a number or literal may go on in the next piece
        self._pos = end
        return value, True

    def _step(self, final: bool) -> bool:
        """Advance one token; False when more text is needed (or the List is done)."""
        char = self._next()
        if self._state == "done" or char is None:
            return False
        return self._STATES[self._state](self, char, final)

    def _expect(self, char: str, allowed: str) -> None:
        if char not in allowed:
            raise ValueError(f"one of {allowed!r} expected at {self._pos}, not {char!r}")
        self._pos += 1

    def _start(self, char: str, final: bool) -> bool:
        self._expect(char, "{")
        self._state = "key-or-end"
        return True

    def _key_or_end(self, char: str, final: bool) -> bool:
        if char == "}":
            self._pos += 1
            self._state = "done"
            return False
        return self._member_name(char, final)

    def _member_name(self, char: str, final: bool) -> bool:
        key, ok = self._value(final)
        if ok and not isinstance(key, str):
            raise ValueError("a member name must be a string")
        if ok:
            self._key, self._state = key, "colon"
        return ok

    def _colon(self, char: str, final: bool) -> bool:
        self._expect(char, ":")
        self._state = "value"
        return True

    def _member_value(self, char: str, final: bool) -> bool:
        if self._key == "items" and char == "[":
            self._pos += 1
            self._items, self._state = [], "item-or-end"
            return True
        value, ok = self._value(final)
        if ok:
            self.result[self._key], self._state = value, "after-value"
        return ok

    def _item_or_end(self, char: str, final: bool) -> bool:
        if char == "]":
            return self._after_item(char, final)
        return self._element(char, final)

    def _element(self, char: str, final: bool) -> bool:
        element, ok = self._value(final)
        if ok:
            self._items.append(self.item(element))
            self._state = "after-item"
        return ok

    def _after_item(self, char: str, final: bool) -> bool:
        self._expect(char, ",]")
        if char == "]":
            self.result["items"], self._state = self._items, "after-value"
        else:
            self._state = "item"
        return True

    def _after_value(self, char: str, final: bool) -> bool:
        self._expect(char, ",}")
        self._state = "done" if char == "}" else "key"
        return True

    _STATES: ClassVar[dict[str, Callable[[ListDecoder, str, bool], bool]]] = {
        "start": _start,
        "key-or-end": _key_or_end,
        "key": _member_name,
        "colon": _colon,
        "value": _member_value,
        "item-or-end": _item_or_end,
        "item": _element,
        "after-item": _after_item,
        "after-value": _after_value,
    }


def _decode_event(line: bytes) -> tuple[str, JSON]:
    try:
        event = json.loads(line)
        kind, obj = event["type"], event["object"]
    except (ValueError, KeyError, TypeError) as err:
        raise TransportError(f"undecodable watch event: {line[:200]!r}") from err
    if not isinstance(kind, str) or not isinstance(obj, dict):
        raise TransportError(f"malformed watch event: {line[:200]!r}")
    return kind, obj


async def _lines(stream: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """Newline-delimited chunks of a stream, without aiohttp's line-length limit
    (one watch event carries a whole object, up to etcd's 1.5 MiB)."""
    buffer = bytearray()
    async for chunk in stream.iter_any():
        scan_from = len(buffer)  # what is buffered already holds no newline
        buffer += chunk
        start = 0
        while (end := buffer.find(b"\n", scan_from)) >= 0:
            line = bytes(buffer[start:end])
            start = scan_from = end + 1
            if line.strip():
                yield line
        del buffer[:start]
    if buffer.strip():
        yield bytes(buffer)
