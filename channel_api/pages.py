"""Keyset pages for the money listings (payouts, settlement batches, clawback
advances, split instructions and returns): ordered by id, the cursor being
the public id of the last row of the previous page."""
from __future__ import annotations

from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from .errors import InvalidInput

MAX_LIST_LIMIT = 500


def page(session: Session, query: Select, model: Any, *, after: str | None, limit: Any,
         noun: str, newest_first: bool = True) -> tuple[list, str | None]:
    """``limit`` rows of ``query`` (over ``model``, which has ``id`` and
    ``public_id``) after the row ``after`` names, and the cursor of the next
    page (None: this is the last). ``noun`` names the rows in errors."""
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIST_LIMIT}", field="limit")
    if after is not None:
        anchor = session.scalar(select(model.id).where(model.public_id == after))
        if anchor is None:
            raise InvalidInput(f"after must be {noun} id from an earlier page", field="after")
        query = query.where(model.id < anchor if newest_first else model.id > anchor)
    order = model.id.desc() if newest_first else model.id
    rows = list(session.scalars(query.order_by(order).limit(limit + 1)))
    return rows[:limit], (rows[limit - 1].public_id if len(rows) > limit else None)
