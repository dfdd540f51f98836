"""Business-time arithmetic: how much business time lies between two moments, and when a
given amount of business time will have passed.

A calendar is a time zone, weekly opening hours in local wall-clock time, and holidays
(local dates). Opening hours are converted to UTC day by day, so a DST change moves the
UTC instants of "09:00" with the clocks, and a 24-hour day that contains a DST change
counts 23 or 25 hours. All arithmetic is on `timedelta`s (exact to the microsecond), so
`elapsed(start, deadline(start, d)) == d` holds exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

__all__ = ["ALWAYS_OPEN", "BusinessCalendar", "OpeningHours"]

ZERO = timedelta(0)
_MAX_DAYS_SEARCHED = 3 * 366  # a calendar open at least once a week never needs this many

OpeningHours = tuple[tuple[time, time | None], ...]
"""One weekday's opening intervals in local time; an end of None means midnight (24:00)."""


@dataclass(frozen=True)
class BusinessCalendar:
    """Opening hours of one team. `weekly[0]` is Monday. Without `weekly` the calendar is
    always open (24x7, no holidays): business time equals wall time."""

    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    weekly: tuple[OpeningHours, ...] | None = None
    holidays: frozenset[date] = frozenset()

    @property
    def always_open(self) -> bool:
        return self.weekly is None

    def open_intervals(self, day: date) -> list[tuple[datetime, datetime]]:
        """The UTC intervals the calendar is open on a local `day`, in order."""
        if self.weekly is None:
            start = datetime.combine(day, time(0), tzinfo=self.zone).astimezone(UTC)
            end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=self.zone)
            return [(start, end.astimezone(UTC))]
        if day in self.holidays:
            return []
        intervals = []
        for opens, closes in self.weekly[day.weekday()]:
            start = datetime.combine(day, opens, tzinfo=self.zone).astimezone(UTC)
            if closes is None:
                end_local = datetime.combine(day + timedelta(days=1), time(0), tzinfo=self.zone)
            else:
                end_local = datetime.combine(day, closes, tzinfo=self.zone)
            end = end_local.astimezone(UTC)
            if end > start:  # ending inside a DST gap can put the end before the start
                intervals.append((start, end))
        return intervals

    def _intervals_from(self, moment: datetime) -> Iterator[tuple[datetime, datetime]]:
        # Start a day early: a local day's hours can begin before its UTC date does.
        day = moment.astimezone(self.zone).date() - timedelta(days=1)
        for offset in range(_MAX_DAYS_SEARCHED):
            yield from self.open_intervals(day + timedelta(days=offset))
        raise ValueError("the calendar has no opening hours in the next three years")

    def is_open(self, moment: datetime) -> bool:
        """Whether `moment` falls inside opening hours."""
        if self.weekly is None:
            return True
        day = moment.astimezone(self.zone).date()
        for offset in (-1, 0, 1):
            for start, end in self.open_intervals(day + timedelta(days=offset)):
                if start <= moment < end:
                    return True
        return False

    def elapsed(self, start: datetime, end: datetime) -> timedelta:
        """Business time between `start` and `end` (zero when `end` is not after `start`)."""
        _require_aware(start, end)
        if end <= start:
            return ZERO
        if self.weekly is None:
            return end - start
        total = ZERO
        for opens, closes in self._intervals_from(start):
            if opens >= end:
                break
            overlap = min(closes, end) - max(opens, start)
            if overlap > ZERO:
                total += overlap
        return total

    def deadline(self, start: datetime, business_time: timedelta) -> datetime:
        """The first moment at which `business_time` has elapsed since `start`.

        `deadline(start, 0)` is `start`; otherwise the result lies inside (or at the end
        of) an opening interval.
        """
        _require_aware(start)
        if business_time < ZERO:
            raise ValueError("business time to add must not be negative")
        if business_time == ZERO:
            return start
        if self.weekly is None:
            return start + business_time
        remaining = business_time
        for opens, closes in self._intervals_from(start):
            if closes <= start:
                continue
            begin = max(opens, start)
            available = closes - begin
            if remaining <= available:
                return begin + remaining
            remaining -= available
        raise AssertionError("unreachable: _intervals_from raises first")  # pragma: no cover


ALWAYS_OPEN = BusinessCalendar()


def _require_aware(*moments: datetime) -> None:
    for moment in moments:
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError("business-time arithmetic needs timezone-aware datetimes")
