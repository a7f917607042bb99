"""The machinery every CSV import and export shares.

An import runs in two passes over the whole file:

1. **check**: every row is validated (the same validators the use cases
   apply, plus references resolved against the database and the file
   itself); every problem becomes a :class:`RowError` (line, field, reason),
   and checking goes on to the end so one report names them all;
2. **apply**: only when no row failed, the planned creates and updates are
   written in bulk (executemany in chunks), in the caller's transaction.

So a file is all-or-nothing, and re-importing the same file changes nothing
(rows equal to what is stored count as ``unchanged``). Each run is recorded
in ``channel_import`` with its counts and bad rows, applied or rejected.
"""
from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import moneyed

from ledger import DomainError, as_utc, new_uuid7, utcnow

from ..models import ImportRun

CHUNK = 5000
MAX_MINOR = 10**15  # ten trillion yuan: far above any price, far inside BIGINT
MAX_REPORTED_ERRORS = 1000  # a report stays readable; the count says how many in all
Progress = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass(frozen=True)
class RowError:
    line: int
    field: str
    reason: str


@dataclass
class ImportReport:
    import_id: str
    kind: str
    status: str  # "applied" or "rejected"
    rows: int
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    error_count: int = 0
    errors: list[RowError] = field(default_factory=list)


class FileError(DomainError):
    """The file as a whole cannot be read (encoding, header)."""

    code = "import_rejected"


class Rows:
    """The parsed rows of a file with its line numbers, and the errors found."""

    def __init__(self, records: list[tuple[int, dict[str, str]]], header: list[str]):
        self.records = records
        self.header = header
        self.errors: list[RowError] = []
        self.error_count = 0

    def error(self, line: int, field_name: str, reason: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(RowError(line, field_name, reason))

    def check(self, line: int, fn, *args, **kwargs):
        """Run a validator; a DomainError/ValueError becomes a row error
        (naming the validator's field) and the result is None."""
        try:
            return fn(*args, **kwargs)
        except DomainError as error:
            self.error(line, str(error.details.get("field", "")), error.message)
        except ValueError as error:
            self.error(line, getattr(error, "field", ""), str(error))
        return None

    def __len__(self) -> int:
        return len(self.records)


def read_csv(data: bytes | str, columns: Sequence[str], required: Sequence[str]) -> Rows:
    """Parse UTF-8 CSV (a BOM, as Excel writes, is accepted) with a header row.
    Unknown or missing required columns fail the whole file."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            raise FileError(f"the file is not UTF-8 text (byte {error.start})",
                            field="file") from None
    else:
        text = data.removeprefix("\ufeff")
    reader = csv.DictReader(io.StringIO(text, newline=""), restkey="__extra__", strict=True)
    header = reader.fieldnames or []
    unknown = [c for c in header if c not in columns]
    missing = [c for c in required if c not in header]
    if not header:
        raise FileError("the file is empty: it needs a header row", field="file")
    if unknown or missing:
        raise FileError(
            "the header does not match: "
            + "; ".join(filter(None, [unknown and f"unknown columns {', '.join(unknown)}",
                                      missing and f"missing columns {', '.join(missing)}"])),
            field="header", unknown=unknown, missing=missing, expected=list(columns))
    records: list[tuple[int, dict[str, str]]] = []
    try:
        for row in reader:
            line = reader.line_num
            if "__extra__" in row:
                records.append((line, {"__extra__": "x"}))
                continue
            records.append((line, {k: (v or "").strip() for k, v in row.items() if k}))
    except csv.Error as error:
        raise FileError(f"line {reader.line_num}: {error}", field="file") from None
    rows = Rows([r for r in records if "__extra__" not in r[1]], list(header))
    for line, row in records:
        if "__extra__" in row:
            rows.error(line, "", "the row has more fields than the header")
    return rows


def file_sha256(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


# -- cell parsers (each raises ValueError with a field, caught by Rows.check) ------

class CellError(ValueError):
    def __init__(self, message: str, field_name: str):
        super().__init__(message)
        self.field = field_name


def money_minor(text: str, currency: str, field_name: str) -> int:
    """``"12.50"`` CNY -> 1250, exactly; more decimals than the currency has
    are refused, never rounded."""
    try:
        sub_unit = moneyed.get_currency(currency).sub_unit
        amount = Decimal(text)
    except (InvalidOperation, moneyed.CurrencyDoesNotExist, ValueError):
        raise CellError(f"{field_name} must be a decimal amount such as 12.50", field_name) from None
    if not amount.is_finite():
        raise CellError(f"{field_name} must be a decimal amount such as 12.50", field_name)
    minor = amount * sub_unit
    if abs(minor) > MAX_MINOR:
        raise CellError(f"{field_name} is too large", field_name)
    if minor != minor.to_integral_value():
        raise CellError(f"{field_name} has more decimals than {currency} allows", field_name)
    if minor < 0:
        raise CellError(f"{field_name} must not be negative", field_name)
    return int(minor)


def money_text(amount_minor: int, currency: str) -> str:
    sub_unit = moneyed.get_currency(currency).sub_unit
    places = len(str(sub_unit)) - 1
    return f"{Decimal(amount_minor) / Decimal(sub_unit):.{places}f}"


def integer(text: str, field_name: str, minimum: int | None = None) -> int:
    try:
        value = int(text)
    except ValueError:
        raise CellError(f"{field_name} must be a whole number", field_name) from None
    if minimum is not None and value < minimum:
        raise CellError(f"{field_name} must be at least {minimum}", field_name)
    return value


def boolean(text: str, field_name: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "yes", "1", "y"):
        return True
    if lowered in ("false", "no", "0", "n", ""):
        return False
    raise CellError(f"{field_name} must be true or false", field_name)


def instant(text: str, field_name: str) -> datetime | None:
    """ISO 8601 with an offset (``2026-01-01T00:00:00+08:00``); empty = none."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CellError(f"{field_name} must be an ISO 8601 date-time", field_name) from None
    if value.tzinfo is None:
        raise CellError(f"{field_name} must include a timezone offset", field_name)
    return as_utc(value)


def instant_text(value: datetime | None) -> str:
    return "" if value is None else as_utc(value).isoformat().replace("+00:00", "Z")


def codes(text: str) -> list[str]:
    """A multi-valued cell: codes separated by ``|``."""
    return sorted({part.strip() for part in text.split("|") if part.strip()})


def codes_text(values: Iterable[str]) -> str:
    return "|".join(sorted(values))


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def record_run(session, *, kind: str, data: bytes | str, actor: str, rows: Rows,
               created: int, updated: int, unchanged: int, started_at: datetime) -> ImportReport:
    status = "rejected" if rows.error_count else "applied"
    run = ImportRun(public_id="imp_" + new_uuid7().hex, kind=kind, file_sha256=file_sha256(data),
                    status=status, actor=actor[:80], rows=len(rows), created=created,
                    updated=updated, unchanged=unchanged,
                    errors=[e.__dict__ for e in rows.errors], started_at=started_at,
                    finished_at=utcnow())
    session.add(run)
    session.flush()
    return ImportReport(run.public_id, kind, status, len(rows), created, updated, unchanged,
                        rows.error_count, list(rows.errors))


def write_csv(columns: Sequence[str], records: Iterable[dict[str, Any]]) -> Iterator[str]:
    """CSV text in pieces of about a thousand rows (streamed to the client)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for count, record in enumerate(records, 1):
        writer.writerow(record)
        if count % 1000 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
