"""The business calendar: which dates are business days, and T+N.

Pure values and functions: standard library only. The calendar is loaded
from a CSV that finance maintains (``parse_calendar_csv``), because China's
official holidays are announced a year at a time and move weekend days:

* a **holiday** is a date that is not a business day (National Day,
  2026-10-01..07), whatever its weekday;
* a **workday** is a Saturday or Sunday declared a working day (调休, the
  make-up days around a long holiday), so it *is* a business day.

Every other Monday to Friday is a business day and every other Saturday and
Sunday is not. A date outside the years the CSV covers is treated as an
ordinary week, so load each year's calendar before clearing into it.

Dates are business dates in the brand's timezone (``CL_TIMEZONE``); a
``datetime`` is refused rather than silently cut to its UTC date.

T+N
---

``add_business_days(d, n)`` is T+N counted from ``d``:

* **T+N, N >= 1**: the Nth business day *after* ``d``; ``d`` itself never
  counts, whether or not it is a business day.
* **T+0**: ``d`` when it is a business day, else the next business day
  (money due "today" on a holiday is due on the first day banks work).

So for a non-business ``d``, T+0 and T+1 fall on the same day: cash paid on
a Saturday is T+1 on Monday, like cash paid on the Friday before.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

HOLIDAY = "holiday"
WORKDAY = "workday"
KINDS: tuple[str, ...] = (HOLIDAY, WORKDAY)
SATURDAY, SUNDAY = 5, 6
MAX_BUSINESS_DAYS = 3660  # T+N beyond ten years is a mistake, not a settlement term
_DAY = timedelta(days=1)
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class CalendarError(ValueError):
    """A calendar that contradicts itself, or a CSV line that cannot be
    read; ``line`` is the 1-based CSV line number, when there is one."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(f"line {line}: {message}" if line is not None else message)
        self.line = line


def _is_date(value: Any) -> bool:
    return isinstance(value, date) and not isinstance(value, datetime)


def _check_date(value: Any, name: str = "d") -> date:
    if not _is_date(value):
        raise ValueError(f"{name} must be a date (a business date, not a date-time)")
    return value


def _is_weekend(d: date) -> bool:
    return d.weekday() in (SATURDAY, SUNDAY)


@dataclass(frozen=True)
class BusinessCalendar:
    """``holidays``: dates that are not business days; ``workdays``: weekend
    dates that are. A date cannot be both, and a workday must fall on a
    weekend (a weekday is a business day already, so listing one is a
    typo for another date)."""

    holidays: frozenset[date]
    workdays: frozenset[date] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "holidays", self._dates(self.holidays, "holidays"))
        object.__setattr__(self, "workdays", self._dates(self.workdays, "workdays"))
        both = self.holidays & self.workdays
        if both:
            raise CalendarError(f"{min(both).isoformat()} is both a holiday and a workday")
        weekday = [d for d in self.workdays if not _is_weekend(d)]
        if weekday:
            raise CalendarError(f"workday {min(weekday).isoformat()} is a weekday, not a "
                                "weekend day made a working day")

    @staticmethod
    def _dates(values: Iterable[date], name: str) -> frozenset[date]:
        dates = frozenset(values)
        if not all(_is_date(d) for d in dates):
            raise CalendarError(f"{name} must be dates")
        return dates

    def is_business_day(self, d: date) -> bool:
        _check_date(d)
        if d in self.workdays:
            return True
        return d not in self.holidays and not _is_weekend(d)

    def next_business_day(self, d: date) -> date:
        """The first business day strictly after ``d``."""
        day = _check_date(d) + _DAY
        while not self.is_business_day(day):  # ends: holidays are finite
            day += _DAY
        return day

    def add_business_days(self, d: date, n: int) -> date:
        """T+``n`` from ``d`` (module docstring: T+0 and T+N)."""
        _check_date(d)
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_BUSINESS_DAYS:
            raise ValueError(f"n must be a whole number from 0 to {MAX_BUSINESS_DAYS}")
        if n == 0:
            return d if self.is_business_day(d) else self.next_business_day(d)
        day = d
        for _ in range(n):
            day = self.next_business_day(day)
        return day


def parse_calendar_csv(text: str) -> BusinessCalendar:
    """A calendar from lines ``date,kind`` (ISO date, ``holiday`` or
    ``workday``). Blank lines, ``#`` comments, a first line ``date,kind`` and
    a leading byte-order mark (spreadsheet exports) are skipped; spaces
    around fields are ignored. Raises ``CalendarError`` naming the first bad
    line: wrong number of fields, a bad date or kind, a date listed twice, a
    workday on a weekday."""
    if not isinstance(text, str):
        raise CalendarError("the calendar must be text")
    holidays: set[date] = set()
    workdays: set[date] = set()
    seen: dict[date, int] = {}
    header_allowed = True
    for number, raw in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split(",")]
        if header_allowed and [f.lower() for f in fields] == ["date", "kind"]:
            header_allowed = False
            continue
        header_allowed = False
        if len(fields) != 2:
            raise CalendarError(f"expected 'date,kind', got {len(fields)} field(s)", number)
        text_date, kind = fields
        try:
            # fromisoformat alone would also take 20261001 and 2026-W40-4
            if not _ISO_DATE.fullmatch(text_date):
                raise ValueError
            d = date.fromisoformat(text_date)
        except ValueError:
            raise CalendarError(f"{text_date!r} is not a date (YYYY-MM-DD)", number) from None
        if kind not in KINDS:
            raise CalendarError(f"kind {kind!r} must be one of {', '.join(KINDS)}", number)
        if d in seen:
            raise CalendarError(f"{d.isoformat()} is already listed on line {seen[d]}", number)
        seen[d] = number
        if kind == WORKDAY:
            if not _is_weekend(d):
                raise CalendarError(f"workday {d.isoformat()} is a {d.strftime('%A')}: only a "
                                    "Saturday or Sunday can be made a working day", number)
            workdays.add(d)
        else:
            holidays.add(d)
    return BusinessCalendar(frozenset(holidays), frozenset(workdays))
