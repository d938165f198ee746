"""workers/core/calendars.py: hand-worked deadlines, summer-time changes, bad specs, and properties."""

import time as clock
from datetime import date, datetime, timedelta, timezone

import pytest
import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from zoneinfo import ZoneInfo

from workers.core.calendars import Calendar, CalendarSpec, DurationParts, duration_parts
from workers.core.rules import parse_duration

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")
UTC = timezone.utc
HOUR = 3600

PINNED = """\
calendars:
  paris:
    time_zone: Europe/Paris
    hours: {mon-fri: "09:00-18:00"}
    holidays: ["2026-12-25", 2027-01-01]
"""


def calendar(hours, zone="Europe/Paris", holidays=()):
    return CalendarSpec(time_zone=zone, hours=hours, holidays=list(holidays)).build("test")


def paris(*args, fold=0):
    return datetime(*args, tzinfo=PARIS, fold=fold)


def utc(moment):
    """For comparing instants: two datetimes of one ZoneInfo compare (and subtract) as wall clocks."""
    return moment.astimezone(UTC)


OFFICE = calendar({"mon-fri": "09:00-18:00"}, holidays=["2026-12-25"])
LUNCH = calendar({"mon-fri": "09:00-12:00, 14:00-18:00"})
SHORT_FRIDAY = calendar({"mon-thu": "09:00-18:00", "fri": "09:00-16:00"})
ALWAYS = calendar({"mon-sun": "00:00-24:00"})


# -- the pinned shape --------------------------------------------------------------------------

def test_the_pinned_yaml_shape_builds_a_calendar():
    spec = CalendarSpec.model_validate(yaml.safe_load(PINNED)["calendars"]["paris"])
    assert spec.holidays == (date(2026, 12, 25), date(2027, 1, 1))   # a string and a YAML date
    cal = spec.build("paris")
    assert (cal.name, cal.zone, cal.working_days_per_week) == ("paris", PARIS, 5)
    assert cal.week[0] == ((9 * HOUR, 18 * HOUR),) and cal.week[5] == ()


def test_unquoted_yaml_hours_are_text_too():
    data = yaml.safe_load("time_zone: UTC\nhours: {mon-thu: 9:00-18:00, fri: [09:00-12:00, 13:00-16:00]}")
    assert CalendarSpec.model_validate(data).build("x").week[4] == ((9 * HOUR, 12 * HOUR), (13 * HOUR, 16 * HOUR))


# -- hand-worked deadlines ---------------------------------------------------------------------

def test_friday_17h_plus_2h_is_monday_10h():
    assert OFFICE.add(paris(2026, 12, 18, 17), seconds=2 * HOUR) == paris(2026, 12, 21, 10)
    assert OFFICE.add_duration(paris(2026, 12, 18, 17), "2h") == paris(2026, 12, 21, 10)


def test_thursday_24_december_plus_1d_skips_christmas_and_the_weekend():
    # 25 December 2026 is a Friday and a holiday, 26-27 are Saturday-Sunday
    assert OFFICE.add_duration(paris(2026, 12, 24, 17), "1d") == paris(2026, 12, 28, 17)
    assert OFFICE.add_duration(paris(2026, 12, 24, 17), "2h") == paris(2026, 12, 28, 10)


@pytest.mark.parametrize("start,duration,expected", [
    ((2026, 12, 17, 8), "2h", (2026, 12, 17, 11)),       # before opening: counts from 09:00
    ((2026, 12, 17, 8), "1d", (2026, 12, 18, 9)),        # ... so a day later is 09:00 too
    ((2026, 12, 17, 19), "2h", (2026, 12, 18, 11)),      # after closing: from the next morning
    ((2026, 12, 17, 19), "1d", (2026, 12, 21, 9)),       # Friday 09:00, then one working day
    ((2026, 12, 19, 10), "2h", (2026, 12, 21, 11)),      # Saturday: from Monday 09:00
    ((2026, 12, 19, 10), "1d", (2026, 12, 22, 9)),
    ((2026, 12, 25, 10), "2h", (2026, 12, 28, 11)),      # on the holiday: from Monday
    ((2026, 12, 25, 10), "1d", (2026, 12, 29, 9)),
])
def test_a_start_outside_working_hours_counts_from_the_next_opening(start, duration, expected):
    assert OFFICE.add_duration(paris(*start), duration) == paris(*expected)


