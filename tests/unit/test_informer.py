"""The informer's reflector logic against a scripted API, case by case as client-go's
tools/cache/reflector_test.go checks it (test names in each docstring).

`Api` plays the API server: `lists` and `watches` are scripts (callables of the
request's options) and every request is recorded. Time is fake: backoffs are recorded,
not slept, and the clock only moves when a script moves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import aiohttp
import pytest

from gpuctl.runtime import client as client_module
from gpuctl.runtime.client import ApiError, TransportError
from gpuctl.runtime.informer import (
    Backoff,
    BackoffTimer,
    Informer,
    _is_connection_refused,
    _is_decode_error,
)
from gpuctl.runtime.resources import CONFIGMAPS
from gpuctl.runtime.store import object_key

JSON = dict[str, Any]


def pod(name: str, rv: str) -> JSON:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": rv}}


def page(rv: str, *items: JSON, cont: str = "") -> JSON:
    meta = {"resourceVersion": rv} | ({"continue": cont} if cont else {})
    return {"kind": "ConfigMapList", "metadata": meta, "items": [dict(i) for i in items]}


def status(code: int, reason: str, message: str = "", **details: Any) -> ApiError:
    body = {"kind": "Status", "code": code, "reason": reason, "message": message}
    if details:
        body["details"] = details
    return ApiError.from_status(body)


EXPIRED = status(410, "Expired", "The resourceVersion for the provided watch is too old.")
INTERNAL = status(500, "InternalError", "etcdserver: no leader")
THROTTLED = status(429, "TooManyRequests", "too many requests")


def refused() -> TransportError:
    try:
        raise aiohttp.ClientConnectorError(
            aiohttp.client_reqrep.ConnectionKey("127.0.0.1", 1, False, True, None, None, None),
            ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed"),
        )
    except aiohttp.ClientError as err:
        try:
            raise TransportError(f"GET /api/v1/configmaps: {err!r}") from err
        except TransportError as wrapped:
            return wrapped


def reset() -> TransportError:
    try:
        raise aiohttp.ClientPayloadError("Response payload is not completed")
    except aiohttp.ClientError as err:
        try:
            raise TransportError(f"watch /api/v1/configmaps: {err!r}") from err
        except TransportError as wrapped:
            return wrapped


# A watch script returns one of these:
#   an exception           -> the request fails with it (HTTP error answer / no answer)
#   a list of steps        -> the stream: ("ADDED", obj) events, an exception (ERROR
#                             event or broken stream), ("TICK", seconds) moves the clock;
#                             the stream then ends (server closed it)
Step = tuple[str, Any] | BaseException
WatchScript = Callable[[JSON], BaseException | list[Step]]
ListScript = Callable[[JSON], JSON | BaseException]


class Api:
    def __init__(self) -> None:
        self.list_script: ListScript = lambda opts: page("1")
        self.watch_script: WatchScript = lambda opts: []
        self.list_calls: list[JSON] = []
        self.watch_calls: list[JSON] = []
        self.now = 0.0
        self.delays: list[float] = []
        self.informer: Informer | None = None

    # -- the two calls the informer makes --------------------------------------------

    async def list(self, resource: Any, **opts: Any) -> JSON:
        item = opts.pop("item", None)  # applied per item while decoding, as Client.list does
        self.list_calls.append(opts)
        answer = self.list_script(opts)
        if isinstance(answer, BaseException):
            raise answer
        if item is not None:
            answer = {**answer, "items": [item(i) for i in answer.get("items") or []]}
        return answer

    async def watch(self, resource: Any, **opts: Any) -> AsyncIterator[tuple[str, JSON]]:
        self.watch_calls.append(opts)
        answer = self.watch_script(opts)
        await asyncio.sleep(0)  # where a stop() from the script lands
        if isinstance(answer, BaseException):
            raise answer
        for step in answer:
            if isinstance(step, BaseException):
                raise step
            kind, obj = step
            if kind == "TICK":
                self.now += obj
                continue
            yield kind, obj

    # -- helpers ---------------------------------------------------------------------

    def stop(self) -> None:
        assert self.informer is not None
        self.informer.stop()

    def list_rvs(self) -> list[str | None]:
        return [c.get("resource_version") for c in self.list_calls]


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    def on_add(self, obj: JSON) -> None:
        self.calls.append(("add", object_key(obj), obj["metadata"]["resourceVersion"]))

    def on_update(self, old: JSON, new: JSON) -> None:
        self.calls.append(("update", object_key(new), new["metadata"]["resourceVersion"]))

    def on_delete(self, obj: JSON) -> None:
        self.calls.append(("delete", object_key(obj), obj["metadata"]["resourceVersion"]))


def make(api: Api, **kwargs: Any) -> tuple[Informer, Recorder]:
    informer = Informer(api, CONFIGMAPS, namespace="ns", **kwargs)  # type: ignore[arg-type]
    api.informer = informer
    informer._clock = lambda: api.now

    async def sleep(delay: float) -> None:
        api.delays.append(delay)
        await asyncio.sleep(0)

    informer._sleep = sleep
    seen = Recorder()
    informer.add_handler(seen)
    return informer, seen


async def run(informer: Informer, within: float = 5) -> None:
    await asyncio.wait_for(informer.run(), within)


def sequence(*answers: Any, then: Callable[[JSON], Any] | None = None) -> Callable[[JSON], Any]:
    """A script answering with `answers` in turn, then with `then` (default: stop)."""
    queue = list(answers)

    def script(opts: JSON) -> Any:
        if queue:
            answer = queue.pop(0)
            return answer(opts) if callable(answer) else answer
        if then is None:
            raise AssertionError("script exhausted")
        return then(opts)

    return script


def stop_then(api: Api, answer: Any = ()) -> Callable[[JSON], Any]:
    def script(opts: JSON) -> Any:
        api.stop()
        return list(answer)

    return script


def events(*steps: Step, duration: float = 5.0) -> list[Step]:
    """A watch stream: the steps, then the server closes it after `duration` seconds."""
    return [*steps, ("TICK", duration)]


# -- list, then watch ------------------------------------------------------------------


async def test_list_then_watch_request_options() -> None:
    """TestReflectorListAndWatch (UseWatchList disabled), TestWatchTimeout."""
    api = Api()
    api.list_script = lambda opts: page("1", pod("foo", "1"))
    api.watch_script = sequence(
        events(("MODIFIED", pod("foo", "2")), ("ADDED", pod("bar", "3"))),
        then=stop_then(api),
    )
    informer, seen = make(api)
    await run(informer)
    assert api.list_calls[0]["resource_version"] == "0"
    assert api.list_calls[0]["limit"] == 500
    first, second = api.watch_calls[:2]
    assert first["resource_version"] == "1" and first["allow_bookmarks"] is True
    assert second["resource_version"] == "3"  # resumed from the last event, no relist
    assert all(300 <= c["timeout_seconds"] < 600 for c in api.watch_calls)
    assert len(api.list_calls) == 1 and api.delays == []
    assert {o["metadata"]["name"]: o["metadata"]["resourceVersion"] for o in informer.store} == {
        "foo": "2",
        "bar": "3",
    }
    assert seen.calls == [("add", "ns/foo", "1"), ("update", "ns/foo", "2"), ("add", "ns/bar", "3")]


async def test_watch_timeouts_are_spread_over_five_to_ten_minutes() -> None:
    """TestWatchTimeout: timeoutSeconds in [minWatchTimeout, 2 * minWatchTimeout)."""
    informer, _ = make(Api())
    timeouts = {informer._watch_timeout_seconds() for _ in range(2000)}
    assert min(timeouts) >= 300 and max(timeouts) < 600
    assert len(timeouts) > 250  # random, not a constant


async def test_watch_events_update_the_store_and_the_resource_version() -> None:
    """TestReflectorWatchHandler: deletes, modifies and adds land in the store; the last
    event's RV is the one resumed from; bookmarks only move the RV."""
    api = Api()
    api.list_script = lambda opts: page("10", pod("foo", "1"), pod("bar", "2"))
    api.watch_script = sequence(
        events(
            ("DELETED", pod("foo", "11")),
            ("MODIFIED", pod("bar", "55")),
            ("ADDED", pod("baz", "32")),
            ("BOOKMARK", {"metadata": {"resourceVersion": "60"}}),
        ),
        then=stop_then(api),
    )
    informer, seen = make(api)
    await run(informer)
    assert sorted(informer.store.keys()) == ["ns/bar", "ns/baz"]
    assert informer.store.get("ns/bar")["metadata"]["resourceVersion"] == "55"  # type: ignore[index]
    assert informer.last_sync_resource_version == "60"
    assert api.watch_calls[1]["resource_version"] == "60"
    assert [v for v, _, _ in seen.calls] == ["add", "add", "delete", "update", "add"]
    assert informer.stats.bookmarks == 1 and informer.stats.events == 3


