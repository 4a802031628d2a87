"""Cron schedules in a time zone: parsing errors, and firings checked against a minute-by-minute oracle,
across daylight-saving changes (gaps and repeated hours), half-hour shifts and a skipped day."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pfactory.contracts.cron import CronError, CronSchedule, local_midnight, parse_cron
from tests.contracts.support import MINIMAL_MODEL, only_issue

ZONES = [
    "UTC",
    "America/New_York",  # 02:00 -> 03:00 in March, 02:00 -> 01:00 in November
    "Europe/London",
    "Australia/Lord_Howe",  # half-hour daylight saving
    "America/Sao_Paulo",  # had daylight saving starting at midnight (midnight skipped) until 2019
    "Pacific/Apia",  # skipped 30 December 2011 entirely
    "Asia/Kolkata",
]
EXPRESSIONS = [
    "0 6 * * *",
    "30 2 * * *",  # inside New York's spring gap and its autumn repeat
    "*/20 1-3 * * *",
    "0 0 * * *",
    "15,45 * * * *",
    "0 12 1,15 * mon",  # day of month OR day of week
    "0 9 * * 1-5",
    "@hourly",
    "0 0 29 2 *",
]


def _matches(schedule: CronSchedule, wall: datetime) -> bool:
    return schedule.runs_on(wall.date()) and wall.hour in schedule.hours and wall.minute in schedule.minutes


def _oracle_next(
    schedule: CronSchedule, after: datetime, zone: ZoneInfo, limit_minutes: int
) -> datetime | None:
    """Walk UTC minute by minute: a minute fires when its local time matches and is the first occurrence,
    or when it ends a gap in which a skipped local time matched."""
    instant = after.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    previous = (instant - timedelta(minutes=1)).astimezone(zone)
    for _ in range(limit_minutes):
        local = instant.astimezone(zone)
        wall = local.replace(tzinfo=None, fold=0)
        fires = local.fold == 0 and _matches(schedule, wall)
        skipped_from = previous.replace(tzinfo=None, fold=0) + timedelta(minutes=1)
        if not fires and skipped_from < wall:  # the clocks jumped over [skipped_from, wall)
            probe = skipped_from
            while probe < wall and not fires:  # a skipped time fires on its own day only
                fires = _matches(schedule, probe) and probe.date() == wall.date()
                probe += timedelta(minutes=1)
        if fires and instant > after:
            return instant
        previous, instant = local, instant + timedelta(minutes=1)
    return None


@settings(max_examples=150, deadline=None)
@given(
    zone_name=st.sampled_from(ZONES),
    expression=st.sampled_from(EXPRESSIONS),
    after=st.datetimes(
        min_value=datetime(2005, 1, 1), max_value=datetime(2035, 12, 31), timezones=st.just(UTC)
    ),
)
def test_next_firing_equals_a_minute_by_minute_walk(zone_name: str, expression: str, after: datetime) -> None:
    schedule, zone = parse_cron(expression), ZoneInfo(zone_name)
    ours = schedule.next_after(after, zone)
    assert ours > after and ours.tzinfo is UTC
    limit = int((ours - after).total_seconds() // 60) + 2
    if limit <= 60 * 24 * 40:  # the oracle is slow: leap-day schedules are checked by the parts below
        assert _oracle_next(schedule, after, zone, limit) == ours


@pytest.mark.parametrize("zone_name", ["America/New_York", "Europe/London", "Australia/Lord_Howe"])
@pytest.mark.parametrize("year", [2021, 2026])
@pytest.mark.parametrize("expression", ["30 2 * * *", "0 1 * * *", "45 0 * * *"])
def test_a_daily_schedule_fires_once_on_every_local_day_through_both_changes(
    zone_name: str, year: int, expression: str
) -> None:
    zone = ZoneInfo(zone_name)
    schedule = parse_cron(expression)
    start = datetime(year, 1, 1, tzinfo=zone).astimezone(UTC)
    firings = schedule.firings(start, datetime(year + 1, 1, 1, tzinfo=zone).astimezone(UTC), zone)
    days = [f.astimezone(zone).date() for f in firings]
    assert len(days) == len(set(days)) == (date(year + 1, 1, 1) - date(year, 1, 1)).days


def test_a_skipped_time_fires_right_after_the_gap_and_a_repeated_one_once() -> None:
    zone = ZoneInfo("America/New_York")
    spring = parse_cron("30 2 * * *").next_after(datetime(2026, 3, 8, 5, 0, tzinfo=UTC), zone)
    assert spring.astimezone(zone).replace(tzinfo=None) == datetime(2026, 3, 8, 3, 0)  # 02:30 never happens
    autumn = parse_cron("30 1 * * *").firings(
        datetime(2026, 10, 31, 12, tzinfo=UTC), datetime(2026, 11, 2, 12, tzinfo=UTC), zone
    )
    assert [f.astimezone(zone).isoformat() for f in autumn] == [
        "2026-11-01T01:30:00-04:00",  # the first 01:30 (daylight time) only
        "2026-11-02T01:30:00-05:00",
    ]


def test_a_day_a_zone_skipped_has_no_firing_and_the_days_around_it_have_one() -> None:
    zone = ZoneInfo("Pacific/Apia")  # 29 December 2011 was followed by 31 December
    firings = parse_cron("0 9 * * *").firings(
        datetime(2011, 12, 28, tzinfo=zone).astimezone(UTC),
        datetime(2012, 1, 2, tzinfo=zone).astimezone(UTC),
        zone,
    )
    assert [f.astimezone(zone).date().isoformat() for f in firings] == [
        "2011-12-28",
        "2011-12-29",
        "2011-12-31",
        "2012-01-01",
    ]


def test_midnight_is_the_first_instant_of_the_day_even_where_midnight_was_skipped() -> None:
    zone = ZoneInfo("America/Sao_Paulo")  # 4 November 2018: 00:00 -> 01:00
    assert local_midnight(date(2018, 11, 4), zone).astimezone(zone).isoformat() == "2018-11-04T01:00:00-02:00"
    assert (
        local_midnight(date(2026, 6, 1), ZoneInfo("Asia/Kolkata")).isoformat() == "2026-05-31T18:30:00+00:00"
    )


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 6 * *", "has 4 fields; it needs 5"),
        ("61 6 * * *", "minute value 61 is out of range 0-59"),
        ("0 6 * * 1-0", "day-of-week range '1-0' runs backwards"),
        ("mon 6 * * *", "minute value 'mon' is not a number from 0 to 59"),
        ("0 6 30 feb *", "never fires"),
        ("*/0 * * * *", "must be a whole number of at least 1"),
    ],
)
def test_unreadable_schedules_say_what_to_change(expression: str, message: str) -> None:
    with pytest.raises(CronError, match=message):
        parse_cron(expression)


def test_names_macros_and_sunday_as_seven() -> None:
    assert parse_cron("0 6 * jan-mar sun").days_of_week == parse_cron("0 6 * 1-3 7").days_of_week == {0}
    daily, midnight = parse_cron("@daily"), parse_cron("@midnight")
    assert (daily.minutes, daily.hours, daily.days_of_week) == (
        midnight.minutes,
        midnight.hours,
        midnight.days_of_week,
    )
    assert daily.minutes == daily.hours == (0,) and len(daily.days_of_week) == 7
    assert parse_cron("5/20 * * * *").minutes == (5, 25, 45)


def test_naive_instants_are_refused() -> None:
    with pytest.raises(CronError, match="aware"):
        parse_cron("0 6 * * *").next_after(datetime(2026, 1, 1), ZoneInfo("UTC"))


def test_a_model_config_with_a_schedule_that_never_fires_is_refused_at_its_line() -> None:
    text = MINIMAL_MODEL + "  scoring:\n    schedule: '0 6 31 4 *'\n    timezone: Europe/London\n"
    issue = only_issue(text)
    assert "never fires" in issue.message and issue.line == MINIMAL_MODEL.count("\n") + 2
