"""Business calendars: when a team works, and deadlines counted in its working time.

A pure module: no I/O, no Redis, no clock. The rules file declares calendars like::

    calendars:
      paris:
        time_zone: Europe/Paris
        hours: {mon-thu: "09:00-12:00, 14:00-18:00", fri: "09:00-16:00"}
        holidays: ["2026-12-25", "2027-01-01"]

``CalendarSpec`` validates one entry (errors are ValueError, for the rules loader to place on a
line) and ``CalendarSpec.build(name)`` gives the ``Calendar`` that does the arithmetic. A rule
with ``calendar:`` counts its ``after`` and ``every`` in that calendar's working time; without a
calendar, durations stay wall-clock time, and none of this module is involved.

What is promised
----------------
Opening. A calendar is open at an instant when, read on the calendar's wall clock
(``time_zone``), the instant's date is not a holiday and its time of day lies in one of that
weekday's openings ``[start, end)``: an opening includes its start and excludes its end, so
"09:00-18:00" is open at 09:00:00 and closed at 18:00:00. An instant exactly at the end of an
opening is a *closing*.

Working time. Seconds of real elapsed time (UTC) while the calendar is open. Summer-time changes
follow from reading the wall clock:

* a local time that does not exist (the spring-forward gap) is never open; an opening whose start
  falls in the gap opens at the change itself (03:00 in Paris for "02:30-05:00" on that Sunday),
  because that is the first instant the clock reads 02:30 or later;
* a local time that exists twice (the fall-back fold) is open both times: "01:00-04:00" in Paris
  on the last Sunday of October holds 4 real hours, 02:00-03:00 being lived twice;
* "09:00-18:00" is 9 real hours on every day, whatever the offset, as no change happens during it.

``add(start, seconds=s)`` (units s, m, h): the instant at which the calendar has been open for
``s`` seconds since ``start``. A start outside the openings counts from the next opening. The
result is always open or a closing: a result that lands exactly on a closing stays there
(Friday 17:00 + 1h = Friday 18:00, as Zendesk's business-hours targets do) rather than jumping to
the next opening; the next addition then counts from the next opening, so
``add(add(a, x), y) == add(a, x + y)`` for seconds.

``add(start, days=n)`` (unit d): the same wall-clock time of day ``n`` working days later, a
working day being a date that has open time (its weekday has openings and it is not a holiday).

* The start is first taken as it is when it is open or a closing, else moved to the next opening:
  Saturday 10:00 + 1d = Tuesday 09:00 (Monday 09:00 is where counting starts); Thursday 08:00 +
  1d = Friday 09:00; Friday 18:00 (a closing) + 1d = Monday 18:00. A closing belongs to the day
  it closes: "sat: 20:00-24:00" makes Saturday 24:00 a Saturday position, not a Sunday one.
* On the target day, the result is the first open instant or closing at or after that time of
  day; if the day has closed by then, its last closing. So with ``{mon-thu: "09:00-18:00",
  fri: "09:00-16:00"}``, Thursday 17:00 + 1d = Friday 16:00 (not Monday); with lunch closed
  ("09:00-12:00, 14:00-18:00") a time of 13:00 carried from a longer day becomes 14:00. The result
  is always on the n-th working day. Unlike seconds, days do not add up when one of these
  adjustments happens (there, Thursday 17:00 + 1d + 1d = Monday 16:00 but + 2d = Monday 17:00).
* Across a summer-time change the time of day is kept (Friday 10:00 + 1d = Monday 10:00 local);
  a time of day the target day skips (the gap) gives the change instant, one it has twice (the
  fold) gives its first occurrence.

Weeks (unit w): ``n`` weeks are ``n`` times the number of weekdays with openings, in days: 1w is
5d for a Monday-to-Friday calendar, 6d for Monday-to-Saturday.

Mixed durations (``1d12h``, ``1w2d3h``): the days part first (weeks included), then the seconds
from there. A bare integer counts working seconds (``86400`` is 24 working hours, not ``1d``).
Zero (no days, no seconds) returns the start as it is.

Results are in the time zone of ``start`` (which must be timezone-aware), exact to the
microsecond a start carries.

Hours syntax. Keys are days ``mon`` ... ``sun``, ranges ``mon-fri`` (forward only: write
``fri-sun, mon`` rather than ``fri-mon``) or comma lists ``mon, wed, fri``; several keys may be
given, but no day twice. Values are "HH:MM-HH:MM" openings, several separated by commas or given
as a YAML list, not overlapping (touching ones are merged); an end may be 24:00. Openings across
midnight are refused (write ``mon: "22:00-24:00"`` and ``tue: "00:00-06:00"``: the calendar is
then open continuously across midnight). Days not named are closed; a calendar with no openings at
all is an error. Holidays are ISO dates (strings or the dates YAML makes of them), a whole local
day each.

Cost. Additions and ``working_seconds_between`` walk the calendar day by day, never minute by
minute: one step per calendar date between start and result, closed days and holidays included,
each step a handful of datetime operations, cached per (time zone, date, openings). The walk
ends because openings exist in every week and holidays are finitely many: adding ``n`` working
seconds takes at most about ``7 * (n / open seconds per week + 1)`` days plus one per holiday on
the way; 10 years of dates (3,650 steps) take under a tenth of a second the first time, a few
milliseconds once cached. Going past the year 9999 raises OverflowError.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from typing import Annotated, Iterator, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, field_validator

UTC = timezone.utc
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")   # index = date.weekday()
SECONDS_PER_DAY = 86_400
ONE_DAY = timedelta(days=1)
ONE_SECOND = timedelta(seconds=1)
# Offsets are sampled this often to find summer-time changes; two changes closer than this
# would be mistaken (in tzdata 2025b no two changes of a zone are less than 3 days apart).
OFFSET_SAMPLE_STEP = timedelta(hours=6)
# Larger than any UTC offset ever used (local mean times reach about 15h 57m).
OFFSET_BOUND = timedelta(hours=16)
DAY_CACHE_SIZE = 8192                  # dates of openings kept per process, per cache

_OPENING = re.compile(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# The grammar of workers.rules.parse_duration, split by unit (tests hold the two together).
_DURATION_PART = re.compile(r"(\d+)\s*([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}

Opening = tuple[int, int]              # (start, end) in seconds after local midnight, end <= 86400


class _Span(NamedTuple):
    """Open time of one local date in one UTC offset: [start, end) in UTC."""

    start: datetime
    end: datetime
    offset: timedelta                  # local wall clock = UTC + offset within the span
    day: date                          # the local date the span belongs to


class DurationParts(NamedTuple):
    """A rules-file duration split the way a calendar counts it."""

    weeks: int
    days: int
    seconds: int                       # the s, m and h units


def duration_parts(value) -> DurationParts:
    """Split ``2d``, ``1w``, ``1d12h``, ``90m`` or a bare integer (seconds) into its parts.

    Accepts exactly what ``workers.rules.parse_duration`` accepts, with its error messages.
    """
    from .rules import parse_duration  # here, not at the top: workers.rules imports this module

    parse_duration(value)
    if isinstance(value, int):
        return DurationParts(0, 0, value)
    parts = {"w": 0, "d": 0, "s": 0}
    for number, unit in _DURATION_PART.findall(value.lower()):
        if unit in "wd":
            parts[unit] += int(number)
        else:
            parts["s"] += int(number) * _UNIT_SECONDS[unit]
    return DurationParts(parts["w"], parts["d"], parts["s"])


# ---------------------------------------------------------------------------------------------
# The rules file's calendar entry


def _zone(name) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):     # OSError: a name too long for a file
        raise ValueError(f"unknown time zone {name!r} (use an IANA name like Europe/Paris)") from None


def _day_index(name: str, spec: str) -> int:
    try:
        return DAY_NAMES.index(name.strip().lower())
    except ValueError:
        raise ValueError(f"unknown day {name.strip()!r} in {spec!r} (use {', '.join(DAY_NAMES)})") from None


def _parse_days(spec: str) -> list[int]:
    """Weekday indexes of ``mon``, ``mon-fri`` or ``mon-wed, fri``."""
    days: list[int] = []
    for part in spec.split(","):
        first, sep, last = part.partition("-")
        lo = _day_index(first, spec)
        hi = _day_index(last, spec) if sep else lo
        if hi < lo:
            split = f"{DAY_NAMES[lo]}-sun, mon" + (f"-{DAY_NAMES[hi]}" if hi else "")
            raise ValueError(f"day range {part.strip()!r} goes backwards: days run mon to sun (write {split})")
        for day in range(lo, hi + 1):
            if day in days:
                raise ValueError(f"{DAY_NAMES[day]} is named twice in {spec!r}")
            days.append(day)
    return days


def _clock(hours: str, minutes: str, text: str) -> int:
    seconds = int(hours) * 3600 + int(minutes) * 60
    if int(minutes) > 59 or seconds > SECONDS_PER_DAY:
        raise ValueError(f"opening {text!r} has a time that is not between 00:00 and 24:00")
    return seconds


def _hhmm(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}"


def _parse_openings(value) -> tuple[Opening, ...]:
    """Openings of ``"09:00-12:00, 14:00-18:00"`` or a list of such strings, sorted and merged."""
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise ValueError(f'openings are text like "09:00-18:00", got {value!r}')
    openings = []
    for text in (piece.strip() for t in texts for piece in t.split(",")):
        m = _OPENING.fullmatch(text)
        if not m:
            raise ValueError(f'opening {text!r} is not like "09:00-18:00"')
        start, end = _clock(m[1], m[2], text), _clock(m[3], m[4], text)
        if start == SECONDS_PER_DAY or end <= start:
            raise ValueError(f"opening {text!r} ends before it starts: openings across midnight are not "
                             f'supported, split them (mon: "22:00-24:00", tue: "00:00-06:00")')
        openings.append((start, end))
    if not openings:
        raise ValueError("no opening given: leave a closed day out")
    openings.sort()
    merged = [openings[0]]
    for start, end in openings[1:]:
        last_start, last_end = merged[-1]
        if start < last_end:
            raise ValueError(f"openings {_hhmm(last_start)}-{_hhmm(last_end)} and "
                             f"{_hhmm(start)}-{_hhmm(end)} overlap")
        merged[-1:] = [(last_start, end)] if start == last_end else [merged[-1], (start, end)]
    return tuple(merged)


def _parse_week(hours) -> tuple[tuple[Opening, ...], ...]:
    """Seven tuples of openings, Monday first, from the ``hours`` mapping."""
    if not isinstance(hours, dict) or not hours:
        raise ValueError('a calendar needs hours, like {mon-fri: "09:00-18:00"}')
    week: list[tuple[Opening, ...]] = [()] * 7
    named_by: dict[int, str] = {}
    for spec, value in hours.items():
        if not isinstance(spec, str):
            raise ValueError(f"days are named like mon, mon-fri or mon, wed; got {spec!r}")
        try:
            days, openings = _parse_days(spec), _parse_openings(value)
        except ValueError as e:
            raise ValueError(f"{spec}: {e}") from None
        for day in days:
            if day in named_by:
                raise ValueError(f"{DAY_NAMES[day]} is given twice ({named_by[day]!r} and {spec!r})")
            named_by[day] = spec
            week[day] = openings
    return tuple(week)


def _holiday(value) -> date:
    if isinstance(value, datetime):          # before date: a datetime is a date too
        raise ValueError(f"holiday {value.isoformat()!r} has a time of day: give a date like 2026-12-25")
    if isinstance(value, date):
        return value
    if isinstance(value, str) and _ISO_DATE.fullmatch(value.strip()):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ValueError(f"holiday {value!r} is not a date like 2026-12-25")


Holiday = Annotated[date, BeforeValidator(_holiday)]


class CalendarSpec(BaseModel):
    """One entry of the rules file's ``calendars:`` section, validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    time_zone: str
    hours: dict[str, str | list[str]]
    holidays: tuple[Holiday, ...] = ()

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        _zone(value)
        return value

    @field_validator("hours", mode="before")
    @classmethod
    def _valid_hours(cls, value):
        _parse_week(value)
        return value

    def build(self, name: str) -> Calendar:
        """The calendar this entry describes, called ``name``."""
        return Calendar(name=name, zone=_zone(self.time_zone), week=_parse_week(self.hours),
                        holidays=frozenset(self.holidays))