async def test_list_and_watch_with_errors_keeps_the_store_right() -> None:
    """TestReflectorListAndWatchWithErrors: list errors and watch errors in between;
    every relist leaves the store equal to the list (deletes in the gap delivered)."""
    api = Api()
    api.list_script = sequence(
        page("1"),
        page("3", pod("foo", "2"), pod("bar", "3")),
        INTERNAL,  # a list error: listed again after a backoff
        page("5", pod("bar", "3"), pod("qux", "5")),
        page("5", pod("bar", "3"), pod("qux", "5")),
        page("6", pod("bar", "3"), pod("qux", "5"), pod("baz", "6")),
    )
    api.watch_script = sequence(
        events(("ADDED", pod("foo", "2")), ("ADDED", pod("bar", "3")), EXPIRED),
        events(("DELETED", pod("foo", "4")), ("ADDED", pod("qux", "5")), INTERNAL),
        INTERNAL,  # the watch request itself answered 500: relist
        events(("ADDED", pod("baz", "6")), INTERNAL),
        then=stop_then(api),
    )
    informer, seen = make(api)
    await run(informer)
    assert api.list_rvs() == ["0", "3", "5", "5", "5", "6"]
    assert sorted(informer.store.keys()) == ["ns/bar", "ns/baz", "ns/qux"]
    assert ("delete", "ns/foo", "4") in seen.calls
    # Each relist came after a backoff; relists of unchanged objects told nobody.
    assert len(api.delays) == len(api.list_calls) - 1
    assert [c for c in seen.calls if c[0] == "update"] == []


