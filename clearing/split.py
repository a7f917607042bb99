"""Clearing legs and the split of an order's cash among them.

Pure values and functions: standard library only, no database, no web. The
database layer maps a clearing rule's rows to ``Leg``/``Timing``; clearing an
order's cash, unwinding it for a refund and checking a rule before it is
saved all call the functions here, so there is exactly one rule.

Legs
----

A clearing rule is a list of legs. A leg names a ``recipient`` (a role
resolved per order: ``seller``, ``brand``, ``buyer_upstream`` (the buyer's
upstream distributor), ``platform``; or a fixed party, ``party:<code>``), a
``basis`` and a ``value``, and a ``Timing`` (when the leg's money is released
from ``party:X:pending`` to the wallet: ``immediate``, ``on_delivery``, or
``t_plus`` N business days after delivery or payment).

=============  ==================================================  ===========
basis          the leg's amount for the whole order                ``value``
=============  ==================================================  ===========
``percent``    ``floor(cash * value / 10000)``                     basis points
``per_unit``   ``value * units``, prorated for partial cash        fen per unit
``per_order``  ``value``, prorated for partial cash                fen
``remainder``  what the other legs leave                           always 0
=============  ==================================================  ===========

``validate_legs`` refuses a rule that could not always be split: exactly one
remainder leg; percents 0..10000 and their sum strictly below 10000 (at 100%
the remainder leg, usually the seller, would get only rounding fen);
fixed amounts >= 0; whole numbers only (``True`` is not 1); no two legs with
the same recipient and timing (they would be one leg written twice); timing
days 0..365, ``t_plus`` at least 1 day, the days and the anchor only on
``t_plus``. Two symbolic recipients may still resolve to the same party for an
order (the seller is the brand); that is legitimate, and each leg stays its
own line in the split.

Remainder rule
--------------

``split(cash, legs, order_total_minor=..., units=...)`` splits cash that
arrived for an order:

1. Each percent leg takes ``floor(cash * bp / 10000)`` (rounded down to the
   fen, like every split in the ledger, ``docs/accounting.md`` "Rounding").
2. Each fixed leg (per unit, per order) is an amount for the whole order.
   When the cash is only part of the order total (a credit repayment clears
   part of an order) it takes ``floor(fixed * cash / order_total)``, so that
   clearing the order in parts never pays a fixed leg more than its amount.
   Cash equal to the order total takes the fixed amount whole.
3. The **remainder leg takes cash minus all the other legs**, which absorbs
   every fen the rounding down left, so the shares always add up exactly to
   the cash. When that would be negative (fixed legs larger than what the
   percentages leave), the rule does not fit the cash: ``SplitError`` with
   the shortfall. Cash above the order total is not the order's (it belongs
   in suspense or a deposit) and is refused the same way.

Zero-amount shares are **kept**: the result has one share per leg, in leg
order, with ``leg_index`` equal to its position. The inter-party document
then shows every leg of the rule (finance asks why a leg got nothing), a
share and its leg are matched by position, and ``unwind`` gets the same
shape back. Whoever posts to the ledger skips the zero lines.

``unwind(refund, shares)`` claws a refund back in proportion to what each leg
received: each leg gives back ``floor(refund * received / total)``; the fen
that rounding leaves go to the remainder leg, as far as it can give them
without giving back more than it received, then to the other legs, largest
first (lowest ``leg_index`` among equals). A remainder leg that got 0 thus
leaves them all to the largest leg. The clawbacks add up exactly to the
refund and never exceed what a leg received. For a second partial refund,
pass what each leg still holds (received minus clawed back so far).
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

Basis = Literal["percent", "per_unit", "per_order", "remainder"]
TimingKind = Literal["immediate", "on_delivery", "t_plus"]
Anchor = Literal["delivery", "payment"]

BASES: tuple[str, ...] = ("percent", "per_unit", "per_order", "remainder")
FIXED_BASES: tuple[str, ...] = ("per_unit", "per_order")
TIMING_KINDS: tuple[str, ...] = ("immediate", "on_delivery", "t_plus")
ANCHORS: tuple[str, ...] = ("delivery", "payment")
ROLE_RECIPIENTS: tuple[str, ...] = ("seller", "brand", "buyer_upstream", "platform")
PARTY_PREFIX = "party:"

BP_PER_UNIT = 10_000               # basis points in 100%
MAX_AMOUNT_MINOR = 2**63 - 1       # ledger amounts are signed 64-bit integers
MAX_TIMING_DAYS = 365
_PARTY_CODE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")  # the party code syntax of channel_api.parties


class RuleError(ValueError):
    """Legs that break a clearing rule; ``field`` names what is wrong
    (``legs``, ``legs[2].value``, ``legs[0].timing.days``, ...)."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


class SplitError(ValueError):
    """Cash that the legs cannot be split over, or a refund larger than what
    was cleared. ``shortfall_minor`` is how much the legs lack, when that is
    the reason."""

    def __init__(self, message: str, shortfall_minor: int | None = None):
        super().__init__(message)
        self.shortfall_minor = shortfall_minor