def test_a_result_on_a_closing_stays_there_and_counting_resumes_at_the_next_opening():
    friday_close = paris(2026, 12, 18, 18)
    assert not OFFICE.is_open(friday_close) and OFFICE.is_open(friday_close - timedelta(seconds=1))
    assert OFFICE.add(paris(2026, 12, 18, 17), seconds=HOUR) == friday_close
    assert OFFICE.add(friday_close, seconds=HOUR) == paris(2026, 12, 21, 10)
    assert OFFICE.add(friday_close, days=1) == paris(2026, 12, 21, 18)    # a closing keeps its day
    assert OFFICE.next_opening(friday_close) == paris(2026, 12, 21, 9)
    assert OFFICE.is_open(paris(2026, 12, 21, 9)) and not OFFICE.is_open(paris(2026, 12, 21, 8, 59, 59))


def test_several_openings_a_day():
    assert LUNCH.add(paris(2026, 12, 14, 11), seconds=2 * HOUR) == paris(2026, 12, 14, 15)
    assert LUNCH.add(paris(2026, 12, 14, 12, 30), seconds=HOUR) == paris(2026, 12, 14, 15)
    assert LUNCH.add(paris(2026, 12, 14, 11), seconds=HOUR) == paris(2026, 12, 14, 12)   # kept at 12:00
    assert LUNCH.add(paris(2026, 12, 14, 12), days=1) == paris(2026, 12, 15, 12)
    assert LUNCH.working_seconds_between(paris(2026, 12, 14), paris(2026, 12, 15)) == 7 * HOUR
    listed = calendar({"mon-fri": ["09:00-12:00", "14:00-18:00"]})
    assert listed.week == LUNCH.week


def test_days_with_different_hours():
    thursday = paris(2026, 12, 17, 17)
    assert SHORT_FRIDAY.add(thursday, days=1) == paris(2026, 12, 18, 16)    # Friday has closed by 17:00
    assert SHORT_FRIDAY.add(thursday, days=2) == paris(2026, 12, 21, 17)
    assert SHORT_FRIDAY.add(paris(2026, 12, 18, 16), days=1) == paris(2026, 12, 21, 16)  # days need not add up
    assert SHORT_FRIDAY.add(thursday, seconds=2 * HOUR) == paris(2026, 12, 18, 10)
    assert SHORT_FRIDAY.add(paris(2026, 12, 18, 15), seconds=2 * HOUR) == paris(2026, 12, 21, 10)
    late_monday = calendar({"mon": "10:00-18:00", "tue-fri": "09:00-18:00"})
    assert late_monday.add(paris(2026, 12, 18, 9, 30), days=1) == paris(2026, 12, 21, 10)   # not before opening


def test_a_day_opening_at_midnight_continues_the_day_before():
    night = calendar({"mon": "22:00-24:00", "tue": "00:00-06:00", "sat": "20:00-24:00"})
    assert night.add(paris(2026, 12, 14, 23), seconds=2 * HOUR) == paris(2026, 12, 15, 1)
    assert night.add(paris(2026, 12, 19, 23), seconds=HOUR) == paris(2026, 12, 20, 0)    # Saturday 24:00
    # Saturday 24:00 is a Saturday closing: a day later is Monday at 24:00, i.e. Monday's last closing
    assert night.add(paris(2026, 12, 20, 0), days=1) == paris(2026, 12, 22, 0)
    assert night.working_seconds_between(paris(2026, 12, 14), paris(2026, 12, 21)) == 12 * HOUR


def test_mixed_durations_add_the_days_first():
    # Thursday 10:00 + 1d = Friday 10:00, then 12 working hours: 8 on Friday, 4 on Monday
    assert OFFICE.add_duration(paris(2026, 12, 10, 10), "1d12h") == paris(2026, 12, 14, 13)
    assert OFFICE.add(paris(2026, 12, 10, 10), seconds=12 * HOUR, days=1) == paris(2026, 12, 14, 13)


