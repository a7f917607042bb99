"""Exports for finance: money shown to people as decimal amounts.

Amounts stay integer minor units everywhere inside; ``moneyed`` turns them
into decimal amounts only here, at the edge, using each currency's own
number of minor units (100 for CNY, 1 for JPY).
"""
from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal

import moneyed

import ledger

PAGE = 1000
STATEMENT_COLUMNS = ("posted_at", "entry_id", "entry_code", "description", "debit", "credit",
                     "balance", "currency")


def to_money(amount_minor: int, currency: str) -> moneyed.Money:
    sub_unit = moneyed.get_currency(currency).sub_unit
    return moneyed.Money(Decimal(amount_minor) / Decimal(sub_unit), currency)


def decimal_text(amount_minor: int, currency: str) -> str:
    """``12345, "CNY"`` -> ``"123.45"``: exact, never through a float."""
    sub_unit = moneyed.get_currency(currency).sub_unit
    places = len(str(sub_unit)) - 1
    return f"{to_money(amount_minor, currency).amount:.{places}f}"


def statement_csv(session, account: str, start: datetime, end: datetime) -> Iterator[str]:
    """The whole statement as CSV text, produced page by page, so a year of a
    busy account never sits in memory at once. An opening and a closing row
    frame the lines, as on a bank statement."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(STATEMENT_COLUMNS)
    cursor = None
    first = True
    while True:
        page = ledger.statement(session, account, start, end, cursor=cursor, limit=PAGE)
        currency = page.account.currency
        if first:
            writer.writerow([start.isoformat(), "", "opening_balance", "", "", "",
                             decimal_text(page.opening_balance_minor, currency), currency])
            first = False
        for line in page.lines:
            amount = decimal_text(line.amount_minor, currency)
            writer.writerow([
                line.posted_at.isoformat(), line.entry_id, line.entry_code, line.description,
                amount if line.side.value == "debit" else "",
                amount if line.side.value == "credit" else "",
                decimal_text(line.balance_after_minor, currency), currency,
            ])
        yield flush()
        if page.next_cursor is None:
            writer.writerow([end.isoformat(), "", "closing_balance", "", "", "",
                             decimal_text(page.closing_balance_minor, currency), currency])
            yield flush()
            return
        cursor = page.next_cursor