# -- values ---------------------------------------------------------------------

@dataclass(frozen=True)
class Timing:
    """When a leg's money is released: at once, on delivery, or ``days``
    business days after the ``anchor`` (T+N; ``clearing.calendar``)."""

    kind: TimingKind
    days: int = 0
    anchor: Anchor = "delivery"


IMMEDIATE = Timing("immediate")
ON_DELIVERY = Timing("on_delivery")


@dataclass(frozen=True)
class Leg:
    """``value``: basis points for ``percent`` (9200 = 92%), fen for
    ``per_unit`` and ``per_order``, 0 for ``remainder``."""

    recipient: str
    basis: Basis
    value: int
    timing: Timing


@dataclass(frozen=True)
class Share:
    """One leg's part of a split (or of an unwind). ``basis`` says which
    share is the remainder leg's; a share built without it (None) is never
    taken for the remainder leg by ``unwind``."""

    recipient: str
    amount_minor: int
    timing: Timing
    leg_index: int
    basis: Basis | None = None


# -- validation -----------------------------------------------------------------

def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_recipient(value: Any) -> bool:
    """A role (``ROLE_RECIPIENTS``) or ``party:<code>``."""
    if not isinstance(value, str):
        return False
    if value in ROLE_RECIPIENTS:
        return True
    return value.startswith(PARTY_PREFIX) and bool(_PARTY_CODE.fullmatch(value[len(PARTY_PREFIX):]))


def validate_timing(timing: Any, field: str = "timing") -> None:
    if not isinstance(timing, Timing):
        raise RuleError(f"{field} must be a Timing", field)
    if timing.kind not in TIMING_KINDS:
        raise RuleError(f"{field}.kind must be one of {', '.join(TIMING_KINDS)}", f"{field}.kind")
    if not _is_int(timing.days) or not 0 <= timing.days <= MAX_TIMING_DAYS:
        raise RuleError(f"{field}.days must be a whole number from 0 to {MAX_TIMING_DAYS}",
                        f"{field}.days")
    if timing.anchor not in ANCHORS:
        raise RuleError(f"{field}.anchor must be one of {', '.join(ANCHORS)}", f"{field}.anchor")
    if timing.kind == "t_plus":
        if timing.days < 1:
            raise RuleError(f"{field}.days: T+N needs at least 1 day (T+0 is 'immediate' "
                            "or 'on_delivery')", f"{field}.days")
    else:
        # One way to write each timing, so the duplicate check cannot be
        # dodged by an ignored field ("immediate, 3 days").
        if timing.days != 0:
            raise RuleError(f"{field}.days: only a t_plus timing has days", f"{field}.days")
        if timing.anchor != "delivery":
            raise RuleError(f"{field}.anchor: only a t_plus timing has an anchor", f"{field}.anchor")


def validate_leg(leg: Any, field: str = "leg") -> None:
    """One leg on its own; ``validate_legs`` adds the checks across legs."""
    if not isinstance(leg, Leg):
        raise RuleError(f"{field} must be a Leg", field)
    if not is_recipient(leg.recipient):
        raise RuleError(f"{field}.recipient must be one of {', '.join(ROLE_RECIPIENTS)} "
                        "or party:<code> (1-64 characters of A-Z a-z 0-9 _ . : -)",
                        f"{field}.recipient")
    if leg.basis not in BASES:
        raise RuleError(f"{field}.basis must be one of {', '.join(BASES)}", f"{field}.basis")
    value_field = f"{field}.value"
    if not _is_int(leg.value):
        raise RuleError(f"{value_field} must be a whole number", value_field)
    if leg.basis == "remainder" and leg.value != 0:
        raise RuleError(f"{value_field}: the remainder leg has value 0", value_field)
    if leg.basis == "percent" and not 0 <= leg.value <= BP_PER_UNIT:
        raise RuleError(f"{value_field}: a percent is 0 to {BP_PER_UNIT} basis points", value_field)
    if leg.basis in FIXED_BASES and not 0 <= leg.value <= MAX_AMOUNT_MINOR:
        raise RuleError(f"{value_field}: a fixed amount is 0 or more fen", value_field)
    validate_timing(leg.timing, f"{field}.timing")


def validate_legs(legs: Any, field: str = "legs") -> None:
    """Raise ``RuleError`` unless ``legs`` can always be split (module
    docstring: the checks)."""
    if not isinstance(legs, (list, tuple)):
        raise RuleError(f"{field} must be a list of legs", field)
    remainder_at: int | None = None
    percent_bp = 0
    seen: dict[tuple[str, Timing], int] = {}
    for index, leg in enumerate(legs):
        leg_field = f"{field}[{index}]"
        validate_leg(leg, leg_field)
        if leg.basis == "remainder":
            if remainder_at is not None:
                raise RuleError(f"{leg_field}: a second remainder leg ({field}[{remainder_at}] "
                                "is one)", f"{leg_field}.basis")
            remainder_at = index
        elif leg.basis == "percent":
            percent_bp += leg.value
        key = (leg.recipient, leg.timing)
        if key in seen:
            raise RuleError(f"{leg_field}: same recipient and timing as {field}[{seen[key]}]",
                            f"{leg_field}.recipient")
        seen[key] = index
    if remainder_at is None:
        raise RuleError(f"{field}: a rule needs exactly one remainder leg", field)
    if percent_bp >= BP_PER_UNIT:
        raise RuleError(f"{field}: the percent legs add up to {percent_bp} basis points; they "
                        f"must stay below {BP_PER_UNIT} to leave something for the remainder leg",
                        field)