def test_an_integer_is_working_seconds_and_parts_keep_their_days():
    thursday = paris(2026, 12, 10, 10)
    assert OFFICE.add_duration(thursday, 86400) == paris(2026, 12, 14, 16)      # 24 working hours: 8 + 9 + 7
    assert OFFICE.add_duration(thursday, duration_parts("1d")) == paris(2026, 12, 11, 10)
    assert OFFICE.add_duration(thursday, DurationParts(weeks=1, days=0, seconds=0)) == paris(2026, 12, 17, 10)


def test_a_week_is_the_working_days_of_the_calendar():
    assert OFFICE.add_duration(paris(2026, 12, 14, 10), "1w") == paris(2026, 12, 21, 10)
    assert OFFICE.add_duration(paris(2026, 12, 17, 10), "1w") == paris(2026, 12, 24, 10)
    assert OFFICE.add_duration(paris(2026, 12, 18, 10), "1w") == paris(2026, 12, 28, 10)   # the 25th is off
    six_days = calendar({"mon-sat": "09:00-18:00"})
    assert six_days.working_days_per_week == 6
    assert six_days.add_duration(paris(2026, 12, 14, 10), "1w") == paris(2026, 12, 21, 10)
    assert six_days.add_duration(paris(2026, 12, 14, 10), "1w1d") == paris(2026, 12, 22, 10)
    assert six_days.add_duration(paris(2026, 12, 14, 10), "2w1d3h") == paris(2026, 12, 29, 13)


def test_a_duration_longer_than_a_week():
    # 1000 h = 111 days of 9 h + 1 h: the 111th working day from Monday 5 January is Monday 8 June
    # (22 weeks later), closed at 18:00; the last hour is Tuesday 09:00-10:00.
    start = paris(2026, 1, 5, 9)
    assert OFFICE.add(start, seconds=1000 * HOUR) == paris(2026, 6, 9, 10)
    assert OFFICE.add(start, seconds=999 * HOUR) == paris(2026, 6, 8, 18)
    assert OFFICE.working_seconds_between(start, paris(2026, 6, 9, 10)) == 1000 * HOUR


def test_ten_years_stays_fast():
    started = clock.perf_counter()
    end = OFFICE.add(paris(2030, 1, 1), days=2600)       # about ten years of working days
    assert OFFICE.working_seconds_between(paris(2030, 1, 1), end) == 2600 * 9 * HOUR
    OFFICE.add(paris(2030, 1, 1), seconds=2600 * 9 * HOUR)
    assert clock.perf_counter() - started < 2


def test_zero_returns_the_start_and_results_keep_its_time_zone():
    saturday = paris(2026, 12, 19, 10)
    assert OFFICE.add(saturday) is saturday
    start = datetime(2026, 12, 18, 16, tzinfo=UTC)       # 17:00 in Paris
    result = OFFICE.add(start, seconds=2 * HOUR)
    assert result == paris(2026, 12, 21, 10) and result.tzinfo is UTC


def test_exact_to_the_microsecond():
    start = paris(2026, 12, 18, 17, 59, 59, 250_000)
    assert OFFICE.add(start, seconds=1) == paris(2026, 12, 21, 9, 0, 0, 250_000)
    assert OFFICE.add(start, days=1) == paris(2026, 12, 21, 17, 59, 59, 250_000)
    assert OFFICE.working_seconds_between(start, paris(2026, 12, 21, 9)) == 0.75


@pytest.mark.parametrize("call", [
    lambda: OFFICE.add(datetime(2026, 12, 18, 17), seconds=1),
    lambda: OFFICE.add(paris(2026, 12, 18, 17), seconds=-1),
    lambda: OFFICE.add(paris(2026, 12, 18, 17), days=1.5),
    lambda: OFFICE.is_open(datetime(2026, 12, 18, 17)),
    lambda: OFFICE.add_duration(paris(2026, 12, 18, 17), "5x"),
])
def test_bad_arguments_are_refused(call):
    with pytest.raises(ValueError):
        call()


# -- summer time -------------------------------------------------------------------------------

