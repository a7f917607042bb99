"""Business calendar (clearing/calendar.py): weekends, holidays, make-up
workdays, T+N and the CSV. Pure: no database.

The 2026 dates below are test data shaped like China's National Day week
(holidays 10-01..07, the Sunday before and the Saturday after made working
days), not an official calendar."""
from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clearing.calendar import BusinessCalendar, CalendarError, parse_calendar_csv

NATIONAL_DAY = frozenset(date(2026, 10, d) for d in range(1, 8))
MAKE_UP = frozenset({date(2026, 9, 20), date(2026, 10, 10)})  # Sunday, Saturday
CAL = BusinessCalendar(NATIONAL_DAY, MAKE_UP)
PLAIN = BusinessCalendar(frozenset())

CSV = """\ufeffdate,kind
# National Day 2026
2026-10-01,holiday
2026-10-02,holiday
2026-10-03,holiday
2026-10-04,holiday
2026-10-05, holiday
2026-10-06,holiday
2026-10-07,holiday

2026-09-20,workday
 2026-10-10 ,workday
"""


def d(text: str) -> date:
    return date.fromisoformat(text)


# -- business days -------------------------------------------------------------------

@pytest.mark.parametrize("day, business", [
    ("2026-09-18", True),    # Friday
    ("2026-09-19", False),   # Saturday
    ("2026-09-20", True),    # Sunday made a working day
    ("2026-09-30", True),    # Wednesday before the holiday
    ("2026-10-01", False),   # Thursday, holiday
    ("2026-10-03", False),   # Saturday and holiday
    ("2026-10-07", False),   # Wednesday, holiday
    ("2026-10-08", True),    # Thursday
    ("2026-10-10", True),    # Saturday made a working day
    ("2026-10-11", False),   # Sunday
])
def test_is_business_day(day, business):
    assert CAL.is_business_day(d(day)) is business


def test_without_holidays_weekdays_are_business_days():
    week = [d("2026-03-02") + timedelta(days=i) for i in range(7)]  # Monday..Sunday
    assert [PLAIN.is_business_day(x) for x in week] == [True] * 5 + [False] * 2


# -- T+N ----------------------------------------------------------------------------------

def test_t_plus_1_over_a_weekend():
    assert PLAIN.add_business_days(d("2026-03-06"), 1) == d("2026-03-09")  # Fri -> Mon
    assert PLAIN.add_business_days(d("2026-03-07"), 1) == d("2026-03-09")  # Sat -> Mon
    assert PLAIN.add_business_days(d("2026-03-08"), 1) == d("2026-03-09")  # Sun -> Mon
    assert PLAIN.add_business_days(d("2026-03-05"), 1) == d("2026-03-06")  # Thu -> Fri


@pytest.mark.parametrize("start, n, expected", [
    ("2026-09-30", 1, "2026-10-08"),   # across the whole holiday
    ("2026-09-30", 2, "2026-10-09"),
    ("2026-09-30", 3, "2026-10-10"),   # the Saturday workday counts
    ("2026-09-30", 4, "2026-10-12"),   # Sunday 10-11 does not
    ("2026-10-03", 1, "2026-10-08"),   # from inside the holiday
    ("2026-09-18", 1, "2026-09-20"),   # Friday -> the Sunday workday
    ("2026-09-19", 1, "2026-09-20"),
    ("2026-09-18", 2, "2026-09-21"),
    ("2026-09-25", 5, "2026-10-09"),   # Fri: 28, 29, 30, 10-08, 10-09
])
def test_t_plus_n_across_a_holiday_and_make_up_days(start, n, expected):
    assert CAL.add_business_days(d(start), n) == d(expected)


@pytest.mark.parametrize("start, expected", [
    ("2026-10-01", "2026-10-08"),   # T+0 on a holiday: the next business day
    ("2026-10-04", "2026-10-08"),   # on a holiday weekend
    ("2026-10-10", "2026-10-10"),   # on a Saturday workday: that day
    ("2026-10-11", "2026-10-12"),   # on a plain Sunday
    ("2026-09-30", "2026-09-30"),   # on a business day: that day
])
def test_t_plus_0(start, expected):
    assert CAL.add_business_days(d(start), 0) == d(expected)


def test_t_plus_0_and_t_plus_1_coincide_only_off_business_days():
    assert CAL.add_business_days(d("2026-10-01"), 0) == CAL.add_business_days(d("2026-10-01"), 1)
    assert CAL.add_business_days(d("2026-09-30"), 0) != CAL.add_business_days(d("2026-09-30"), 1)