# -- what a failed watch leads to -------------------------------------------------------


@pytest.mark.parametrize("as_event", [False, True], ids=["http-500", "error-event-500"])
async def test_internal_error_on_watch_relists_after_a_backoff(as_event: bool) -> None:
    """TestRetryInternalError (retries off, client-go's default): a 500 ends
    ListAndWatch; the reflector backs off and relists from the last RV. The relist
    delivers the delete that happened meanwhile, with the last known object."""
    api = Api()
    api.list_script = sequence(
        page("10", pod("a", "5"), pod("b", "6")),
        page("12", pod("b", "6")),  # "a" was deleted while the watch was broken
    )
    failure: Any = [INTERNAL] if as_event else INTERNAL
    api.watch_script = sequence(failure, then=stop_then(api))
    informer, seen = make(api)
    await run(informer)
    assert api.list_rvs() == ["0", "10"]
    assert len(api.watch_calls) == 2 and len(api.delays) == 1
    assert seen.calls[2:] == [("delete", "ns/a", "5")]  # b unchanged: not delivered
    assert informer.stats.errors == 1 and informer.stats.relists == 1


async def test_410_relists_from_the_last_resource_version() -> None:
    """TestReflectorResyncWithResourceVersion: the relist asks for the last RV (never
    back in time), after the usual backoff; an ERROR 410 event and a 410 answer alike."""
    api = Api()
    api.list_script = sequence(
        page("10", pod("a", "1")), page("11", pod("a", "1")), page("12", pod("a", "1"))
    )
    api.watch_script = sequence([EXPIRED], EXPIRED, then=stop_then(api))
    informer, seen = make(api)
    await run(informer)
    assert api.list_rvs() == ["0", "10", "11"]
    assert api.list_calls[1]["limit"] is None  # served by the watch cache: no pagination
    assert informer.stats.expired == 2 and len(api.delays) == 2
    assert seen.calls == [("add", "ns/a", "1")]