def test_paris_spring_forward_keeps_working_hours_and_days():
    friday = paris(2026, 3, 27, 10)                      # the clocks go forward on Sunday the 29th
    assert OFFICE.add(friday, seconds=9 * HOUR) == paris(2026, 3, 30, 10)
    assert OFFICE.add(friday, days=1) == paris(2026, 3, 30, 10)
    assert OFFICE.working_seconds_between(paris(2026, 3, 30), paris(2026, 3, 31)) == 9 * HOUR
    assert utc(paris(2026, 3, 30, 10)) - utc(friday) == timedelta(hours=71)      # 72 wall hours, 71 real


def test_paris_fall_back_keeps_working_hours_and_days():
    friday = paris(2026, 10, 23, 10)                     # the clocks go back on Sunday the 25th
    assert OFFICE.add(friday, seconds=9 * HOUR) == paris(2026, 10, 26, 10)
    assert OFFICE.add(friday, days=1) == paris(2026, 10, 26, 10)
    assert utc(paris(2026, 10, 26, 10)) - utc(friday) == timedelta(hours=73)


def test_working_time_is_real_time_on_the_day_of_the_change():
    # open round the clock: 23 real hours on 29 March, 25 on 25 October, days keep the time of day
    assert utc(ALWAYS.add(paris(2026, 3, 28, 12), seconds=24 * HOUR)) == utc(paris(2026, 3, 29, 13))
    assert utc(ALWAYS.add(paris(2026, 3, 28, 12), days=1)) == utc(paris(2026, 3, 29, 12))
    assert utc(ALWAYS.add(paris(2026, 10, 24, 12), seconds=24 * HOUR)) == utc(paris(2026, 10, 25, 11))
    assert utc(ALWAYS.add(paris(2026, 10, 24, 12), days=1)) == utc(paris(2026, 10, 25, 12))
    assert ALWAYS.working_seconds_between(paris(2026, 3, 29), paris(2026, 3, 30)) == 23 * HOUR
    assert ALWAYS.working_seconds_between(paris(2026, 10, 25), paris(2026, 10, 26)) == 25 * HOUR


def test_openings_across_the_gap_and_the_fold():
    night = calendar({"sun": "01:00-04:00"})
    assert night.working_seconds_between(paris(2026, 3, 29), paris(2026, 3, 30)) == 2 * HOUR
    assert night.working_seconds_between(paris(2026, 10, 25), paris(2026, 10, 26)) == 4 * HOUR
    assert utc(night.add(paris(2026, 3, 29, 1), seconds=HOUR)) == utc(paris(2026, 3, 29, 3))  # 02:00 never comes
    second_two = paris(2026, 10, 25, 2, fold=1)                                       # the CET 02:00
    assert utc(night.add(paris(2026, 10, 25, 1), seconds=2 * HOUR)) == utc(second_two)
    assert utc(night.add(paris(2026, 10, 25, 1), seconds=HOUR)) == utc(paris(2026, 10, 25, 2))      # CEST
    assert night.is_open(second_two) and night.is_open(paris(2026, 10, 25, 2, 30))
    # an opening that starts in the gap opens at the change, the first instant its start is passed
    gap_start = calendar({"sun": "02:30-05:00"})
    assert utc(gap_start.next_opening(paris(2026, 3, 29))) == utc(paris(2026, 3, 29, 3))
    assert gap_start.working_seconds_between(paris(2026, 3, 29), paris(2026, 3, 30)) == 2 * HOUR


def test_a_day_later_at_a_time_the_target_day_skips_or_repeats():
    assert utc(ALWAYS.add(paris(2026, 3, 28, 2, 30), days=1)) == utc(paris(2026, 3, 29, 3))   # the change
    first = ALWAYS.add(paris(2026, 10, 24, 2, 30), days=1)
    assert utc(first) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)                    # 02:30 CEST
    assert first.utcoffset() == timedelta(hours=2)


