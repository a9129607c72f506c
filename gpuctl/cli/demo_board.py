"""The demo's board: a watch on every GPUNodeRequest, drawn by a view, waited upon.

`Board.run()` runs an informer on GPUNodeRequests (all of them: requests the
user applies alongside the samples show up too) and redraws the view after
each change, and every `tick` seconds so ages advance. Rows are ordered by
creation time, then name. `wait(check)` returns once `check()` holds after a
redraw — `all_ready`: each of the demo's own requests is in phase Ready;
`next_draw()` returns after the next redraw (a change, or a tick).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import Callable, Sequence
from typing import Any

from gpuctl.cli.demo_view import Row, View, row_of
from gpuctl.controllers.resources import GPUNODEREQUESTS
from gpuctl.runtime.client import Client
from gpuctl.runtime.informer import Informer, drop_managed_fields

Obj = dict[str, Any]
READY = "Ready"


class Board:
    def __init__(
        self, client: Client, names: Sequence[str], view: View, *, tick: float = 1.0
    ) -> None:
        self.names = list(names)  # the demo's own requests; set once they are applied
        self.view = view
        self.tick = tick
        self.informer = Informer(
            client, GPUNODEREQUESTS, name="demo-board", transform=drop_managed_fields
        )
        self.informer.add_handler(self)
        self._changed = asyncio.Event()
        self._drawn = asyncio.Event()

    # -- informer handler: only wake the drawing loop ----------------------------------

    def on_add(self, obj: Obj) -> None:
        self._changed.set()

    def on_update(self, old: Obj, new: Obj) -> None:
        self._changed.set()

    def on_delete(self, obj: Obj) -> None:
        self._changed.set()

    # -- what the demo asks ------------------------------------------------------------

    def rows(self) -> list[Row]:
        objects = sorted(
            self.informer.store.list(),
            key=lambda o: (o["metadata"].get("creationTimestamp", ""), o["metadata"]["name"]),
        )
        return [row_of(obj) for obj in objects]

    def all_ready(self) -> bool:
        phases = {row.name: row.phase for row in self.rows()}
        return all(phases.get(name) == READY for name in self.names)

    async def wait(self, check: Callable[[], bool]) -> None:
        """Return once `check()` holds after a redraw (or at once if it holds now)."""
        while not (self.informer.has_synced and check()):
            await self._drawn.wait()

    async def next_draw(self) -> None:
        """Return after the next redraw (a change, or a tick) — or two ticks at most,
        so a caller polling with it goes on even if the drawing loop has ended."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drawn.wait(), 2 * self.tick)

    # -- the loop ----------------------------------------------------------------------

    async def run(self) -> None:
        informer = asyncio.create_task(self.informer.run(), name="demo-board-informer")
        try:
            await self.informer.wait_synced()
            while True:
                self._draw()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), self.tick)
                self._changed.clear()
        finally:
            self.informer.stop()
            await informer

    def _draw(self) -> None:
        self.view.update(self.rows(), datetime.datetime.now(datetime.UTC))
        drawn, self._drawn = self._drawn, asyncio.Event()
        drawn.set()  # wake the waiters of this round; later ones wait for the next
