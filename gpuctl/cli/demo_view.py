"""The demo's live table of GPUNodeRequests, in place on a terminal or a line per change.

`row_of(obj)` reads what the table shows from a GPUNodeRequest: its name, the
GPU type and count wanted, the capacity type (what was rented once there is an
offer, else what is asked for), the phase, and from `status.offer` the
provider, normalised region and price per hour (the decimal string as given),
then the Node name and the age (kubectl's rounding). A missing value is `-`.
The columns are those of `kubectl get gnr`, except CAPACITY, which shows what
was rented once there is an offer.

Two views share one interface, `update(rows, now)` and `notice(text)`:

- `TerminalView` (stdout is a TTY) redraws the table in place, with the last
  few phase changes under it; a notice is printed above the table and stays.
- `LineView` (a pipe or file) prints the header once, then one table row each
  time a row's content other than its age changes, and `<name> deleted` when a
  request disappears; a notice is a line of its own. Scripts and tests read it.
"""

from __future__ import annotations

import datetime
import shutil
from collections.abc import Sequence
from typing import Any, TextIO

import attrs

Obj = dict[str, Any]

COLUMNS = ("NAME", "GPU", "COUNT", "CAPACITY", "PHASE", "PROVIDER", "REGION", "$/H", "NODE", "AGE")
# Line mode cannot know later rows' widths: pad to these so most rows line up.
LINE_WIDTHS = (18, 10, 5, 17, 12, 10, 10, 6, 32, 5)
RECENT_CHANGES = 6
NONE = "-"


@attrs.frozen
class Row:
    name: str
    gpu: str
    count: str
    capacity: str
    phase: str
    provider: str
    region: str
    price: str
    node: str
    created: datetime.datetime | None

    def cells(self, now: datetime.datetime) -> tuple[str, ...]:
        age = NONE if self.created is None else human_age((now - self.created).total_seconds())
        return (*self.content, age)

    @property
    def content(self) -> tuple[str, ...]:
        """Everything but the age: what a change is."""
        return (
            self.name,
            self.gpu,
            self.count,
            self.capacity,
            self.phase,
            self.provider,
            self.region,
            self.price,
            self.node,
        )


def row_of(obj: Obj) -> Row:
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    status = obj.get("status") or {}
    gpu, offer = spec.get("gpu") or {}, status.get("offer") or {}
    return Row(
        name=str(meta.get("name", NONE)),
        gpu=_text(gpu.get("type")),
        count=_text(gpu.get("count")),
        capacity=_text(offer.get("capacityType") or spec.get("capacityType") or "on-demand"),
        phase=_text(status.get("phase")),
        provider=_text(offer.get("provider")),
        region=_text(offer.get("region")),
        price=_text(
            offer.get("pricePerHour")
        ),  # the decimal string as the cloud gave it, as kubectl shows it
        node=_text(status.get("nodeName")),
        created=_timestamp(meta.get("creationTimestamp")),
    )


def _text(value: object) -> str:
    return NONE if value is None or value == "" else str(value)


def _timestamp(text: object) -> datetime.datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def human_age(seconds: float) -> str:
    """kubectl's AGE (apimachinery's duration.HumanDuration), e.g. 45s, 2m5s, 3h10m, 4d."""
    s = max(0, int(seconds))
    minutes, hours, days = s // 60, s // 3600, s // 86400
    if s < 120:
        return f"{s}s"
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    return f"{days}d"


def table(rows: Sequence[Row], now: datetime.datetime) -> list[str]:
    """The header and one line per row, columns aligned as kubectl aligns them."""
    grid = [COLUMNS, *(row.cells(now) for row in rows)]
    widths = [max(len(line[i]) for line in grid) for i in range(len(COLUMNS))]
    return [_join(line, widths) for line in grid]


def _join(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "   ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()


def phase_changes(before: Sequence[Row], after: Sequence[Row]) -> list[str]:
    """What happened between two tables: `name: created`, `name: Old -> New`, `name: deleted`.

    A request without a phase yet is `new`; one that appears with a phase is
    `created (Phase)`.
    """
    old = {row.name: row.phase for row in before}
    changes = []
    for row in after:
        if row.name not in old:
            changes.append(
                f"{row.name}: created" + ("" if row.phase == NONE else f" ({row.phase})")
            )
        elif old[row.name] != row.phase:
            was = "new" if old[row.name] == NONE else old[row.name]
            changes.append(f"{row.name}: {was} -> {row.phase}")
    now = {row.name for row in after}
    return changes + [f"{name}: deleted" for name in old if name not in now]


@attrs.define
class LineView:
    """A line per change, for pipes and files."""

    out: TextIO
    _last: dict[str, tuple[str, ...]] = attrs.field(factory=dict, init=False)
    _header: bool = attrs.field(default=False, init=False)

    def update(self, rows: Sequence[Row], now: datetime.datetime) -> None:
        for row in rows:
            if self._last.get(row.name) != row.content:
                self._last[row.name] = row.content
                self._print_header()
                self._write(_join(row.cells(now), LINE_WIDTHS))
        for name in [n for n in self._last if n not in {r.name for r in rows}]:
            del self._last[name]
            self._write(f"{name} deleted")

    def notice(self, text: str) -> None:
        self._write(text)

    def close(self) -> None:
        self.out.flush()

    def _print_header(self) -> None:
        if not self._header:
            self._header = True
            self._write(_join(COLUMNS, LINE_WIDTHS))

    def _write(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()


@attrs.define
class TerminalView:
    """The table redrawn in place (ANSI cursor movement), with recent phase changes below."""

    out: TextIO
    _height: int = attrs.field(default=0, init=False)  # lines drawn last time
    _rows: list[Row] = attrs.field(factory=list, init=False)
    _now: datetime.datetime | None = attrs.field(default=None, init=False)
    _changes: list[str] = attrs.field(factory=list, init=False)
    _closed: bool = attrs.field(default=False, init=False)

    def update(self, rows: Sequence[Row], now: datetime.datetime) -> None:
        if self._closed:
            return
        stamp = now.astimezone().strftime("%H:%M:%S")
        self._changes += [f"{stamp}  {c}" for c in phase_changes(self._rows, rows)]
        del self._changes[:-RECENT_CHANGES]
        self._rows, self._now = list(rows), now
        self._redraw()

    def notice(self, text: str) -> None:
        self._erase()
        self.out.write(text + "\n")
        if self._closed:
            self.out.flush()
        else:
            self._redraw()

    def close(self) -> None:
        """Leave the last table on screen; later notices go below it."""
        if not self._closed:
            self._closed = True
            self._height = 0
            self.out.write("\r\x1b[K")  # the line a Ctrl-C echo (^C) may have dirtied
            self.out.flush()

    def _lines(self) -> list[str]:
        if self._now is None:
            return []
        lines = table(self._rows, self._now)
        if self._changes:
            lines += ["", "recent changes:", *(f"  {c}" for c in self._changes)]
        return lines

    def _erase(self) -> None:
        if self._height:
            # Up to the first line of the region, then clear to the end of the screen.
            self.out.write(f"\x1b[{self._height}A\r\x1b[J")
            self._height = 0

    def _redraw(self) -> None:
        self._erase()
        width = max(20, shutil.get_terminal_size().columns - 1)  # no wrap: heights stay exact
        lines = [line[:width] for line in self._lines()]
        self.out.write("".join(line + "\n" for line in lines))
        self.out.flush()
        self._height = len(lines)


View = LineView | TerminalView


def view_for(out: TextIO) -> View:
    return TerminalView(out) if out.isatty() else LineView(out)