async def test_too_many_requests_backs_off_without_relisting() -> None:
    """TestBackoffOnTooManyRequests + TestNoRelistOnTooManyRequests: 429 as an answer or
    as an ERROR event: back off and watch again from the same RV, no relist."""
    api = Api()
    api.watch_script = sequence(THROTTLED, [THROTTLED], THROTTLED, THROTTLED, then=stop_then(api))
    informer, _ = make(api)
    await run(informer)
    assert len(api.list_calls) == 1
    assert len(api.watch_calls) == 5
    assert {c["resource_version"] for c in api.watch_calls} == {"1"}
    assert len(api.delays) == 4 and informer.stats.throttled == 4


async def test_connection_refused_backs_off_exponentially_without_relisting() -> None:
    """TestReflectorListAndWatchInitConnBackoff: refused connections back off (growing
    delays) and the watch resumes from the same RV; no relist."""
    api = Api()
    api.watch_script = sequence(*[refused()] * 5, then=stop_then(api))
    informer, _ = make(api, backoff=Backoff(initial=0.001, cap=0.05, jitter=0))
    await run(informer)
    assert len(api.list_calls) == 1 and len(api.watch_calls) == 6
    assert api.delays == pytest.approx([0.001, 0.002, 0.004, 0.008, 0.016])
    assert informer.stats.refused == 5


async def test_a_very_short_watch_backs_off_and_relists() -> None:
    """handleAnyWatch: closed within 1 s with no event -> VeryShortWatchError -> the
    reflector returns, backs off, relists. Never a tight loop of watches."""
    api = Api()
    api.watch_script = sequence(
        [],  # closes at once
        [("TICK", 0.5)],  # closes after half a second, still nothing
        then=stop_then(api),
    )
    informer, _ = make(api)
    await run(informer)
    assert api.list_rvs() == ["0", "1", "1"]
    assert len(api.delays) == 2 and informer.stats.short_watches == 2


async def test_normal_closes_are_resumed_at_once() -> None:
    """A watch the server ends after its timeout, or one with events however short,
    is resumed from the last RV at once (client-go's watch loop: no backoff)."""
    api = Api()
    api.watch_script = sequence(
        [("TICK", 300.0)],  # the server's timeoutSeconds
        [("ADDED", pod("a", "2"))],  # at once, but with an event
        [("BOOKMARK", {"metadata": {"resourceVersion": "3"}})],  # bookmarks count too
        then=stop_then(api),
    )
    informer, _ = make(api)
    await run(informer)
    assert [c["resource_version"] for c in api.watch_calls] == ["1", "1", "2", "3"]
    assert len(api.list_calls) == 1 and api.delays == []


async def test_a_broken_stream_is_resumed_and_a_silent_start_relists() -> None:
    """EOF / reset / read timeout mid-stream: to client-go the watch ended (resume from
    the last RV); the same within a second and without events is a very short watch."""
    api = Api()
    api.list_script = sequence(page("1"), page("7", pod("a", "2")))
    api.watch_script = sequence(
        events(("ADDED", pod("a", "2")), reset()),
        [reset()],  # broken at once, nothing received
        then=stop_then(api),
    )
    informer, _ = make(api)
    await run(informer)
    assert [c["resource_version"] for c in api.watch_calls] == ["1", "2", "7"]
    assert api.list_rvs() == ["0", "2"]
    assert len(api.delays) == 1


async def test_an_undecodable_event_relists() -> None:
    """StreamWatcher reports a decode error as an InternalError event: relist."""
    try:
        client_module._decode_event(b"{not json")
    except TransportError as err:
        garbage = err
    assert _is_decode_error(garbage)
    api = Api()
    api.watch_script = sequence(events(("ADDED", pod("a", "2")), garbage), then=stop_then(api))
    informer, _ = make(api)
    await run(informer)
    assert api.list_rvs() == ["0", "2"] and len(api.delays) == 1


def test_connection_refused_is_recognised_through_the_cause_chain() -> None:
    assert _is_connection_refused(refused())
    assert not _is_connection_refused(reset())
    assert not _is_connection_refused(TransportError("watch: TimeoutError()"))


# -- lists: pagination, expiry ---------------------------------------------------------


def pods(n: int) -> list[JSON]:
    return [pod(f"pod-{i}", str(i)) for i in range(n)]


async def test_relist_at_a_resource_version_is_not_paginated() -> None:
    """TestReflectorNotPaginatingNotConsistentReads."""
    api = Api()
    api.list_script = sequence(page("10", *pods(4)), page("11", *pods(10)))
    api.watch_script = sequence([EXPIRED], then=stop_then(api))
    informer, _ = make(api)
    await run(informer)
    assert [(c["resource_version"], c["limit"]) for c in api.list_calls] == [
        ("0", 500),
        ("10", None),
    ]
    assert len(informer.store) == 10


