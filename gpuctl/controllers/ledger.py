"""The cost ledger: what each finished request cost, kept after the request is gone.

`status.cost` dies with its GPUNodeRequest, so just before the termination step
releases the finalizer it appends one `Entry` per request (`record(ctx)`): the
request's name and uid, its last offer (provider, cloud, region, instance and GPU
type, capacity type, price), the cost accrued up to the moment the machine was
seen gone, when billing started and ended, and how many attempts and
interruptions it took. `gpuctl cost` reads it back.

Storage: ConfigMaps in the operator's namespace (its Role allows get, create and
update there; no list, no delete), one entry per line of JSON in data key
`entries.jsonl`:

- the head `gpuctl-cost-ledger` takes new entries until it holds `segment_entries`
  entries (500) or `segment_bytes` bytes (512 KiB, half a ConfigMap's limit); the
  next append first copies it whole into an archive slot and starts it afresh;
- archive slots `gpuctl-cost-ledger-1` ... `-<slots>` (8) form a ring: segment
  number `n` goes to slot `(n - 1) % slots + 1`, overwriting segment `n - slots`.
  The head's annotation `gpuctl.io/ledger-next-segment` holds the next segment
  number, each slot's `gpuctl.io/ledger-segment` its own. So the ledger never holds
  more than `(slots + 1) * segment_entries` entries (4,500), the newest kept.

Every write is an update guarded by resourceVersion, retried from a fresh read on
conflict (another process wrote). The workers of one operator share one `Ledger`
(`shared`), which group-commits: entries arriving while a write is in flight go in
the next write together, and the head it last wrote is kept in memory, so a deletion
costs a fraction of one UPDATE and no read or re-parse of the head (before: a GET, a
parse of up to 500 lines and an UPDATE per deletion). Appends are idempotent by request
uid: if the uid is in the head or the newest archived segment (where it lands when
a roll came in between), the append is a no-op, so a crash between the ledger
write and the finalizer release never counts a request twice. A ledger write that
fails raises: the finalizer stays and the reconcile is retried, so deleting a
request never erases what it cost.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import random
import weakref
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

import attrs

from gpuctl.api import GPUNodeRequest, GPUNodeRequestStatus
from gpuctl.controllers import cost
from gpuctl.controllers.request.context import Ctx
from gpuctl.runtime.client import Client, is_already_exists, is_conflict, is_not_found
from gpuctl.runtime.resources import CONFIGMAPS

log = logging.getLogger(__name__)

LEDGER_NAME = "gpuctl-cost-ledger"
DATA_KEY = "entries.jsonl"
NEXT_SEGMENT = "gpuctl.io/ledger-next-segment"
SEGMENT = "gpuctl.io/ledger-segment"
SEGMENT_ENTRIES = 500
SEGMENT_BYTES = 512 * 1024
SLOTS = 8
RETRIES = 20
CONFLICT_JITTER = 0.05  # seconds, at most, before re-reading after a conflict

JSON = dict[str, Any]


class LedgerConflictError(Exception):
    """The head kept changing under us for `RETRIES` attempts."""


def _time(value: datetime.datetime | None) -> str | None:
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def _parse_time(value: object) -> datetime.datetime | None:
    if not value:
        return None
    return datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))


@attrs.frozen
class Entry:
    """One finished request. JSON field names (camelCase) are stable: see docs/cli.md."""

    request: str
    uid: str
    provider: str
    cloud: str
    region: str
    instance_type: str
    gpu_type: str
    gpu_count: int
    capacity_type: str
    price_per_hour: Decimal | None  # None: no offer was current at the end
    accrued_usd: Decimal
    since: datetime.datetime | None  # billing start (status.cost.since)
    until: datetime.datetime  # when the machine was seen gone
    attempts: int
    interruptions: int

    def to_json(self) -> JSON:
        price = self.price_per_hour
        return {
            "request": self.request,
            "uid": self.uid,
            "provider": self.provider,
            "cloud": self.cloud,
            "region": self.region,
            "instanceType": self.instance_type,
            "gpuType": self.gpu_type,
            "gpuCount": self.gpu_count,
            "capacityType": self.capacity_type,
            "pricePerHour": str(price) if price is not None else None,
            "accruedUSD": str(self.accrued_usd),
            "since": _time(self.since),
            "until": _time(self.until),
            "attempts": self.attempts,
            "interruptions": self.interruptions,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Entry:
        """The entry of one ledger line; KeyError/ValueError/TypeError if malformed."""
        price = data.get("pricePerHour")
        until = _parse_time(data["until"])
        if until is None:
            raise ValueError("entry without until")
        return cls(
            request=str(data["request"]),
            uid=str(data["uid"]),
            provider=str(data.get("provider") or ""),
            cloud=str(data.get("cloud") or ""),
            region=str(data.get("region") or ""),
            instance_type=str(data.get("instanceType") or ""),
            gpu_type=str(data.get("gpuType") or ""),
            gpu_count=int(data.get("gpuCount") or 0),
            capacity_type=str(data.get("capacityType") or ""),
            price_per_hour=Decimal(str(price)) if price is not None else None,
            accrued_usd=Decimal(str(data["accruedUSD"])),
            since=_parse_time(data.get("since")),
            until=until,
            attempts=int(data.get("attempts") or 0),
            interruptions=int(data.get("interruptions") or 0),
        )


def final_cost(status: GPUNodeRequestStatus, now: datetime.datetime) -> Decimal:
    """Accrued cost billed up to `now`, as the controller bills: the offer's price while an
    instance is recorded in `status` (the status as read, before this reconcile)."""
    price = None
    if status.offer is not None and status.instance is not None:
        price = status.offer.price_per_hour
    return cost.accrue(status.cost, price, now).accrued_usd


def billed_until(status: GPUNodeRequestStatus, now: datetime.datetime) -> datetime.datetime:
    """Until when `final_cost` bills: `now` while an instance is recorded, else the moment
    billing stopped (`cost.updatedAt`: a machine seen gone is billed until the answer
    that said so, rounded up, which may be after this reconcile's `now`)."""
    if status.offer is not None and status.instance is not None:
        return now
    if status.cost is not None and status.cost.updated_at is not None:
        return status.cost.updated_at
    return now


def entry_of(
    request: GPUNodeRequest, status: GPUNodeRequestStatus, now: datetime.datetime
) -> Entry | None:
    """The ledger entry of a request whose machine is gone; None if nothing was ever chosen.

    `request.status` is the status as read (it decides the last billed interval);
    `status` the working copy (attempts, interruptions). The whole accrued cost is
    attributed to the last offer: status keeps one total across attempts.
    """
    if status.attempt == 0:
        return None
    offer = status.offer or request.status.offer
    failed = status.failed_offers[-1] if status.failed_offers else None
    where = (offer.provider, offer.cloud, offer.region, offer.instance_type) if offer else None
    if where is None and failed is not None:
        # A failed offer records only the native region: leave the normalised one empty.
        where = (failed.provider, "", "", failed.instance_type or "")
    provider, cloud, region, instance_type = where or ("", "", "", "")
    capacity = offer.capacity_type if offer else (failed.capacity_type if failed else None)
    return Entry(
        request=request.name,
        uid=request.metadata.uid or "",
        provider=provider,
        cloud=cloud,
        region=region,
        instance_type=instance_type,
        gpu_type=request.spec.gpu.type,
        gpu_count=request.spec.gpu.count,
        capacity_type=capacity.value if capacity else "",
        price_per_hour=offer.price_per_hour if offer else None,
        accrued_usd=final_cost(request.status, now),
        since=status.cost.since if status.cost is not None else None,
        until=billed_until(request.status, now),
        attempts=status.attempt,
        interruptions=status.interruptions,
    )


def parse_lines(text: str) -> list[Entry]:
    """The entries of a data value; malformed lines are skipped (and logged)."""
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entries.append(Entry.from_json(json.loads(line)))
        except (ValueError, KeyError, TypeError) as err:
            log.warning("cost ledger: skipping malformed line %d: %s", number, err)
    return entries


def render_lines(entries: Iterable[Entry]) -> str:
    return "".join(json.dumps(e.to_json(), separators=(",", ":")) + "\n" for e in entries)


def slot_name(segment: int, slots: int = SLOTS) -> str:
    """The archive ConfigMap that holds segment number `segment` (1, 2, ...)."""
    return f"{LEDGER_NAME}-{(segment - 1) % slots + 1}"


def _data(obj: JSON | None) -> str:
    return str(((obj or {}).get("data") or {}).get(DATA_KEY) or "")


def _annotation(obj: JSON, key: str, default: int) -> int:
    value = ((obj.get("metadata") or {}).get("annotations") or {}).get(key)
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


@attrs.define
class _Head:
    """What this process last wrote to (or read from) the head ConfigMap."""

    resource_version: str  # "" while the head does not exist
    text: str
    segment: int  # the head's NEXT_SEGMENT: the number its content gets when archived
    uids: set[str]
    size: int  # bytes of `text`
    archived: set[str] | None = None  # uids of segment - 1 (the newest archive), read lazily


class _ConflictError(Exception):
    """The head changed under us (or appeared, or vanished): read it again."""


class Ledger:
    """The ledger ConfigMaps of one namespace.

    Appends are group-committed: entries that arrive while a head write is in flight
    wait and go together in the next write, and the head this process last wrote is
    kept (its text, resourceVersion and uids), so an append costs no read and no
    re-parse -- one UPDATE per batch, one more GET only after a conflict (another
    writer) or a failure. `append` returns once its entry's write succeeded.
    """

    def __init__(
        self,
        client: Client,
        namespace: str,
        *,
        segment_entries: int = SEGMENT_ENTRIES,
        segment_bytes: int = SEGMENT_BYTES,
        slots: int = SLOTS,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.segment_entries = segment_entries
        self.segment_bytes = segment_bytes
        self.slots = slots
        self.head_writes = 0  # head creates and updates that succeeded (batches)
        self._head: _Head | None = None
        self._waiting: list[tuple[Entry, asyncio.Future[bool]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def append(self, entry: Entry) -> bool:
        """Add `entry`; False if its uid is already recorded (a retried termination)."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((entry, future))
        if self._flusher is None or self._flusher.done():
            # A task of its own: a cancelled appender does not strand the others.
            self._flusher = asyncio.create_task(self._drain(), name="cost-ledger")
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                results = await self._commit([entry for entry, _ in batch])
            except Exception as err:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(err)
                continue
            for (_, future), added in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(added)

    async def _commit(self, entries: list[Entry]) -> list[bool]:
        for _ in range(RETRIES):
            try:
                head = self._head if self._head is not None else await self._load()
                return await self._write(head, entries)
            except _ConflictError:
                self._head = None
                await asyncio.sleep(random.uniform(0, CONFLICT_JITTER))  # let the winner through
            except BaseException:
                self._head = None  # unknown outcome: read it again next time
                raise
        raise LedgerConflictError(f"ConfigMap {self.namespace}/{LEDGER_NAME} kept changing")

    async def _load(self) -> _Head:
        head = await self._get(LEDGER_NAME)
        if head is None:
            return _Head("", "", 1, set(), 0)
        text = _data(head)
        return _Head(
            str(head["metadata"]["resourceVersion"]),
            text,
            _annotation(head, NEXT_SEGMENT, 1),
            {e.uid for e in parse_lines(text)},
            len(text.encode()),
        )

    async def _write(self, head: _Head, entries: list[Entry]) -> list[bool]:
        """Append what is not recorded yet, rolling the head into the ring when full,
        in one head write; the new head is kept."""
        new = _Head(
            head.resource_version,
            head.text,
            head.segment,
            set(head.uids),
            head.size,
            head.archived,
        )
        results = []
        for entry in entries:
            if await self._recorded(new, entry.uid):
                results.append(False)
                continue
            line = render_lines([entry])
            if new.text and self._full(len(new.uids), new.size + len(line.encode())):
                await self._archive(new.segment, new.text)
                new = _Head(new.resource_version, "", new.segment + 1, set(), 0, new.uids)
            new.text += line
            new.size += len(line.encode())
            new.uids.add(entry.uid)
            results.append(True)
        if any(results):
            new.resource_version = await self._put_head(new)
            self.head_writes += 1
        self._head = new
        return results

    async def _put_head(self, head: _Head) -> str:
        """Create or update (guarded by resourceVersion) the head; its new resourceVersion."""
        body = self._body(LEDGER_NAME, head.text, {NEXT_SEGMENT: str(head.segment)})
        try:
            if not head.resource_version:
                answer = await self.client.create(CONFIGMAPS, body)
            else:
                body["metadata"]["resourceVersion"] = head.resource_version
                answer = await self.client.replace(CONFIGMAPS, body)
        except Exception as err:
            if is_conflict(err) or is_not_found(err) or is_already_exists(err):
                raise _ConflictError() from err
            raise
        return str(answer["metadata"]["resourceVersion"])

    async def read(self) -> list[Entry]:
        """Every entry: archived segments oldest first, then the head."""
        head = await self._get(LEDGER_NAME)
        if head is None:
            return []
        segments: list[tuple[int, str]] = []
        for slot in range(1, self.slots + 1):
            archived = await self._get(f"{LEDGER_NAME}-{slot}")
            if archived is not None:
                segments.append((_annotation(archived, SEGMENT, 0), _data(archived)))
        entries: list[Entry] = []
        for _, text in sorted(segments):
            entries += parse_lines(text)
        return entries + parse_lines(_data(head))

    # -- steps -----------------------------------------------------------------

    def _full(self, count: int, size: int) -> bool:
        return count >= self.segment_entries or size > self.segment_bytes

    async def _recorded(self, head: _Head, uid: str) -> bool:
        """In the head, or in the newest archived segment (where a roll put it)."""
        if uid in head.uids:
            return True
        if head.segment <= 1:
            return False
        if head.archived is None:
            newest = await self._get(slot_name(head.segment - 1, self.slots))
            fresh = newest is not None and _annotation(newest, SEGMENT, 0) == head.segment - 1
            head.archived = {e.uid for e in parse_lines(_data(newest))} if fresh else set()
        return uid in head.archived

    async def _archive(self, segment: int, text: str) -> None:
        """Copy the full head into its ring slot (a retry after a crash writes it again)."""
        name = slot_name(segment, self.slots)
        annotations = {SEGMENT: str(segment)}
        for _ in range(RETRIES):
            if await self._create(name, text, annotations):
                return
            current = await self._get(name)
            if current is None:
                continue
            body = self._body(name, text, annotations)
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            try:
                await self.client.replace(CONFIGMAPS, body)
                return
            except Exception as err:
                if not (is_conflict(err) or is_not_found(err)):
                    raise
        raise LedgerConflictError(f"ConfigMap {self.namespace}/{name} kept changing")

    # -- ConfigMap access --------------------------------------------------------

    def _body(self, name: str, text: str, annotations: Mapping[str, str]) -> JSON:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": {"app.kubernetes.io/name": "gpuctl", "gpuctl.io/ledger": "cost"},
                "annotations": dict(annotations),
            },
            "data": {DATA_KEY: text},
        }

    async def _get(self, name: str) -> JSON | None:
        try:
            return await self.client.get(CONFIGMAPS, name, namespace=self.namespace)
        except Exception as err:
            if is_not_found(err):
                return None
            raise

    async def _create(self, name: str, text: str, annotations: Mapping[str, str]) -> bool:
        """Create the ConfigMap; False if it exists already."""
        try:
            await self.client.create(CONFIGMAPS, self._body(name, text, annotations))
        except Exception as err:
            if is_already_exists(err):
                return False
            raise
        return True


_ledgers: weakref.WeakKeyDictionary[Client, dict[str, Ledger]] = weakref.WeakKeyDictionary()


def shared(client: Client, namespace: str) -> Ledger:
    """The one `Ledger` of this client and namespace: the workers of one operator share
    it, so their appends are batched and never conflict with each other."""
    ledgers = _ledgers.setdefault(client, {})
    if namespace not in ledgers:
        ledgers[namespace] = Ledger(client, namespace)
    return ledgers[namespace]


async def record(ctx: Ctx) -> None:
    """Append the request's final cost to the ledger; called by the termination step
    once the machine is gone and before the finalizer is released."""
    entry = entry_of(ctx.request, ctx.status, ctx.now)
    if entry is None:
        return
    added = await shared(ctx.services.client, ctx.settings.namespace).append(entry)
    if added:
        log.info(
            "cost ledger: %s cost $%s",
            entry.request,
            entry.accrued_usd,
            extra={"request": entry.request, "provider": entry.provider},
        )
