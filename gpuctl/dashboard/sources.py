"""What the dashboard reads: informer stores, the cost ledger, drivers and metrics.

All in memory. The stores are the operator's own informers (`gpuctl run --ui`) or
the dashboard's (`gpuctl dashboard`); Events come from their own informers (one
per involved kind, field-selected), which are optional: without RBAC to watch
Events the timelines show the status-based history only. The ledger is re-read
when a request goes away (its entry is appended just before) and every
`LEDGER_REFRESH` seconds, never per viewer. `Changes` tells the live stream that
something moved.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable, Iterable
from typing import Any

import aiohttp
import attrs
from prometheus_client import Metric
from prometheus_client.parser import text_string_to_metric_families

from gpuctl.controllers.ledger import Entry, Ledger
from gpuctl.controllers.request.offer import Drivers
from gpuctl.dashboard.fleet import PhaseHistory
from gpuctl.runtime.client import Client
from gpuctl.runtime.store import Store

log = logging.getLogger(__name__)

JSON = dict[str, Any]
LEDGER_REFRESH = 60.0
METRICS_REFRESH = 10.0


class Changes:
    """A change counter with a wake-up: an informer event handler for every store."""

    def __init__(self) -> None:
        self.version = 0
        self._event = asyncio.Event()

    def bump(self) -> None:
        self.version += 1
        self._event.set()

    async def wait(self, timeout: float) -> None:  # noqa: ASYNC109
        """Until the next bump or `timeout` seconds."""
        try:
            async with asyncio.timeout(timeout):
                await self._event.wait()
        except TimeoutError:
            pass
        self._event.clear()

    def on_add(self, obj: JSON) -> None:
        self.bump()

    def on_update(self, old: JSON, new: JSON) -> None:
        self.bump()

    def on_delete(self, obj: JSON) -> None:
        self.bump()


class LedgerCache:
    """The cost ledger's entries, re-read on demand and every `LEDGER_REFRESH` s."""

    def __init__(self, client: Client, namespace: str, changes: Changes) -> None:
        self.client = client
        self.namespace = namespace
        self.changes = changes
        self.entries: list[Entry] = []
        self.error: str | None = None
        self.read_at: datetime.datetime | None = None
        self._wake = asyncio.Event()

    def refresh_soon(self) -> None:
        self._wake.set()

    # an informer handler on the requests: a request leaving (or being deleted)
    # means a ledger entry was (or is about to be) written
    def on_add(self, obj: JSON) -> None:
        pass

    def on_update(self, old: JSON, new: JSON) -> None:
        if new["metadata"].get("deletionTimestamp"):
            self.refresh_soon()

    def on_delete(self, obj: JSON) -> None:
        self.refresh_soon()

    async def refresh(self) -> None:
        try:
            self.entries = await Ledger(self.client, self.namespace).read()
            self.error = None
        except Exception as err:  # keep the last entries; the page says why they are old
            self.error = f"{type(err).__name__}: {err}"[:300]
            log.warning("dashboard: cannot read the cost ledger: %s", self.error)
        self.read_at = datetime.datetime.now(datetime.UTC)
        self.changes.bump()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            await self.refresh()
            try:
                async with asyncio.timeout(LEDGER_REFRESH):
                    await self._wake.wait()
            except TimeoutError:
                pass


class ScrapedMetrics:
    """Metric families of another process's /metrics (the operator's), re-read every 10 s."""

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self.session = session
        self.families: list[Metric] = []
        self.error: str | None = None

    def __call__(self) -> Iterable[Metric]:
        return self.families

    async def run(self) -> None:
        while True:
            try:
                async with self.session.get(self.url) as response:
                    response.raise_for_status()
                    text = await response.text()
                self.families = list(text_string_to_metric_families(text))
                self.error = None
            except (aiohttp.ClientError, TimeoutError, ValueError) as err:
                self.error = f"{type(err).__name__}: {err}"[:300]
            await asyncio.sleep(METRICS_REFRESH)


@attrs.define
class Sources:
    """Everything a snapshot is computed from."""

    requests: Store
    providers: Store
    nodes: Store
    events: list[Store]
    ledger: LedgerCache
    drivers: Drivers
    metrics: Callable[[], Iterable[Metric]]
    phases: PhaseHistory
    changes: Changes
    mode: str  # "operator" (gpuctl run --ui) or "standalone" (gpuctl dashboard)
    events_synced: Callable[[], bool] = lambda: False
    pools: Store | None = None