async def test_paginated_first_list_keeps_relists_paginated() -> None:
    """TestReflectorPaginatingNonConsistentReadsIfWatchCacheDisabled."""
    api = Api()
    items = pods(10)

    def paged(opts: JSON) -> JSON:
        chunks = {None: (items[0:4], "C1"), "C1": (items[4:8], "C2"), "C2": (items[8:], "")}
        chunk, cont = chunks[opts.get("continue_")]
        return page("10", *chunk, cont=cont)

    api.list_script = paged
    api.watch_script = sequence([EXPIRED], then=stop_then(api))
    informer, _ = make(api, page_size=4)
    await run(informer)
    assert [
        (c.get("resource_version"), c["limit"], c.get("continue_")) for c in api.list_calls
    ] == [
        ("0", 4, None),
        (None, 4, "C1"),
        (None, 4, "C2"),
        ("10", 4, None),
        (None, 4, "C1"),
        (None, 4, "C2"),
    ]
    assert len(informer.store) == 10 and informer.stats.relists == 1


async def test_expired_exact_resource_version_relists_with_a_quorum_read() -> None:
    """TestReflectorExpiredExactResourceVersion: list calls "0", "10", ""."""
    api = Api()
    api.list_script = sequence(page("10", *pods(4)), EXPIRED, page("11", *pods(8)))
    api.watch_script = sequence([EXPIRED], then=stop_then(api))
    informer, _ = make(api)
    await run(informer)
    assert api.list_rvs() == ["0", "10", ""]
    assert len(informer.store) == 8
    assert informer.stats.quorum_lists == 1
    assert api.watch_calls[-1]["resource_version"] == "11"


async def test_an_expired_continue_token_falls_back_to_a_full_list() -> None:
    """TestReflectorFullListIfExpired (client-go's pager, FullListIfExpired): the second
    page's continue token expired -> one unpaginated list at the requested RV; list
    calls "0", "10", "" (the continue), "10" (no limit)."""
    api = Api()
    items = pods(8)

    def lists(opts: JSON) -> JSON | BaseException:
        key = (opts.get("resource_version"), opts.get("continue_"), opts.get("limit"))
        answers: dict[Any, JSON | BaseException] = {
            ("0", None, 4): page("10", *items[0:4], cont="C0"),
            (None, "C0", 4): page("10", *items[4:6]),
            ("10", None, 4): page("11", *items[0:4], cont="C1"),
            (None, "C1", 4): status(410, "Expired", "The provided continue parameter is too old"),
            ("10", None, None): page("11", *items),
        }
        return answers[key]

    api.list_script = lists
    api.watch_script = sequence([EXPIRED], then=stop_then(api))
    informer, _ = make(api, page_size=4)
    await run(informer)
    assert api.list_rvs()[2:] == ["10", None, "10"]
    assert len(informer.store) == 8 and informer.stats.full_lists == 1
    assert informer.last_sync_resource_version == "11"


async def test_an_expired_first_page_continue_falls_back_then_quorum() -> None:
    """A full list that expires too (an exact RV etcd compacted) ends at a quorum list."""
    api = Api()
    api.list_script = sequence(
        page("10", *pods(2), cont="C0"),
        EXPIRED,  # the continue
        EXPIRED,  # the full list at the requested RV
        then=lambda opts: page("12", *pods(3)),
    )
    api.watch_script = stop_then(api)
    informer, _ = make(api, page_size=2)
    await run(informer)
    # "0" paged, continue expired, full list at "0" expired, quorum list at "".
    assert api.list_rvs() == ["0", None, "0", ""]
    assert api.list_calls[2].get("limit") is None and api.list_calls[3]["limit"] == 2
    assert len(informer.store) == 3 and informer.stats.quorum_lists == 1


