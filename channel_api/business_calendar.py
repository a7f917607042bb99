"""The business calendar (issue 6): weekends are days off, plus the
holidays and make-up workdays the brand configures; clearing's T+N counts
its business days (``clearing.calendar``)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from clearing.calendar import BusinessCalendar, CalendarError, parse_calendar_csv
from clearing.models import MAX_NOTE_LENGTH, CalendarDay

from . import audit
from .errors import InvalidInput


def _actor(actor: Any) -> str:
    if not isinstance(actor, str) or not actor.strip():
        raise InvalidInput("actor must name who makes the change", field="actor")
    return actor.strip()[:80]


@dataclass(frozen=True)
class CalendarDayView:
    day: date
    kind: str
    note: str


@dataclass(frozen=True)
class CalendarChange:
    holidays: int
    workdays: int
    added: int
    removed: int
    changed: int


# -- the calendar --------------------------------------------------------------

def _unquote(note: str) -> str:
    """A spreadsheet quotes a note holding a comma: ``"National Day, 1"``."""
    if len(note) >= 2 and note[0] == note[-1] == '"':
        return note[1:-1].replace('""', '"')
    return note


def _parse_calendar(csv_text: Any) -> tuple[BusinessCalendar, dict[date, str]]:
    """The calendar and each date's note from lines ``date,kind[,note]``.
    ``clearing.calendar.parse_calendar_csv`` reads the first two fields
    (the one set of rules for a calendar); the note, free text that may
    hold commas, is taken off here first, line numbers kept."""
    if isinstance(csv_text, bytes):
        try:
            csv_text = csv_text.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput("the calendar must be UTF-8 text", field="csv") from None
    if not isinstance(csv_text, str):
        raise InvalidInput("the calendar must be CSV text", field="csv")
    if not csv_text.removeprefix("\ufeff").strip():
        # Most likely a file that did not get attached: say so rather than
        # wipe every holiday. The header line alone clears the calendar.
        raise InvalidInput("the calendar is empty; send the line date,kind alone to clear it",
                           field="csv")
    two_fields, notes = [], {}
    for number, raw in enumerate(csv_text.removeprefix("\ufeff").splitlines(), start=1):
        fields = raw.strip().split(",", 2)
        if raw.strip().startswith("#") or len(fields) < 3:
            two_fields.append(raw)
            continue
        if [f.strip().lower() for f in fields] == ["date", "kind", "note"]:
            two_fields.append("date,kind")
            continue
        note = _unquote(fields[2].strip())
        if len(note) > MAX_NOTE_LENGTH:
            raise InvalidInput(f"line {number}: a note has at most {MAX_NOTE_LENGTH} characters",
                               field="csv", line=number)
        two_fields.append(",".join(fields[:2]))
        notes[number] = (fields[0].strip(), note)
    try:
        parsed = parse_calendar_csv("\n".join(two_fields))
    except CalendarError as exc:
        raise InvalidInput(str(exc), field="csv", line=exc.line) from None
    return parsed, {date.fromisoformat(day): note for day, note in notes.values()}


def set_calendar(session: Session, csv_text: str | bytes, actor: str) -> CalendarChange:
    """Replace the business calendar with the CSV's (``date,kind[,note]``;
    ``clearing.calendar``: the format and its checks). The file is the whole
    calendar finance keeps, every year in it: a date left out becomes an
    ordinary day again; the header line alone clears it, an empty text is
    refused. Nothing changes on a bad line (``field`` csv, its ``line``);
    audited when anything changed."""
    actor = _actor(actor)
    parsed, notes = _parse_calendar(csv_text)
    wanted = {d: ("holiday", notes.get(d, "")) for d in parsed.holidays}
    wanted.update({d: ("workday", notes.get(d, "")) for d in parsed.workdays})
    stored = {row.day: row for row in session.scalars(select(CalendarDay))}
    removed = sorted(set(stored) - set(wanted))
    added = sorted(set(wanted) - set(stored))
    changed = sorted(d for d in set(wanted) & set(stored)
                     if (stored[d].kind, stored[d].note) != wanted[d])
    if removed:
        session.execute(delete(CalendarDay).where(CalendarDay.day.in_(removed)))
    for d in changed:
        stored[d].kind, stored[d].note = wanted[d]
    session.add_all(CalendarDay(day=d, kind=wanted[d][0], note=wanted[d][1]) for d in added)
    result = CalendarChange(len(parsed.holidays), len(parsed.workdays), len(added), len(removed),
                            len(changed))
    if added or removed or changed:
        audit.record(session, actor=actor, action="business_calendar.set",
                     subject_type="business_calendar", subject="calendar",
                     details={**asdict(result),
                              "removed_days": [d.isoformat() for d in removed[:100]]})
    session.flush()
    return result


def calendar(session: Session) -> BusinessCalendar:
    """The stored calendar, for T+N (``BusinessCalendar.add_business_days``)."""
    rows = session.execute(select(CalendarDay.day, CalendarDay.kind)).all()
    return BusinessCalendar(frozenset(d for d, kind in rows if kind == "holiday"),
                            frozenset(d for d, kind in rows if kind == "workday"))


def list_calendar(session: Session, *, year: int | None = None) -> list[CalendarDayView]:
    """The stored days in date order, of one year when given."""
    query = select(CalendarDay).order_by(CalendarDay.day)
    if year is not None:
        if not isinstance(year, int) or isinstance(year, bool) or not 1 <= year <= 9999:
            raise InvalidInput("year must be a year (1-9999)", field="year")
        query = query.where(CalendarDay.day >= date(year, 1, 1),
                            CalendarDay.day <= date(year, 12, 31))
    return [CalendarDayView(r.day, r.kind, r.note) for r in session.scalars(query)]


def calendar_csv(session: Session) -> str:
    """The stored calendar as the CSV ``set_calendar`` reads back."""
    def field(note: str) -> str:
        return f'"{note.replace(chr(34), chr(34) * 2)}"' if ("," in note or '"' in note) else note
    lines = ["date,kind,note"]
    lines += [f"{d.day.isoformat()},{d.kind},{field(d.note)}" for d in list_calendar(session)]
    return "\n".join(lines) + "\n"
