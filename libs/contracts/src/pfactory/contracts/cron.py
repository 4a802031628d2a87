"""Cron schedules read in a time zone: parsing, and when they fire, across daylight-saving changes.

One parser for the whole platform: config validation, the embedded cron runner and the generated DAGs'
documentation all read a ``Cron`` through :func:`parse_cron`, so what is accepted is what runs.

Fields are the classic five (minute, hour, day of month, month, day of week) with ``*``, numbers,
names (``jan``-``dec``, ``sun``-``sat``), ranges ``a-b``, steps ``*/n`` / ``a-b/n`` / ``a/n`` and
lists; 0 and 7 are both Sunday; the macros ``@hourly``, ``@daily`` (``@midnight``), ``@weekly``,
``@monthly`` and ``@yearly`` (``@annually``). As in Vixie cron (and croniter, which Airflow uses), when
both day of month and day of week are restricted a day matching either one fires.

The schedule is read in wall-clock time of its zone. Across a daylight-saving change:

* a time the clocks skip (02:30 when 02:00 jumps to 03:00) fires once, at the first instant after the
  gap (03:00 new time), as Vixie cron runs jobs whose time was skipped; several skipped times fire once;
  a day skipped whole (Samoa, 30 December 2011) has no firing;
* a time the clocks repeat (01:30 when 02:00 falls back to 01:00) fires once, at its first occurrence.

So a daily schedule fires exactly once on every local day that exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo

MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (  # name, low, high, names
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day-of-month", 1, 31, {}),
    ("month", 1, 12, {name: i + 1 for i, name in enumerate(_MONTHS)}),
    ("day-of-week", 0, 7, {name: i for i, name in enumerate(_DAYS)}),
)
_HORIZON_DAYS = 366 * 9  # 29 February can be 8 years away (2096 -> 2104)


class CronError(ValueError):
    """A cron expression that cannot be read, or that never fires; the message says what to change."""


@dataclass(frozen=True)
class CronSchedule:
    """A parsed cron expression: the allowed values of each field."""

    text: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days_of_month: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]  # 0 = Sunday
    day_of_month_restricted: bool
    day_of_week_restricted: bool

    def runs_on(self, day: date) -> bool:
        """Whether the schedule fires on ``day`` (a local calendar day)."""
        if day.month not in self.months:
            return False
        in_month = day.day in self.days_of_month
        in_week = (day.isoweekday() % 7) in self.days_of_week
        if self.day_of_month_restricted and self.day_of_week_restricted:
            return in_month or in_week
        return in_month and in_week

    def next_after(self, after: datetime, zone: tzinfo) -> datetime:
        """The first firing strictly after ``after``, as an aware UTC datetime.

        Args:
            after: an aware instant.
            zone: the time zone the schedule is read in.

        Raises:
            CronError: ``after`` is naive, or the schedule does not fire within nine years.
        """
        if after.tzinfo is None or after.utcoffset() is None:
            raise CronError(f"next_after needs an aware datetime, got naive {after.isoformat()}")
        after = after.astimezone(UTC)
        start = after.astimezone(zone).replace(tzinfo=None, fold=0)
        # the day before too: a wall time of yesterday's date can still be ahead of a repeated hour
        first_day = start.date() - timedelta(days=1)
        for offset in range(_HORIZON_DAYS):
            day = first_day + timedelta(days=offset)
            if not self.runs_on(day):
                continue
            for hour in self.hours:
                for minute in self.minutes:
                    wall = datetime.combine(day, time(hour, minute))
                    if wall < start - timedelta(hours=3):  # no zone moves clocks back further
                        continue
                    instant = fire_instant(wall, zone)
                    if instant is not None and instant > after:
                        return instant
        raise CronError(f"cron expression '{self.text}' does not fire within nine years of {after.date()}")

    def firings(self, start: datetime, end: datetime, zone: tzinfo) -> list[datetime]:
        """Every firing in ``(start, end]``, oldest first, as aware UTC datetimes."""
        found: list[datetime] = []
        current = start
        while True:
            current = self.next_after(current, zone)
            if current > end:
                return found
            found.append(current)


def fire_instant(wall: datetime, zone: tzinfo) -> datetime | None:
    """The instant (UTC) a schedule fires for the naive local time ``wall``: its first occurrence; for a
    time the clocks skip, the first instant after the gap; None when the rest of its day was skipped."""
    probe = wall
    while not _exists(probe, zone):
        probe += timedelta(minutes=1)
        if probe.date() != wall.date():
            return None
    return probe.replace(tzinfo=zone, fold=0).astimezone(UTC)


def _exists(wall: datetime, zone: tzinfo) -> bool:
    """Whether the naive local time ``wall`` happens in ``zone`` (it does not inside a skipped gap)."""
    aware = wall.replace(tzinfo=zone, fold=0)
    return aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == wall


def local_midnight(day: date, zone: tzinfo) -> datetime:
    """The instant (UTC) ``day`` starts in ``zone`` (after the gap, where midnight is skipped).

    Raises:
        CronError: the zone skipped that whole day.
    """
    instant = fire_instant(datetime.combine(day, time()), zone)
    if instant is None:
        raise CronError(f"{day} does not exist in {zone}: the clocks skipped it")
    return instant


def parse_cron(text: str) -> CronSchedule:
    """Read a 5-field cron expression or a macro.

    Raises:
        CronError: what is wrong, which field, and what would be accepted.
    """
    expression = " ".join(text.split())
    fields_text = MACROS.get(expression.lower(), expression).split()
    if len(fields_text) != 5:
        raise CronError(
            f"cron expression '{text}' has {len(fields_text)} field{'' if len(fields_text) == 1 else 's'}; "
            "it needs 5 (minute hour day-of-month "
            f"month day-of-week), e.g. '0 6 * * *' for 06:00 every day, or one of {', '.join(MACROS)}"
        )
    values = [_field(part, *spec) for part, spec in zip(fields_text, _FIELDS, strict=True)]
    minutes, hours, days_of_month, months, days_of_week = values
    schedule = CronSchedule(
        text=expression,
        minutes=tuple(sorted(minutes)),
        hours=tuple(sorted(hours)),
        days_of_month=frozenset(days_of_month),
        months=frozenset(months),
        days_of_week=frozenset(d % 7 for d in days_of_week),
        day_of_month_restricted=not fields_text[2].startswith("*"),
        day_of_week_restricted=not fields_text[4].startswith("*"),
    )
    if not any(schedule.runs_on(date(2024, 1, 1) + timedelta(days=i)) for i in range(366 * 8)):
        raise CronError(
            f"cron expression '{text}' never fires: no day has day-of-month {fields_text[2]} in month "
            f"{fields_text[3]} (e.g. 30 February); pick a day those months have"
        )
    return schedule


def _field(text: str, name: str, low: int, high: int, names: dict[str, int]) -> set[int]:
    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) < 1:
                raise CronError(
                    f"{name} step '/{step_text}' in '{text}' must be a whole number of at least 1"
                )
            step = int(step_text)
        if base == "*":
            first, last = low, high
        elif "-" in base:
            a, _, b = base.partition("-")
            first, last = _value(a, name, low, high, names), _value(b, name, low, high, names)
            if first > last:
                raise CronError(f"{name} range '{base}' runs backwards; write it as '{b}-{a}' or as a list")
        else:
            first = _value(base, name, low, high, names)
            last = high if step_text else first  # 'a/n': from a to the end, every n
        values.update(range(first, last + 1, step))
    return values


def _value(token: str, name: str, low: int, high: int, names: dict[str, int]) -> int:
    if token.lower() in names:
        return names[token.lower()]
    if not token.isdigit():
        hint = f" or a name ({', '.join(names)})" if names else ""
        raise CronError(f"{name} value '{token}' is not a number from {low} to {high}{hint}")
    value = int(token)
    if not low <= value <= high:
        raise CronError(f"{name} value {value} is out of range {low}-{high}")
    return value