def test_new_york_both_changes_of_2026():
    office = calendar({"mon-fri": "09:00-17:00"}, zone="America/New_York")

    def ny(*args):
        return datetime(*args, tzinfo=NEW_YORK)

    assert office.add(ny(2026, 3, 6, 16), seconds=2 * HOUR) == ny(2026, 3, 9, 10)      # 8 March: spring
    assert office.add(ny(2026, 3, 6, 16), days=1) == ny(2026, 3, 9, 16)
    assert office.add(ny(2026, 3, 6, 9), seconds=8 * HOUR) == ny(2026, 3, 6, 17)
    assert office.add(ny(2026, 10, 30, 16), seconds=8 * HOUR) == ny(2026, 11, 2, 16)   # 1 November: fall
    assert office.add(ny(2026, 10, 30, 16), days=1) == ny(2026, 11, 2, 16)
    assert office.working_seconds_between(ny(2026, 3, 6), ny(2026, 3, 10)) == 16 * HOUR
    assert office.working_seconds_between(ny(2026, 10, 30), ny(2026, 11, 3)) == 16 * HOUR


def test_a_local_date_that_never_happened_is_no_working_day():
    # Samoa skipped Friday 30 December 2011, from Thursday 23:59:59 straight to Saturday
    samoa = calendar({"mon-sun": "00:00-24:00"}, zone="Pacific/Apia")
    apia = ZoneInfo("Pacific/Apia")
    thursday = datetime(2011, 12, 29, 12, tzinfo=apia)
    assert samoa.add(thursday, days=1) == datetime(2011, 12, 31, 12, tzinfo=apia)
    assert samoa.working_seconds_between(thursday, datetime(2011, 12, 31, 12, tzinfo=apia)) == 24 * HOUR


def test_santiago_falls_back_across_midnight():
    # Sunday 5 April 2026 00:00 -03 becomes Saturday 4 April 23:00 -04: Saturday 23:00-24:00 twice
    saturday_nights = calendar({"sat": "23:00-24:00"}, zone="America/Santiago")
    santiago = ZoneInfo("America/Santiago")
    start = datetime(2026, 4, 4, 22, tzinfo=santiago)
    assert saturday_nights.working_seconds_between(start, start + timedelta(days=1)) == 2 * HOUR
    assert utc(saturday_nights.add(start, seconds=90 * 60)) == datetime(2026, 4, 5, 3, 30, tzinfo=UTC)


# -- bad specs ---------------------------------------------------------------------------------

@pytest.mark.parametrize("fields,problem", [
    ({"hours": {"mon-fry": "09:00-18:00"}}, "mon-fry: unknown day 'fry' in 'mon-fry'"),
    ({"hours": {"fri-mon": "09:00-18:00"}}, "range 'fri-mon' goes backwards: days run mon to sun (write fri-sun, mon)"),
    ({"hours": {"Sat-Tue": "09:00-18:00"}}, "(write sat-sun, mon-tue)"),
    ({"hours": {"mon-fri, wed": "09:00-18:00"}}, "wed is named twice in 'mon-fri, wed'"),
    ({"hours": {"mon-fri": "09:00-18:00", "fri": "09:00-16:00"}}, "fri is given twice ('mon-fri' and 'fri')"),
    ({"hours": {"mon": "25:00-26:00"}}, "not between 00:00 and 24:00"),
    ({"hours": {"mon": "09:60-18:00"}}, "not between 00:00 and 24:00"),
    ({"hours": {"mon": "9h-18h"}}, "opening '9h-18h' is not like \"09:00-18:00\""),
    ({"hours": {"mon": "18:00-09:00"}}, "ends before it starts: openings across midnight are not supported"),
    ({"hours": {"mon": "09:00-09:00"}}, "ends before it starts"),
    ({"hours": {"mon": "09:00-13:00, 12:00-18:00"}}, "openings 09:00-13:00 and 12:00-18:00 overlap"),
    ({"hours": {"mon": 1080}}, 'openings are text like "09:00-18:00", got 1080'),
    ({"hours": {"mon": []}}, "no opening given"),
    ({"hours": {}}, "a calendar needs hours"),
    ({"hours": None}, "a calendar needs hours"),
    ({"time_zone": "Europe/Pariss"}, "unknown time zone 'Europe/Pariss'"),
    ({"time_zone": "x" * 300}, "unknown time zone"),
    ({"holidays": ["2026-02-30"]}, "holiday '2026-02-30' is not a date like 2026-12-25"),
    ({"holidays": ["25/12/2026"]}, "holiday '25/12/2026' is not a date"),
    ({"holidays": [datetime(2026, 12, 25, 10)]}, "has a time of day"),
    ({"color": "red"}, "Extra inputs are not permitted"),
])
def test_bad_specs_are_refused_with_a_clear_message(fields, problem):
    data = {"time_zone": "Europe/Paris", "hours": {"mon-fri": "09:00-18:00"}, **fields}
    with pytest.raises(ValidationError) as e:
        CalendarSpec.model_validate(data)
    assert problem in str(e.value)


