"""Standard cron schedules (five fields, UTC), as Karpenter's budgets read them.

Karpenter parses `budgets[].schedule` with robfig/cron's `ParseStandard` under
`TZ=UTC`: minute, hour, day of month, month, day of week; `*`, `?`, lists, ranges,
steps and month/day names; the descriptors `@yearly` `@annually` `@monthly`
`@weekly` `@daily` `@midnight` `@hourly`. Written here (about a hundred lines) rather
than taken from a library because only "did the schedule fire in this window" is
needed and robfig's exact day rule matters: when day-of-month or day-of-week is a
bare `*`/`?`, both fields must match; otherwise either one may.
"""

from __future__ import annotations

import datetime

import attrs

_DESCRIPTORS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
# (low, high, names) per field, in order.
_FIELDS: tuple[tuple[int, int, dict[str, int]], ...] = (
    (0, 59, {}),
    (0, 23, {}),
    (1, 31, {}),
    (1, 12, {name: i + 1 for i, name in enumerate(_MONTHS)}),
    (0, 6, {name: i for i, name in enumerate(_DAYS)}),
)
MINUTE = datetime.timedelta(minutes=1)


class CronError(ValueError):
    pass


@attrs.frozen
class Schedule:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool  # day of month was a bare * or ?
    any_weekday: bool

    def day_matches(self, when: datetime.datetime) -> bool:
        if when.month not in self.months:
            return False
        dom = when.day in self.days
        dow = (when.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return dom and dow
        return dom or dow

    def matches(self, when: datetime.datetime) -> bool:
        return self.day_matches(when) and when.hour in self.hours and when.minute in self.minutes

    def fired_within(self, start: datetime.datetime, end: datetime.datetime) -> bool:
        """Whether the schedule fires at a whole minute t with start < t <= end (UTC)."""
        t = start.astimezone(datetime.UTC).replace(second=0, microsecond=0) + MINUTE
        end = end.astimezone(datetime.UTC)
        while t <= end:
            if not self.day_matches(t):  # skip to the next midnight
                t = t.replace(hour=0, minute=0) + datetime.timedelta(days=1)
            elif t.hour not in self.hours:  # skip to the next hour
                t = t.replace(minute=0) + datetime.timedelta(hours=1)
            elif t.minute in self.minutes:
                return True
            else:
                t += MINUTE
        return False


def parse(expr: str) -> Schedule:
    text = _DESCRIPTORS.get(expr.strip().lower(), expr)
    fields = text.split()
    if len(fields) != 5:
        raise CronError(
            f"{expr!r}: want 5 fields (minute hour day month weekday), got {len(fields)}"
        )
    values: list[frozenset[int]] = []
    stars: list[bool] = []
    for field, (low, high, names) in zip(fields, _FIELDS, strict=True):
        found, star = _field(field.lower(), low, high, names)
        values.append(found)
        stars.append(star)
    minutes, hours, days, months, weekdays = values
    return Schedule(minutes, hours, days, months, weekdays, any_day=stars[2], any_weekday=stars[4])


def _field(field: str, low: int, high: int, names: dict[str, int]) -> tuple[frozenset[int], bool]:
    found: set[int] = set()
    star = False
    for part in field.split(","):
        values, part_star = _range(part, low, high, names)
        found |= values
        star = star or part_star
    return frozenset(found), star


def _range(part: str, low: int, high: int, names: dict[str, int]) -> tuple[set[int], bool]:
    span, _, step_text = part.partition("/")
    step = _number(step_text, 1, 1_000_000, {}) if step_text else 1
    if span in ("*", "?"):
        start, end = low, high
    elif "-" in span:
        first, _, last = span.partition("-")
        start, end = _number(first, low, high, names), _number(last, low, high, names)
    else:
        start = _number(span, low, high, names)
        end = high if step_text else start  # "5/15" means 5-max/15, as robfig reads it
    if start > end:
        raise CronError(f"{part!r}: range start {start} is after its end {end}")
    return set(range(start, end + 1, step)), span in ("*", "?") and step == 1


def _number(text: str, low: int, high: int, names: dict[str, int]) -> int:
    if text in names:
        return names[text]
    if not text.isdigit():
        raise CronError(f"{text!r} is not a number")
    value = int(text)
    if not low <= value <= high:
        raise CronError(f"{value} is out of range [{low}, {high}]")
    return value
