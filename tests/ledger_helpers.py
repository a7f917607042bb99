"""Small helpers that let ledger tests read like journal pages."""
from __future__ import annotations

from ledger import EntryRequest, PostingLine, get_account, post_entry

CNY = "CNY"


def lines(*rows) -> list[PostingLine]:
    """``("Dr", "custody:bank", 100)`` rows to posting lines in CNY."""
    return [
        PostingLine(account, "debit" if side == "Dr" else "credit", amount, CNY)
        for side, account, amount in rows
    ]


def post(session, code, *rows, **kwargs):
    return post_entry(session, EntryRequest(code, lines(*rows), **kwargs))


def balance(session, code) -> int:
    return get_account(session, code).posted_minor
