"""`Snapshots`: one list call telling every machine's state, shared by every caller.

A cloud whose rate limit is tight (RunPod: 60 calls a minute) cannot afford a GET per
machine per look: a teardown of 55 machines that each needs a look, a DELETE, a look
that sees it gone and a look-up by name spends four minutes of the budget, and every
confirming look waits behind the others'. A driver with `Snapshots` answers looks that
accept an answer no older than a moment (`get(id, since=T)`, `find_all(name, since=T)`)
from one list of all the account's machines sent at or after T:

- a list already answered and sent at or after T serves the look (no call);
- else a list still in flight and sent at or after T is joined (one call for all);
- else a new list is sent; callers arriving while it is in flight join it.

So a teardown of N machines costs about N DELETEs and a few lists.

Lists are spaced (`spacing`, a driver's choice; RunPod: `LIST_SPACING`): inside a
reconcile, a look that needs a new list less than `spacing` after the last one began is
put off until then (`RateLimitedError`), and whoever comes back first sends the list
the others then join. Every look wants a list sent after its own moment (a reconcile's
start, a poll's due time), so with launches, settle look-ups, polls and teardowns at
every second, RunPod got a list a second: 35-46 of its 60 calls a minute in chaos
seed 5, the creates waiting behind them. A look is at most `spacing` later for it.

The rules that keep the answers exact:

- *Sent at or after T* is measured from the moment the list call began (before its
  rate-limit wait): a lower bound of when the cloud computed the answer.
- *After our own terminate.* A look at a machine this driver terminated wants an answer
  sent after the cloud accepted the terminate (`terminated()`), whatever T the caller
  gave: an older list still shows the machine live, and serving it again and again
  would never see it go.
- *Gone* is a state the list shows as gone (the driver's mapping, e.g. RunPod's
  TERMINATED), or the absence of a machine an earlier list showed: a list whose call
  began after the answer of an earlier list that showed the machine, and which does not
  show it, says the cloud no longer has it. So is the absence from a list sent after
  the moment the caller says lists show the machine (`listed_by`: a machine that ran
  long enough before it; a process restarted after a mass teardown would otherwise ask
  for every machine it never listed by id). Any other machine no list has shown may
  be too new for the cloud's listing (clouds list eventually consistently; reads by id
  see a new machine at once): its look falls back to the driver's GET, never "gone"
  from a list. Machines in every other state (preempted, stopped, failed) are answered as
  the list shows them: they bill and must be seen.
- A look-up by name from a list is the look-up the cloud's name filter would give at the
  list's time: every machine with exactly that name in any state but gone.

Rate limits: inside `ratelimit.nonblocking()` (the controllers' reconciles) the list
runs under its own holder, `snapshot/<provider>`, as a `priority()` call (one list
answers every look waiting on it: it goes ahead of the queued terminates and polls,
each of which waits one slot longer): a list that must wait for a slot raises
`RateLimitedError` to every caller waiting on it and keeps ONE reserved slot, claimed
by whichever caller comes back first; every caller that comes back before the list's
answer joins it. Inside `spare_only()` the list goes only with a spare
token (callers joining it then come back when one is spare). In blocking mode the
list waits for its token inside the shared call. A look inside a reconcile waits at
most `JOIN_WAIT` for a list in flight and is then put off like a rate-limited call
(`RateLimitedError`, `JOIN_RETRY`); the list goes on and serves it when it comes back:
a list that hangs (a timeout) does not hold every reconcile worker waiting on it.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Awaitable, Callable, Iterable, Mapping

import attrs

from gpuctl.providers.base import Instance, NotFoundError, RateLimitedError
from gpuctl.providers.errors import preferred
from gpuctl.providers.ratelimit import current_holder, nonblocking, priority

Clock = Callable[[], datetime.datetime]
# Inside a reconcile, how long a look waits for a list in flight before it is put off
# (requeued, as for a rate-limit slot) for JOIN_RETRY seconds: a list that hangs until
# the request timeout (30 s) would otherwise hold every worker whose look joined it.
JOIN_WAIT = 2.0
JOIN_RETRY = 3.0
# Gone machines and accepted terminates are remembered this long (a late look at an
# old machine falls back to a GET), so the memory stays small however long gpuctl runs.
REMEMBER = datetime.timedelta(hours=1)


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _retrieve(task: asyncio.Future[Listing]) -> None:
    if not task.cancelled():
        task.exception()


@attrs.frozen
class Listing:
    """One answer of the list call: every machine of the account, by id."""

    sent: datetime.datetime  # when the call began: the cloud answered after it
    received: datetime.datetime
    instances: Mapping[str, Instance]


class Snapshots:
    """The latest list of one account's machines, shared by every look (module docstring).

    `fetch` lists every machine of the account, in every state the cloud lists;
    `is_gone` says which listed states are gone for good; `fallback` is the driver's GET.
    """

    def __init__(
        self,
        provider: str,
        fetch: Callable[[], Awaitable[list[Instance]]],
        is_gone: Callable[[Instance], bool],
        fallback: Callable[[str], Awaitable[Instance]],
        *,
        clock: Clock = _utcnow,
        spacing: float = 0.0,
    ) -> None:
        self.provider = provider
        self._fetch = fetch
        self._is_gone = is_gone
        self._fallback = fallback
        self.clock = clock
        self.spacing = datetime.timedelta(seconds=spacing)
        self._began: datetime.datetime | None = None  # when the last list call began
        self._latest: Listing | None = None
        self._inflight: tuple[datetime.datetime, asyncio.Future[Listing]] | None = None
        self._listed: dict[str, datetime.datetime] = {}  # id -> first listing answer showing it
        self._gone: dict[str, datetime.datetime] = {}  # id -> when it was seen gone
        self._terminated: dict[str, datetime.datetime] = {}  # id -> terminate accepted

    # -- what the driver tells ----------------------------------------------------------

    def terminated(self, instance_id: str) -> None:
        """The cloud accepted a terminate of `instance_id` now: older answers are stale."""
        self._terminated[instance_id] = self.clock()

    def gone(self, instance_id: str) -> None:
        """The driver learnt otherwise that the cloud no longer has `instance_id`."""
        self._gone[instance_id] = self.clock()

    def observe(self, sent: datetime.datetime, instances: Iterable[Instance]) -> None:
        """A list of every machine of the account the driver made itself, sent at `sent`."""
        self._record(Listing(sent, self.clock(), {i.id: i for i in instances if i.id}))

    # -- looks --------------------------------------------------------------------------

    async def look(
        self,
        instance_id: str,
        since: datetime.datetime | None,
        listed_by: datetime.datetime | None = None,
    ) -> Instance:
        """A driver's `get`: with `since`, from a shared list (`get`); without, a call of
        its own (the driver's GET)."""
        if since is None:
            return await self._fallback(instance_id)
        return await self.get(instance_id, since, listed_by)

    async def list_every(self) -> list[Instance]:
        """Every machine of the account, from a list sent less than `spacing` ago, the
        list in flight or a new one (never put off by `spacing`), recorded as a snapshot:
        the credential check, the leak collector and a restarted process's first looks
        share one list (chaos seeds 6 and 7 had three in the same second of every
        restart, under RunPod's 60 calls a minute; the sim answers in 30 ms, so most did
        not overlap). A caller outside a reconcile waits for its token inline: a joined
        list that was rate limited is not its answer, it sends its own."""
        now = self.clock()
        latest, inflight = self._latest, self._inflight
        if latest is not None and now - latest.sent < self.spacing and self._news(latest.sent):
            return list(latest.instances.values())
        since = inflight[0] if inflight is not None and self._news(inflight[0]) else now
        try:
            listing = await self.listing(since, spaced=False)
        except RateLimitedError:
            if current_holder() is not None:
                raise
            sent = self._began = self.clock()
            every = await self._fetch()
            self.observe(sent, every)
            return every
        return list(listing.instances.values())

    def _news(self, sent: datetime.datetime) -> bool:
        """A list sent at `sent` is newer than every terminate this driver had accepted
        (never older news than our own terminate, module docstring: a leak collector
        would count a machine torn down since as unowned)."""
        return all(accepted < sent for accepted in self._terminated.values())

    async def get(
        self,
        instance_id: str,
        since: datetime.datetime,
        listed_by: datetime.datetime | None = None,
    ) -> Instance:
        """The machine as a list sent at or after `since` (and after our own terminate of
        it) shows it; NotFoundError when gone. Not shown by a list that showed it before,
        or by one sent after `listed_by` (the caller knows lists show it from then on):
        gone. Else (maybe too new to be listed) the driver's GET."""
        if instance_id in self._gone:
            raise NotFoundError(f"{instance_id} is gone", code="gone", provider=self.provider)
        terminated = self._terminated.get(instance_id)
        if terminated is not None:  # strictly after it
            since = max(since, terminated + datetime.timedelta(microseconds=1))
        listing = await self.listing(since)
        found = listing.instances.get(instance_id)
        if found is not None:
            return found
        if listed_by is not None and listing.sent >= listed_by:
            self._gone.setdefault(instance_id, listing.received)
        if instance_id in self._gone:
            raise NotFoundError(f"{instance_id} is gone", code="gone", provider=self.provider)
        try:  # maybe too new to be listed
            found = await self._fallback(instance_id)
        except NotFoundError:
            self.gone(instance_id)  # the next look needs no call
            raise
        if self._is_gone(found):
            self.gone(instance_id)
        return found

    async def find_all(self, name: str, since: datetime.datetime) -> list[Instance]:
        """Every machine named `name` a list sent at or after `since` shows not gone, and
        not seen gone since: a list that waited for its rate-limit token inline (the leak
        collector's) is recorded with the moment it began, so the latest list by that
        moment may be older news than one recorded after it. Without this, a teardown
        saw its machine gone, then found it live by name in the older list, recorded and
        billed it again, and around (one request $1.02 over in chaos seed 5)."""
        listing = await self.listing(since)
        return preferred(
            i
            for i in listing.instances.values()
            if i.name == name and not self._is_gone(i) and i.id not in self._gone
        )

    async def listing(self, since: datetime.datetime, *, spaced: bool = True) -> Listing:
        """A list sent at or after `since`: the latest, the one in flight, or a new one
        (put off by `spacing` unless not `spaced`). A list this call starts serves it
        whatever `since` says (nothing is fresher)."""
        if self._latest is not None and self._latest.sent >= since:
            return self._latest
        if self._inflight is None or self._inflight[0] < since:
            if spaced:
                self._space_out()
            sent = self._began = self.clock()
            task = asyncio.ensure_future(self._list(sent))
            task.add_done_callback(_retrieve)  # every caller may have gone away
            self._inflight = (sent, task)
        # A caller cancelled (its reconcile timed out) must not cancel the others' list.
        shared = asyncio.shield(self._inflight[1])
        if current_holder() is None:
            return await shared
        try:  # a reconcile: a list that hangs must not hold every worker waiting on it
            return await asyncio.wait_for(shared, JOIN_WAIT)
        except TimeoutError:
            raise RateLimitedError(
                f"{self.provider}: the shared list is still in flight",
                retry_after=JOIN_RETRY,
                provider=self.provider,
            ) from None

    def _space_out(self) -> None:
        """Inside a reconcile, put off a look whose new list would begin less than
        `spacing` after the last one (module docstring)."""
        if current_holder() is None or self._began is None:
            return
        left = (self._began + self.spacing - self.clock()).total_seconds()
        if left > 0:
            raise RateLimitedError(
                f"{self.provider}: the next shared list goes in {left:.1f}s",
                retry_after=left,
                provider=self.provider,
            )

    async def _list(self, sent: datetime.datetime) -> Listing:
        try:
            if current_holder() is None:
                instances = await self._fetch()
            else:
                with nonblocking(f"snapshot/{self.provider}"), priority():
                    instances = await self._fetch()
            listing = Listing(sent, self.clock(), {i.id: i for i in instances if i.id})
            self._record(listing)
            return listing
        finally:
            if self._inflight is not None and self._inflight[1] is asyncio.current_task():
                self._inflight = None

    def _record(self, listing: Listing) -> None:
        if self._latest is None or listing.sent >= self._latest.sent:
            self._latest = listing
        for instance_id, instance in listing.instances.items():
            if self._is_gone(instance):
                self._gone.setdefault(instance_id, listing.received)
            else:
                self._listed.setdefault(instance_id, listing.received)
        # Shown by a list answered before this one began, and not shown now: gone.
        for instance_id, shown in list(self._listed.items()):
            if instance_id not in listing.instances and shown <= listing.sent:
                self._gone.setdefault(instance_id, listing.received)
        for instance_id in self._gone:
            self._listed.pop(instance_id, None)
        self._expire(listing.received)

    def _expire(self, now: datetime.datetime) -> None:
        for memory in (self._gone, self._terminated):
            for key in [k for k, t in memory.items() if now - t > REMEMBER]:
                del memory[key]