# ---------------------------------------------------------------------------------------------
# Arithmetic


def _offset(zone: ZoneInfo, moment: datetime) -> timedelta:
    return moment.astimezone(zone).utcoffset()


def _change(zone: ZoneInfo, before: datetime, after: datetime) -> datetime:
    """The first second of ``(before, after]`` in the offset of ``after`` (a bisection)."""
    old = _offset(zone, before)
    while after - before > ONE_SECOND:
        middle = before + ((after - before) // ONE_SECOND // 2) * ONE_SECOND
        if _offset(zone, middle) == old:
            before = middle
        else:
            after = middle
    return after


@lru_cache(maxsize=DAY_CACHE_SIZE)
def _offset_pieces(zone: ZoneInfo, day: date) -> tuple[tuple[datetime, datetime, timedelta], ...]:
    """Stretches of constant UTC offset, [start, end) in UTC, covering all of local date ``day``."""
    lo = datetime.combine(day, time(), UTC) - OFFSET_BOUND
    hi = lo + ONE_DAY + 2 * OFFSET_BOUND
    pieces = []
    start, offset, sample = lo, _offset(zone, lo), lo
    while sample < hi:
        following = min(sample + OFFSET_SAMPLE_STEP, hi)
        new = _offset(zone, following)
        if new != offset:
            change = _change(zone, sample, following)
            pieces.append((start, change, offset))
            start, offset = change, new
        sample = following
    pieces.append((start, hi, offset))
    return tuple(pieces)


@lru_cache(maxsize=DAY_CACHE_SIZE)
def _day_spans(zone: ZoneInfo, day: date, openings: tuple[Opening, ...]) -> tuple[_Span, ...]:
    """The open time of local date ``day`` with these openings, in UTC order."""
    midnight = datetime.combine(day, time(), UTC)        # the local midnight, read as if UTC
    spans = []
    for opens, closes in openings:
        wall_start, wall_end = midnight + timedelta(seconds=opens), midnight + timedelta(seconds=closes)
        for piece_start, piece_end, offset in _offset_pieces(zone, day):
            start, end = max(wall_start - offset, piece_start), min(wall_end - offset, piece_end)
            if start < end:
                spans.append(_Span(start, end, offset, day))
    spans.sort()
    return tuple(spans)


def _utc(moment: datetime, what: str = "moment") -> datetime:
    if not isinstance(moment, datetime) or moment.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, got {moment!r}")
    return moment.astimezone(UTC)


def _count(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be a whole number >= 0, got {value!r}")
    return value


@dataclass(frozen=True)
class Calendar:
    """Working hours in a time zone, minus holidays. Build it with ``CalendarSpec.build``."""

    name: str
    zone: ZoneInfo
    week: tuple[tuple[Opening, ...], ...]    # Monday first; openings sorted, disjoint
    holidays: frozenset[date] = frozenset()

    def __post_init__(self):
        if len(self.week) != 7 or not any(self.week):
            raise ValueError(f"calendar {self.name!r} needs seven days, at least one with openings")

    @property
    def working_days_per_week(self) -> int:
        """How many weekdays have openings: the days in a ``w``."""
        return sum(1 for openings in self.week if openings)

    def is_open(self, moment: datetime) -> bool:
        """Whether the calendar is open at ``moment`` (an opening's end is closed)."""
        local = _utc(moment).astimezone(self.zone)
        if local.date() in self.holidays:
            return False
        seconds = local.hour * 3600 + local.minute * 60 + local.second  # openings are whole minutes
        return any(opens <= seconds < closes for opens, closes in self.week[local.weekday()])

    def next_opening(self, moment: datetime) -> datetime:
        """``moment`` itself when open, else the next instant the calendar opens (in moment's zone)."""
        u = _utc(moment)
        span = next(self._spans_from(u))
        return moment if span.start <= u else span.start.astimezone(moment.tzinfo)

    def add(self, start: datetime, seconds: int = 0, days: int = 0) -> datetime:
        """``days`` working days, then ``seconds`` working seconds after ``start``.

        In start's time zone; see the module docstring for starts outside the openings, results at
        a closing and days whose hours differ.
        """
        u = _utc(start, "start")
        if not _count(seconds, "seconds") and not _count(days, "days"):
            return start
        if days:
            u = self._add_days(u, days)
        if seconds:
            u = self._add_seconds(u, seconds)
        return u.astimezone(start.tzinfo)

    def add_duration(self, start: datetime, duration) -> datetime:
        """``start`` plus a rules-file duration: ``2d``, ``1d12h``, ``90m``, ``1w``, DurationParts.

        A bare integer is working seconds, so it cannot mean days: pass the text (or its
        DurationParts) of an ``after: 1d``, not the 86400 that ``parse_duration`` makes of it.
        """
        parts = duration if isinstance(duration, DurationParts) else duration_parts(duration)
        return self.add(start, seconds=parts.seconds, days=parts.days + parts.weeks * self.working_days_per_week)

    def working_seconds_between(self, a: datetime, b: datetime) -> float:
        """Open seconds in [a, b); negative when b is before a."""
        ua, ub = _utc(a, "a"), _utc(b, "b")
        if ub < ua:
            return -self.working_seconds_between(b, a)
        total = timedelta()
        for span in self._spans_from(ua):
            if span.start >= ub:
                break
            total += min(span.end, ub) - max(span.start, ua)
        return total.total_seconds()

    # -- the walk ----------------------------------------------------------------------------

    def _spans(self, day: date) -> tuple[_Span, ...]:
        openings = self.week[day.weekday()]
        if not openings or day in self.holidays:
            return ()
        return _day_spans(self.zone, day, openings)

    def _spans_from(self, u: datetime) -> Iterator[_Span]:
        """The spans that end after UTC instant ``u``, in time order, without end."""
        day = u.astimezone(self.zone).date() - ONE_DAY
        pending = list(self._spans(day))
        while True:
            day += ONE_DAY
            pending.extend(self._spans(day))
            pending.sort()
            # Spans of dates before ``day`` precede all those of later dates (no clock goes back a
            # whole day), so they and whatever sorts before them can go; a fall-back across
            # midnight may sort a few of ``day``'s first.
            ready = max((i + 1 for i, span in enumerate(pending) if span.day < day), default=0)
            for span in pending[:ready]:
                if span.end > u:
                    yield span
            del pending[:ready]

    def _add_seconds(self, u: datetime, seconds: int) -> datetime:
        left = timedelta(seconds=seconds)
        for span in self._spans_from(u):
            start = max(span.start, u)
            if span.end - start >= left:
                return start + left
            left -= span.end - start
        raise AssertionError("unreachable: _spans_from never ends")

    def _position(self, u: datetime) -> tuple[date, timedelta]:
        """The working date and wall-clock time of day that ``u`` counts from, for days."""
        if not self.is_open(u):
            here = u.astimezone(self.zone).date()
            for day in (here - ONE_DAY, here, here + ONE_DAY):
                for span in self._spans(day):
                    if span.end == u:      # a closing belongs to its day, at up to 24:00
                        return day, u + span.offset - datetime.combine(day, time(), UTC)
            u = self.next_opening(u)
        local = u.astimezone(self.zone)
        return local.date(), local.replace(tzinfo=None) - datetime.combine(local.date(), time())

    def _add_days(self, u: datetime, days: int) -> datetime:
        day, time_of_day = self._position(u)
        for _ in range(days):
            day += ONE_DAY
            while not self._spans(day):
                day += ONE_DAY
        spans = self._spans(day)
        wall = datetime.combine(day, time(), UTC) + time_of_day
        for span in spans:
            candidate = max(span.start, wall - span.offset)
            if candidate <= span.end:
                return candidate
        return max(span.end for span in spans)