def test_a_spec_error_is_a_value_error_naming_where():
    with pytest.raises(ValidationError) as e:
        CalendarSpec(time_zone="Europe/Paris", holidays=["2026-12-25", "nope"], hours={"mon": "09:00-18:00"})
    assert e.value.errors()[0]["loc"] == ("holidays", 1)
    assert isinstance(e.value.errors()[0]["ctx"]["error"], ValueError)


def test_spec_spellings():
    spec = CalendarSpec(time_zone="UTC", hours={"Mon, WED-thu": "9:00 - 12:00,12:00-18:00", "sun": "10:00-24:00"})
    week = spec.build("x").week
    assert week == ((((9 * HOUR, 18 * HOUR),)), (), ((9 * HOUR, 18 * HOUR),), ((9 * HOUR, 18 * HOUR),), (), (),
                    ((10 * HOUR, 24 * HOUR),))
    with pytest.raises(ValidationError):
        spec.time_zone = "UTC"                               # frozen


def test_a_calendar_without_openings_cannot_be_made_by_hand():
    with pytest.raises(ValueError):
        Calendar(name="x", zone=PARIS, week=((),) * 7)


# -- durations ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text,parts", [
    ("2d", (0, 2, 0)), ("1d12h", (0, 1, 43200)), ("90m", (0, 0, 5400)), ("1w", (1, 0, 0)),
    ("2w 3d 1h 1m 1s", (2, 3, 3661)), ("1D", (0, 1, 0)), (45, (0, 0, 45)),
])
def test_duration_parts(text, parts):
    assert duration_parts(text) == DurationParts(*parts)


@pytest.mark.parametrize("bad", ["5x", "", "0s", "5 days", -3, True, None])
def test_bad_durations_are_refused_as_the_rules_file_does(bad):
    with pytest.raises(ValueError) as ours:
        duration_parts(bad)
    with pytest.raises(ValueError) as theirs:
        parse_duration(bad)
    assert str(ours.value) == str(theirs.value)


@given(st.lists(st.tuples(st.integers(0, 999), st.sampled_from("smhdwSMHDW"), st.sampled_from(["", " "])),
                min_size=1, max_size=5))
def test_duration_parts_add_up_to_parse_duration(pieces):
    text = "".join(f"{n}{space}{unit}" for n, unit, space in pieces)
    try:
        total = parse_duration(text)
    except ValueError:
        with pytest.raises(ValueError):
            duration_parts(text)
        return
    weeks, days, seconds = duration_parts(text)
    assert weeks * 7 * 86400 + days * 86400 + seconds == total


# -- properties --------------------------------------------------------------------------------

ZONES = ["Europe/Paris", "America/New_York", "America/Santiago", "Australia/Lord_Howe", "America/Havana",
         "Asia/Kolkata", "Pacific/Apia", "UTC"]
# days of summer-time changes, where starts are drawn half of the time
CHANGES = [datetime(*d, tzinfo=UTC) for d in [(2026, 3, 8), (2026, 3, 29), (2026, 10, 25), (2026, 11, 1),
                                               (2026, 4, 5), (2026, 9, 6), (2026, 10, 4), (2011, 12, 30)]]
QUARTER = 15 * 60