async def test_too_large_resource_version_relists_from_etcd() -> None:
    """TestReflectorFullListIfTooLarge: the three error formats; list calls
    "0", "20", "", "30", "", "40", ""."""
    api = Api()
    version = [30]

    def too_large(opts: JSON) -> JSON | BaseException:
        rv = opts["resource_version"]
        if rv == "0":
            return page("20")
        if rv == "20":
            return status(
                504,
                "Timeout",
                "Timeout: too large resource version",
                causes=[{"reason": "ResourceVersionTooLarge"}],
            )
        if rv == "30":
            return status(
                504,
                "Timeout",
                "Timeout: too large resource version",
                causes=[{"message": "Too large resource version"}],
            )
        if rv == "40":
            return status(504, "Timeout", "Timeout: Too large resource version")
        assert rv == ""
        version[0] += 10
        return page(str(version[0] - 10))

    api.list_script = too_large
    api.watch_script = sequence([EXPIRED], [EXPIRED], [EXPIRED], then=stop_then(api))
    informer, _ = make(api)
    await run(informer)
    assert api.list_rvs() == ["0", "20", "", "30", "", "40", ""]


# -- what handlers hear after a relist ----------------------------------------------------


async def test_a_relist_of_unchanged_objects_tells_handlers_nothing() -> None:
    """sharedIndexInformer.OnUpdate: same RV = a sync, for resync listeners only."""
    n = 1000
    before = [pod(f"o{i}", str(i)) for i in range(n)]
    after = [dict(o) for o in before[:-1]]  # o999 deleted
    after[0] = pod("o0", "5000")  # o0 changed
    after.append(pod("new", "5001"))
    api = Api()
    api.list_script = sequence(page("2000", *before), page("6000", *after))
    api.watch_script = sequence([INTERNAL], then=stop_then(api))
    informer, seen = make(api)
    await run(informer)
    relist_calls = seen.calls[n:]
    assert sorted(relist_calls) == [
        ("add", "ns/new", "5001"),
        ("delete", "ns/o999", "999"),
        ("update", "ns/o0", "5000"),
    ]
    assert informer.stats.unchanged == n - 2


async def test_a_watch_event_with_an_unchanged_resource_version_is_not_delivered() -> None:
    api = Api()
    api.list_script = lambda opts: page("10", pod("a", "7"))
    api.watch_script = sequence(events(("MODIFIED", pod("a", "7"))), then=stop_then(api))
    informer, seen = make(api)
    await run(informer)
    assert seen.calls == [("add", "ns/a", "7")] and informer.stats.unchanged == 1


async def test_an_update_the_transform_makes_invisible_is_stored_not_delivered() -> None:
    """A new resourceVersion whose transformed object is the cached one's (a heartbeat the
    transform drops) is stored, not delivered; a kept field changing is delivered."""

    def node(rv: str, heartbeat: str, ready: str) -> JSON:
        status = {"heartbeat": heartbeat, "ready": ready}
        return pod("n", rv) | {"apiVersion": "v1", "kind": "ConfigMap", "status": status}

    def no_heartbeat(obj: JSON) -> JSON:
        obj.get("status", {}).pop("heartbeat", None)
        return obj

    api = Api()
    api.list_script = lambda opts: page("10", node("7", "t0", "True"))
    steps = (("MODIFIED", node("8", "t1", "True")), ("MODIFIED", node("9", "t1", "Unknown")))
    api.watch_script = sequence(events(*steps), then=stop_then(api))
    informer, seen = make(api, transform=no_heartbeat)
    await run(informer)
    assert seen.calls == [("add", "ns/n", "7"), ("update", "ns/n", "9")]
    assert informer.stats.unchanged_content == 1
    assert informer.store.get("ns/n")["metadata"]["resourceVersion"] == "9"  # type: ignore[index]


async def test_resync_still_delivers_every_object() -> None:
    api = Api()
    api.list_script = lambda opts: page("10", pod("a", "7"))
    gate = asyncio.Event()

    async def slow_watch(resource: Any, **opts: Any) -> AsyncIterator[tuple[str, JSON]]:
        api.watch_calls.append(opts)
        await gate.wait()
        return
        yield  # pragma: no cover

    api.watch = slow_watch  # type: ignore[method-assign]
    informer, seen = make(api, resync_period=0.01)
    resynced = asyncio.Event()
    seen.on_update = lambda old, new: resynced.set()  # type: ignore[method-assign]
    task = asyncio.create_task(informer.run())
    await asyncio.wait_for(resynced.wait(), 5)
    informer.stop()
    await task
    assert informer.stats.resyncs >= 1 and informer.stats.unchanged == 0