# The legs of the rules in use, once checked: a batch splits the same few
# rules' legs thousands of times (legs are frozen, so a tuple of them is a key).
_CHECKED: set[tuple[Leg, ...]] = set()


def _valid_legs(legs: Any) -> None:
    try:
        if isinstance(legs, tuple) and legs in _CHECKED:
            return
    except TypeError:  # something unhashable inside: not legs, as the check will say
        pass
    validate_legs(legs)
    if isinstance(legs, tuple):   # checked legs are frozen, hence hashable
        if len(_CHECKED) > 10_000:
            _CHECKED.clear()
        _CHECKED.add(legs)


def _amount(value: Any, name: str) -> int:
    if not _is_int(value) or value < 0:
        raise ValueError(f"{name} must be a whole number of at least 0")
    return value


# -- split and unwind ---------------------------------------------------------

def leg_amount(leg: Leg, cash_minor: int, *, order_total_minor: int, units: int) -> int:
    """What a non-remainder leg takes of ``cash_minor`` (steps 1 and 2 of the
    remainder rule). The remainder leg's amount depends on the others, so it
    is 0 here."""
    if leg.basis == "percent":
        return cash_minor * leg.value // BP_PER_UNIT
    if leg.basis == "remainder":
        return 0
    fixed = leg.value * units if leg.basis == "per_unit" else leg.value
    if cash_minor < order_total_minor:
        return fixed * cash_minor // order_total_minor
    return fixed


def split(cash_minor: int, legs: Sequence[Leg], *, order_total_minor: int,
          units: int) -> list[Share]:
    """One share per leg, in leg order, adding up exactly to ``cash_minor``
    (module docstring: the remainder rule). Raises ``RuleError`` for invalid
    legs, ``SplitError`` when cash exceeds the order total or the legs need
    more than the cash, ValueError for a negative or non-integer argument."""
    _valid_legs(legs)
    _amount(cash_minor, "cash_minor")
    _amount(order_total_minor, "order_total_minor")
    _amount(units, "units")
    if cash_minor > order_total_minor:
        raise SplitError(f"cash {cash_minor} exceeds the order total {order_total_minor}: "
                         "the excess is not this order's to clear")
    amounts = [leg_amount(leg, cash_minor, order_total_minor=order_total_minor, units=units)
               for leg in legs]
    remainder = cash_minor - sum(amounts)
    if remainder < 0:
        raise SplitError(f"the legs take {cash_minor - remainder} of {cash_minor} cash: "
                         f"short by {-remainder}", shortfall_minor=-remainder)
    return [Share(leg.recipient, remainder if leg.basis == "remainder" else amount,
                  leg.timing, index, leg.basis)
            for index, (leg, amount) in enumerate(zip(legs, amounts))]


def unwind(refund_minor: int, shares: Sequence[Share]) -> list[Share]:
    """What to claw back from each share for a refund of ``refund_minor``,
    one share per share given, in the same order, adding up exactly to the
    refund (module docstring: the remainder rule). Raises ``SplitError`` when
    the refund exceeds what the shares hold."""
    _amount(refund_minor, "refund_minor")
    for position, share in enumerate(shares):
        if not isinstance(share, Share):
            raise ValueError(f"shares[{position}] must be a Share")
        _amount(share.amount_minor, f"shares[{position}].amount_minor")
    received = [share.amount_minor for share in shares]
    total = sum(received)
    if refund_minor > total:
        raise SplitError(f"refund {refund_minor} exceeds the {total} cleared: "
                         f"{refund_minor - total} cannot be clawed back from the legs",
                         shortfall_minor=refund_minor - total)
    claws = [refund_minor * amount // total if total else 0 for amount in received]
    rest = refund_minor - sum(claws)  # fewer fen than there are shares
    # The remainder leg first (it absorbed the split's rounding too), then the
    # largest legs; each gives at most what it still has, and together they
    # have at least `rest` left because refund <= total.
    order = sorted(range(len(shares)),
                   key=lambda i: (shares[i].basis != "remainder", -received[i],
                                  shares[i].leg_index, i))
    for i in order:
        if rest == 0:
            break
        take = min(received[i] - claws[i], rest)
        claws[i] += take
        rest -= take
    assert rest == 0
    return [replace(share, amount_minor=claw) for share, claw in zip(shares, claws)]