@st.composite
def openings(draw):
    """A day's openings on quarter hours, disjoint and not touching, as text."""
    bounds = sorted(draw(st.sets(st.integers(0, 96), max_size=6)))
    bounds = bounds[:len(bounds) // 2 * 2]
    return ", ".join(f"{a * QUARTER // HOUR:02d}:{a * QUARTER % HOUR // 60:02d}-"
                     f"{b * QUARTER // HOUR:02d}:{b * QUARTER % HOUR // 60:02d}"
                     for a, b in zip(bounds[::2], bounds[1::2]))


@st.composite
def calendars(draw):
    days = draw(st.lists(openings(), min_size=7, max_size=7))
    hours = {name: text for name, text in zip(["mon", "tue", "wed", "thu", "fri", "sat", "sun"], days) if text}
    assume(hours)
    holidays = draw(st.lists(st.dates(date(2011, 12, 1), date(2027, 1, 31)), max_size=40))
    return calendar(hours, zone=draw(st.sampled_from(ZONES)), holidays=holidays)


@st.composite
def instants(draw, step=1):
    near = draw(st.sampled_from(CHANGES)) + timedelta(seconds=draw(st.integers(-3 * 86400, 3 * 86400)))
    anywhere = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=draw(st.integers(0, 366 * 86400)))
    moment = draw(st.sampled_from([near, anywhere]))
    return moment - timedelta(seconds=moment.second % step if step == 60 else 0)


WORK = st.integers(1, 3 * 7 * 86400)        # up to three weeks of working seconds


def is_position(cal, moment):
    """Open, or a closing (open the second before: openings last whole quarter hours)."""
    return cal.is_open(moment) or cal.is_open(moment - timedelta(seconds=1))


@settings(max_examples=200, deadline=None)
@given(calendars(), instants(), WORK)
def test_add_lands_in_an_opening_or_on_its_closing(cal, start, seconds):
    assert is_position(cal, cal.add(start, seconds=seconds))


@settings(max_examples=200, deadline=None)
@given(calendars(), instants(), WORK, WORK)
def test_add_is_monotonic_and_additive(cal, start, x, y):
    one, both = cal.add(start, seconds=x), cal.add(start, seconds=x + y)
    assert start <= one <= both
    assert cal.add(one, seconds=y) == both


@settings(max_examples=200, deadline=None)
@given(calendars(), instants(), WORK)
def test_working_seconds_between_undoes_add(cal, start, seconds):
    end = cal.add(start, seconds=seconds)
    assert cal.working_seconds_between(start, end) == seconds
    assert cal.working_seconds_between(end, start) == -seconds


@settings(max_examples=200, deadline=None)
@given(calendars(), instants())
def test_next_opening_is_the_first_open_instant(cal, moment):
    opening = cal.next_opening(moment)
    assert opening >= moment and cal.is_open(opening)
    assert cal.working_seconds_between(moment, opening) == 0
    assert (opening == moment) == cal.is_open(moment)


@settings(max_examples=60, deadline=None)
@given(calendars(), instants(step=60), st.integers(1, 2 * 24 * 60))
def test_working_seconds_agree_with_is_open_minute_by_minute(cal, start, minutes):
    # openings and these zones' changes fall on whole minutes, so minutes sampled are exact
    open_minutes = sum(cal.is_open(start + timedelta(minutes=i)) for i in range(minutes))
    assert cal.working_seconds_between(start, start + timedelta(minutes=minutes)) == open_minutes * 60


@settings(max_examples=200, deadline=None)
@given(calendars(), instants(), st.integers(1, 30))
def test_days_land_on_later_working_days_in_an_opening_or_on_its_closing(cal, start, days):
    one, more = cal.add(start, days=days), cal.add(start, days=days + 1)
    assert start < one < more
    assert is_position(cal, one) and is_position(cal, more)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["Europe/Paris", "America/New_York", "Australia/Lord_Howe"]), instants(),
       st.integers(1, 30))
def test_days_keep_the_time_of_day_when_every_working_day_has_the_same_hours(zone, start, days):
    cal = calendar({"mon-fri": "07:00-19:00"}, zone=zone)
    start = cal.next_opening(start)
    local, result = start.astimezone(cal.zone), cal.add(start, days=days).astimezone(cal.zone)
    assert result.time() == local.time()
    assert sum(1 for i in range(1, (result.date() - local.date()).days + 1)
               if (local.date() + timedelta(days=i)).weekday() < 5) == days