def test_next_business_day_is_strictly_after():
    assert CAL.next_business_day(d("2026-09-30")) == d("2026-10-08")
    assert CAL.next_business_day(d("2026-10-08")) == d("2026-10-09")
    assert CAL.next_business_day(d("2026-10-09")) == d("2026-10-10")


def test_a_year_boundary():
    new_year = BusinessCalendar(frozenset({d("2027-01-01")}))
    assert new_year.add_business_days(d("2026-12-31"), 1) == d("2027-01-04")  # Thu -> Mon


@given(start=st.dates(date(2025, 1, 1), date(2027, 12, 31)), n=st.integers(0, 60))
def test_t_plus_n_is_a_business_day_with_n_business_days_after_the_start(start, n):
    end = CAL.add_business_days(start, n)
    assert CAL.is_business_day(end)
    assert end >= start
    between = [start + timedelta(days=i) for i in range(1, (end - start).days + 1)]
    counted = sum(CAL.is_business_day(x) for x in between)
    if n == 0:
        assert counted == (0 if CAL.is_business_day(start) else 1)
    else:
        assert counted == n


@pytest.mark.parametrize("args", [
    (datetime(2026, 10, 1, 9), 1),
    ("2026-10-01", 1),
    (date(2026, 10, 1), -1),
    (date(2026, 10, 1), True),
    (date(2026, 10, 1), 1.0),
    (date(2026, 10, 1), 10_000),
])
def test_add_business_days_refuses(args):
    with pytest.raises(ValueError):
        CAL.add_business_days(*args)


def test_a_datetime_is_not_a_business_date():
    with pytest.raises(ValueError, match="not a date-time"):
        CAL.is_business_day(datetime(2026, 10, 1, 9))


# -- the calendar itself -----------------------------------------------------------------

def test_a_date_cannot_be_holiday_and_workday():
    with pytest.raises(CalendarError, match="2026-10-03 is both"):
        BusinessCalendar(frozenset({d("2026-10-03")}), frozenset({d("2026-10-03")}))


def test_a_workday_must_be_a_weekend_day():
    with pytest.raises(CalendarError, match="2026-10-09 is a weekday"):
        BusinessCalendar(frozenset(), frozenset({d("2026-10-09")}))


def test_calendar_dates_must_be_dates():
    with pytest.raises(CalendarError, match="must be dates"):
        BusinessCalendar(frozenset({datetime(2026, 10, 1)}))


# -- CSV --------------------------------------------------------------------------------

def test_parse_calendar_csv():
    assert parse_calendar_csv(CSV) == CAL


def test_parse_without_header_and_empty():
    assert parse_calendar_csv("2026-10-01,holiday\n") == \
        BusinessCalendar(frozenset({d("2026-10-01")}))
    assert parse_calendar_csv("") == PLAIN


@pytest.mark.parametrize("text, line, message", [
    ("2026-10-01\n", 1, "expected 'date,kind'"),
    ("date,kind\n2026-10-01,holiday,extra\n", 2, "got 3 field"),
    ("2026-10-01,holiday\n2026-13-01,holiday\n", 2, "not a date"),
    ("01/10/2026,holiday\n", 1, "not a date"),
    ("20261001,holiday\n", 1, "not a date"),
    ("2026-W40-4,holiday\n", 1, "not a date"),
    ("2026-10-01,Holiday\n", 1, "kind 'Holiday'"),
    ("2026-10-01,\n", 1, "kind ''"),
    ("# c\n\n2026-10-01,holiday\n2026-10-01,holiday\n", 4, "already listed on line 3"),
    ("2026-10-01,holiday\n2026-10-01,workday\n", 2, "already listed on line 1"),
    ("2026-10-09,workday\n", 1, "is a Friday"),
    ("2026-10-01,holiday\ndate,kind\n", 2, "not a date"),  # a header only comes first
])
def test_csv_errors_name_the_line(text, line, message):
    with pytest.raises(CalendarError, match=message) as caught:
        parse_calendar_csv(text)
    assert caught.value.line == line
    assert str(caught.value).startswith(f"line {line}: ")


def test_csv_must_be_text():
    with pytest.raises(CalendarError):
        parse_calendar_csv(b"2026-10-01,holiday")  # type: ignore[arg-type]
