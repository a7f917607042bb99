"""Pure calculations of returns and refunds (no database).

**What a return is worth.** Returning ``q`` of a line's ``Q`` units gives
back ``floor(line_total * q / Q)``; the return that brings the line's
returned quantity to ``Q`` gives back exactly what is left of the line, so a
line returned in several steps gives back its total to the fen. An
order-level discount (promotions, later) is shared the same way:
``floor(value * total / subtotal)``, and the return that returns everything
gives back what is left of the order's total.

**Where a refund goes.** A refund is shared among the plan's parts in
proportion to what each part still has to give back (captured minus
refunded): each share rounded down to the fen, then the fen left over go
one at a time to the parts with the most room left (ties in the order
prepaid, rebate, credit, offline). So the shares add up exactly to the
refund and no part ever gives back more than it took.
"""
from __future__ import annotations

from typing import Mapping

METHOD_ORDER = ("prepaid", "rebate", "credit", "offline", "gateway")


def line_refund(line_total: int, quantity: int, returned_before: int, refunded_before: int,
                returning: int) -> int:
    """What returning ``returning`` more units of a line gives back."""
    if not 0 < returning <= quantity - returned_before:
        raise ValueError("returning more than is left of the line")
    if returned_before + returning == quantity:
        return line_total - refunded_before
    return line_total * returning // quantity


def order_share(value: int, subtotal: int, total: int, refunded_before: int,
                everything_returned: bool) -> int:
    """The part of the order's total a return of lines worth ``value`` gives back."""
    if everything_returned:
        return total - refunded_before
    if subtotal == 0:
        return 0
    return value * total // subtotal


def allocate(amount: int, room: Mapping[str, int]) -> dict[str, int]:
    """Share ``amount`` among funding parts in proportion to ``room`` (what
    each may still give back). Every share is within its room; the shares
    add up to ``amount``."""
    total_room = sum(room.values())
    if amount < 0 or amount > total_room:
        raise ValueError(f"cannot refund {amount}; at most {total_room} is refundable")
    if amount == 0:
        return {method: 0 for method in room}
    shares = {method: amount * r // total_room for method, r in room.items()}
    left = amount - sum(shares.values())
    rank = sorted(room, key=lambda m: (-(room[m] - shares[m]),
                                       METHOD_ORDER.index(m) if m in METHOD_ORDER else 99, m))
    while left:
        for method in rank:
            if left and shares[method] < room[method]:
                shares[method] += 1
                left -= 1
    return shares