# -- backoff ---------------------------------------------------------------------------


def test_backoff_is_client_gos_delay_with_reset() -> None:
    """wait.Backoff{800ms, x2, jitter 1.0, cap 30s}.DelayWithReset(clock, 2min)."""
    now = [0.0]
    timer = BackoffTimer(Backoff(), clock=lambda: now[0], rand=lambda: 0.0)
    delays = []
    for _ in range(9):
        delays.append(timer.next_delay())
        now[0] += 1
    assert delays == pytest.approx([0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0, 30.0])
    now[0] = 121.0  # more than two minutes since the sequence started
    assert timer.next_delay() == pytest.approx(0.8)
    assert timer.next_delay() == pytest.approx(1.6)


def test_backoff_jitter_stretches_each_delay_up_to_double() -> None:
    """wait.Jitter(d, 1.0) is in [d, 2d): at the cap, 30 to 60 s ("backoff will stop at
    [30,60) sec interval" in reflector.go)."""
    top = BackoffTimer(Backoff(), rand=lambda: 0.999)
    assert top.next_delay() == pytest.approx(0.8 * 1.999)
    for _ in range(10):
        delay = top.next_delay()
    assert delay == pytest.approx(30 * 1.999)
    real = BackoffTimer(Backoff())
    assert 0.8 <= real.next_delay() < 1.6


def test_backoff_resets_every_two_minutes_even_during_an_outage() -> None:
    """backoffManager.Step resets when resetInterval has passed since the last reset."""
    now = [0.0]
    timer = BackoffTimer(Backoff(jitter=0), clock=lambda: now[0])
    seen = []
    while now[0] < 300:
        delay = timer.next_delay()
        seen.append((now[0], delay))
        now[0] += delay
    resets = [t for t, d in seen if d == pytest.approx(0.8)]
    assert resets[0] == 0 and len(resets) == 3  # at 0, after ~2 min, after ~4 min
    assert all(d <= 30 for _, d in seen)


async def test_no_tight_loop_when_every_watch_fails() -> None:
    """Whatever the failure, consecutive attempts are separated by backoff delays."""
    api = Api()
    failures: Iterable[Any] = [INTERNAL, [], refused(), THROTTLED, [EXPIRED], [INTERNAL]] * 3
    api.watch_script = sequence(*failures, then=stop_then(api))
    informer, _ = make(api, backoff=Backoff(jitter=0))
    await run(informer)
    attempts = len(api.watch_calls) - 1
    assert len(api.delays) == attempts  # one backoff per failed watch
    assert api.delays[:6] == pytest.approx([0.8, 1.6, 3.2, 6.4, 12.8, 25.6])
    assert max(api.delays) == pytest.approx(30.0)


async def test_stop_during_backoff_returns() -> None:
    api = Api()
    api.watch_script = lambda opts: INTERNAL
    informer = Informer(api, CONFIGMAPS, namespace="ns")  # type: ignore[arg-type]
    sleeping = asyncio.Event()

    async def sleep(delay: float) -> None:
        sleeping.set()
        await asyncio.sleep(delay)

    informer._sleep = sleep
    task = asyncio.create_task(informer.run())
    await asyncio.wait_for(sleeping.wait(), 5)
    informer.stop()  # it is sleeping 0.8-1.6 s
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 0.5)
    assert task.done() and informer.stats.lists == 1


async def test_informers_sharing_a_list_gate_list_one_at_a_time() -> None:
    """A list holds its whole answer while decoding: with a gate of 1, never two at once."""
    gate = asyncio.Semaphore(1)
    listing: list[int] = []
    most = 0

    class SlowApi(Api):
        async def list(self, resource: Any, **opts: Any) -> JSON:
            nonlocal most
            listing.append(1)
            most = max(most, len(listing))
            await asyncio.sleep(0.01)
            listing.pop()
            return await super().list(resource, **opts)

    informers = []
    for _ in range(3):
        api = SlowApi()
        api.watch_script = stop_then(api)
        informers.append(make(api, list_gate=gate)[0])
    await asyncio.wait_for(asyncio.gather(*(i.run() for i in informers)), 5)
    assert most == 1 and all(i.has_synced for i in informers)
