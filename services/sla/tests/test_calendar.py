"""Business-time arithmetic, property-tested across DST changes and holidays."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convohub.sla.domain.calendar import ALWAYS_OPEN, BusinessCalendar
from convohub.sla.domain.policies import Calendar

NINE_TO_SIX = ((time(9), time(18)),)
LUNCH_BREAK = ((time(8), time(12)), (time(13), time(17)))
ROUND_THE_CLOCK = ((time(0), None),)


def calendar(zone: str, day_hours, weekend=(), holidays=()) -> BusinessCalendar:
    weekly = (*tuple(day_hours for _ in range(5)), tuple(weekend), tuple(weekend))
    return BusinessCalendar(zone=ZoneInfo(zone), weekly=weekly, holidays=frozenset(holidays))


BERLIN = calendar("Europe/Berlin", NINE_TO_SIX, holidays={date(2026, 3, 30), date(2026, 12, 25)})
NEW_YORK = calendar("America/New_York", LUNCH_BREAK, weekend=((time(10), time(14)),))
BERLIN_24H = calendar("Europe/Berlin", ROUND_THE_CLOCK, weekend=ROUND_THE_CLOCK)
# Opening hours that straddle the DST gap (02:00-03:00 skipped in March) and the repeated
# hour (02:00-03:00 twice in October).
BERLIN_NIGHTS = calendar(
    "Europe/Berlin",
    ((time(1), time(3, 30)), (time(22), None)),
    weekend=((time(2, 15), time(2, 45)),),
)
CALENDARS = [BERLIN, NEW_YORK, BERLIN_24H, BERLIN_NIGHTS, ALWAYS_OPEN]

# Around the 2026 DST changes of both zones (March 8/29, October 25, November 1).
moments = st.datetimes(
    min_value=datetime(2026, 2, 25), max_value=datetime(2026, 11, 10), timezones=st.just(UTC)
)
durations = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=12))
calendars = st.sampled_from(CALENDARS)


@settings(max_examples=120, deadline=None)
@given(calendars, moments, durations)
def test_the_deadline_of_d_is_d_business_time_away(cal, start, duration) -> None:
    due = cal.deadline(start, duration)
    assert due >= start
    assert cal.elapsed(start, due) == duration
    if duration > timedelta(0):  # and not a moment later: nothing was open just before it
        assert cal.elapsed(start, due - timedelta(microseconds=1)) < duration


@settings(max_examples=120, deadline=None)
@given(calendars, moments, moments, moments)
def test_elapsed_adds_up_and_never_exceeds_wall_time(cal, a, b, c) -> None:
    a, b, c = sorted((a, b, c))
    assert cal.elapsed(a, c) == cal.elapsed(a, b) + cal.elapsed(b, c)
    assert timedelta(0) <= cal.elapsed(a, b) <= b - a


@settings(max_examples=100, deadline=None)
@given(calendars, moments, durations, durations)
def test_deadlines_are_monotonic(cal, start, first, second) -> None:
    shorter, longer = sorted((first, second))
    assert cal.deadline(start, shorter) <= cal.deadline(start, longer)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def test_berlin_office_hours_follow_the_spring_dst_change() -> None:
    # Friday 27 March 17:00 CET (16:00 UTC) plus 2 business hours: one hour on Friday, the
    # weekend (clocks go forward on Sunday 29th) and Monday 30th (a holiday) are skipped,
    # so it is due Tuesday 31 March 10:00 CEST, which is 08:00 UTC.
    assert BERLIN.deadline(utc(2026, 3, 27, 16), timedelta(hours=2)) == utc(2026, 3, 31, 8)


def test_a_24_hour_calendar_counts_23_and_25_hour_days() -> None:
    spring = BERLIN_24H.elapsed(utc(2026, 3, 28, 23), utc(2026, 3, 29, 22))  # local midnights
    autumn = BERLIN_24H.elapsed(utc(2026, 10, 24, 22), utc(2026, 10, 25, 23))
    assert (spring, autumn) == (timedelta(hours=23), timedelta(hours=25))


def test_new_york_hours_and_lunch_break_across_its_dst_change() -> None:
    # Friday 6 March 16:00 EST (21:00 UTC) + 3h: 1h on Friday, then 2h on Saturday 7 March,
    # still EST (the change is on Sunday 8th): 10:00-12:00 EST is 15:00-17:00 UTC.
    assert NEW_YORK.deadline(utc(2026, 3, 6, 21), timedelta(hours=3)) == utc(2026, 3, 7, 17)
    # Monday 9 March (EDT): 08:00-12:00 is 12:00-16:00 UTC.
    assert NEW_YORK.deadline(utc(2026, 3, 9, 11), timedelta(hours=4, minutes=30)) == utc(
        2026, 3, 9, 17, 30
    )


def test_holidays_are_skipped() -> None:
    christmas_eve_close = utc(2026, 12, 24, 17)  # 18:00 CET, Thursday
    assert BERLIN.deadline(christmas_eve_close, timedelta(hours=1)) == utc(2026, 12, 28, 9)
    assert not BERLIN.is_open(utc(2026, 12, 25, 10))
    assert BERLIN.is_open(utc(2026, 12, 24, 10))


def test_calendar_config_builds_the_same_calendar() -> None:
    config = Calendar(
        id="berlin",
        timezone="Europe/Berlin",
        hours={day: ["09:00-18:00"] for day in ("mon", "tue", "wed", "thu", "fri")},
        holidays=[date(2026, 3, 30), date(2026, 12, 25)],
    )
    assert config.business_calendar() == BERLIN


@pytest.mark.parametrize(
    ("hours", "message"),
    [
        ({"mon": ["18:00-09:00"]}, "closes before it opens"),
        ({"mon": ["09:00-12:00", "11:00-13:00"]}, "overlap"),
        ({"monday": ["09:00-12:00"]}, "not a weekday"),
        ({"mon": ["9-5"]}, "not an opening interval"),
        ({}, "at least one day"),
    ],
)
def test_bad_calendars_are_refused(hours, message) -> None:
    with pytest.raises(ValueError, match=message):
        Calendar(id="x", timezone="Europe/Berlin", hours=hours)


def test_unknown_time_zones_are_refused() -> None:
    with pytest.raises(ValueError, match="IANA"):
        Calendar(id="x", timezone="Mars/Olympus", hours={"mon": ["09:00-10:00"]})


def test_night_hours_across_the_dst_changes() -> None:
    # Sunday 29 March: 02:15-02:45 does not exist in Berlin; read as if the clocks had not
    # moved yet (PEP 495, fold=0), it is 01:15-01:45 UTC, 03:15-03:45 CEST.
    assert BERLIN_NIGHTS.elapsed(utc(2026, 3, 28, 23), utc(2026, 3, 29, 3)) == timedelta(minutes=30)
    assert BERLIN_NIGHTS.is_open(utc(2026, 3, 29, 1, 30))
    # Sunday 25 October: 02:15-02:45 CEST then 02:15-02:45 CET; the first occurrence counts.
    assert BERLIN_NIGHTS.elapsed(utc(2026, 10, 24, 22), utc(2026, 10, 25, 3)) == timedelta(
        minutes=30
    )
