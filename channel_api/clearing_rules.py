"""Use cases of clearing rules and the business calendar (issue 6): rules
that finance configures without code, the "why this split" of an order, and
the holidays and make-up workdays T+N counts on.

The rules themselves are pure and live in ``clearing``: ``split`` (legs, the
remainder rule), ``rule_match`` (trade modes, eligibility, ranking, the
explanation) and ``calendar`` (business days, the CSV). This module checks
input against them and against the network (the codes a rule names must
exist), stores rules (``clearing.models``), and builds the facts of an
order for them. Every function takes a session and only flushes.

Rules
-----

A rule is stored with codes, not row ids (``clearing`` imports only
``ledger``). ``create_rule`` with a code that exists returns the stored rule
when the content is the same (a retry) and refuses other content
(``clearing_rule_exists``); ``update_rule`` changes what it is given, bumps
the version when anything changed, and audits the content before and after,
so every version can be read back from the audit trail. ``payment_methods``
name how the cash came (``PAYMENT_METHODS``): the plan's cash methods, and a
gateway by its name. Rebate is not among them: it is not cash, and clearing
splits cash only (docs/accounting.md).

An order's facts
----------------

``explain_for_order`` builds ``clearing.rule_match.RuleFacts`` from the
order: the trade mode from the seller's and buyer's roles and whether the
order is linked to an upstream order (``OrderLink``), the seller, the buyer,
the payment method, and each line's category path (root first).

*Lines in several categories.* The rule is chosen for each distinct category
path; lines whose paths choose the same rule form one **part**, and each part
is split on its own: its cash is the sum of its lines' totals (the whole
order total when there is one part, the usual case), its units the sum of
its lines' quantities. So a per-order fixed leg is charged once per rule an
order uses, never once per line, and an order whose categories have
different rules is split by each rule exactly over what it sells; with one
category (or one rule) this is the split of the order's total.

*Recipients* resolve to party codes: ``seller`` → the order's seller;
``brand`` → the seller when it is the brand, else the one brand its supply
chain reaches (walking up the supply relationships; the network's one brand
party when the chain reaches none); ``buyer_upstream`` → the seller of the
order's linked upstream order (the party the goods came from, one level
above the seller: for a store's order from a second-level distributor, the
first-level distributor), or, when the order has no link, the one party the
seller buys from through an active supply relationship; ``platform`` → the
literal ``platform``; ``party:X`` → ``X``. A recipient that cannot be
resolved (no brand, several upstream sellers, no or several suppliers) has
``party`` None and the reason in ``unresolved``: the preview still shows
the rule and the amounts, and clearing must refuse to post such a share.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from clearing.models import ClearingRule
from clearing.rule_match import (
    ClearingRuleSpec,
    RuleCandidate,
    RuleFacts,
    explain,
    trade_mode,
    validate_rule,
)
from clearing.split import PARTY_PREFIX, Leg, RuleError, SplitError, Timing, split
from ledger import as_utc, utcnow

from . import audit
from .catalog import validate_limit, validate_name
from .errors import Exists, InvalidInput, NotFound
from .models import Category, Order, OrderLine, OrderLink, Party, Product, Sku, SupplyRelationship
from .orders import order_row
from .trees import paths

PAYMENT_METHODS: tuple[str, ...] = ("prepaid", "offline", "credit", "wechatpay", "alipay", "bank",
                                    "sandbox")
CRITERIA: tuple[str, ...] = ("trade_modes", "categories", "sellers", "buyers", "payment_methods")
PLATFORM = "platform"
MAX_LEGS = 20
MAX_CHAIN_LEVELS = 10  # distributor levels walked up to find the brand
_LEG_KEYS = frozenset({"recipient", "basis", "value", "timing"})
_TIMING_KEYS = frozenset({"kind", "days", "anchor"})
_KEEP: Any = object()  # "leave unchanged" in update_rule


class ClearingRuleNotFound(NotFound):
    code = "clearing_rule_not_found"


class ClearingRuleExists(Exists):
    """The code is taken by a rule with other content."""

    code = "clearing_rule_exists"


class ClearingRuleVersionConflict(Exists):
    """The rule changed since the version the caller read."""

    code = "clearing_rule_version_conflict"


# -- views ------------------------------------------------------------------------------

@dataclass(frozen=True)
class RuleView:
    code: str
    name: str
    priority: int
    status: str
    trade_modes: tuple[str, ...] | None
    categories: tuple[str, ...] | None
    sellers: tuple[str, ...] | None
    buyers: tuple[str, ...] | None
    payment_methods: tuple[str, ...] | None
    valid_from: datetime
    valid_to: datetime | None
    legs: tuple[Leg, ...]
    version: int
    created_at: datetime
    updated_at: datetime
    actor: str


@dataclass(frozen=True)
class CandidateView:
    """One rule's part in the choice for one category path (rank 1 =
    chosen; an ineligible rule has its ``reason``)."""

    code: str
    version: int
    eligible: bool
    reason: str | None
    rank: int | None
    criteria_count: int | None
    category_depth: int | None
    matched_category: str | None
    decided_by: str | None


@dataclass(frozen=True)
class PathExplanation:
    category_path: tuple[str, ...]
    lines: tuple[int, ...]
    candidates: tuple[CandidateView, ...]


@dataclass(frozen=True)
class ShareView:
    """One leg's share, its recipient resolved to a party code (``party``;
    None with the reason in ``unresolved`` when it cannot be)."""

    leg_index: int
    recipient: str
    party: str | None
    basis: str
    amount_minor: int
    timing: Timing
    unresolved: str | None = None


@dataclass(frozen=True)
class PreviewPart:
    """The lines one rule splits (``rule`` None: no rule applies, and
    ``problem`` says so; also set when the legs do not fit the cash)."""

    rule: str | None
    rule_version: int | None
    lines: tuple[int, ...]
    cash_minor: int
    units: int
    shares: tuple[ShareView, ...]
    explanations: tuple[PathExplanation, ...]
    problem: str | None = None


@dataclass(frozen=True)
class ClearingPreview:
    order: str
    seller: str
    buyer: str
    trade_mode: str
    payment_method: str
    at: datetime
    currency: str
    total_minor: int
    units: int
    parts: tuple[PreviewPart, ...]


# -- checking a rule --------------------------------------------------------------------

def _actor(actor: Any) -> str:
    if not isinstance(actor, str) or not actor.strip():
        raise InvalidInput("actor must name who makes the change", field="actor")
    return actor.strip()[:80]


def _aware(value: Any, field: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidInput(f"{field} must be a date-time with a time zone", field=field)
    return as_utc(value)


def _timing(value: Any, field: str) -> Timing:
    if not isinstance(value, Mapping):
        raise InvalidInput("a timing is {kind, days, anchor}", field=field)
    extra = sorted(set(value) - _TIMING_KEYS)
    if extra:
        raise InvalidInput(f"a timing has only kind, days and anchor; refused: {extra[0]}",
                           field=f"{field}.{extra[0]}")
    return Timing(value.get("kind"), value.get("days", 0), value.get("anchor", "delivery"))


def _leg(value: Any, field: str) -> Leg:
    """A leg from its JSON shape; its values are checked by
    ``clearing.split.validate_legs``."""
    if isinstance(value, Leg):
        return value
    if not isinstance(value, Mapping):
        raise InvalidInput("a leg is {recipient, basis, value, timing}", field=field)
    extra = sorted(set(value) - _LEG_KEYS)
    if extra:
        raise InvalidInput(f"a leg has only recipient, basis, value and timing; refused: "
                           f"{extra[0]}", field=f"{field}.{extra[0]}")
    for key in ("recipient", "basis", "timing"):
        if key not in value:
            raise InvalidInput(f"a leg needs its {key}", field=f"{field}.{key}")
    basis = value["basis"]
    if "value" not in value and basis != "remainder":
        raise InvalidInput("a leg needs its value (only the remainder leg may leave it out)",
                           field=f"{field}.value")
    return Leg(value["recipient"], basis, value.get("value", 0),
               _timing(value["timing"], f"{field}.timing"))


def _legs(value: Any) -> tuple[Leg, ...]:
    if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= MAX_LEGS:
        raise InvalidInput(f"legs must be a list of 1 to {MAX_LEGS} legs", field="legs")
    return tuple(_leg(item, f"legs[{index}]") for index, item in enumerate(value))


def _codes(value: Any, field: str) -> frozenset[str] | None:
    """None (any), or the codes of a list; the codes' syntax and the list
    being non-empty are ``validate_rule``'s to check."""
    if value is None:
        return None
    if not isinstance(value, (list, tuple, set, frozenset)):
        raise InvalidInput(f"{field} must be a list of codes, or null for any", field=field)
    for index, code in enumerate(value):
        if not isinstance(code, str):
            raise InvalidInput(f"{field} must hold codes (text)", field=f"{field}[{index}]")
    return frozenset(value)


def _missing(session: Session, column, codes: Iterable[str]) -> list[str]:
    codes = set(codes)
    if not codes:
        return []
    return sorted(codes - set(session.scalars(select(column).where(column.in_(codes)))))


def _check_references(session: Session, spec: ClearingRuleSpec) -> None:
    """The codes a rule names must exist: categories, sellers (not a store:
    a store sells nothing), buyers, and ``party:X`` recipients."""
    for field, codes, column in (("categories", spec.categories, Category.code),
                                 ("sellers", spec.sellers, Party.code),
                                 ("buyers", spec.buyers, Party.code)):
        missing = _missing(session, column, codes or ())
        if missing:
            raise InvalidInput(f"{field} names unknown codes: {', '.join(missing)}", field=field,
                               codes=missing)
    if spec.sellers:
        stores = sorted(session.scalars(select(Party.code).where(
            Party.code.in_(spec.sellers), Party.role == "store")))
        if stores:
            raise InvalidInput(f"sellers: a store sells nothing ({', '.join(stores)})",
                               field="sellers", codes=stores)
    if spec.payment_methods:
        unknown = sorted(spec.payment_methods - set(PAYMENT_METHODS))
        if unknown:
            raise InvalidInput(f"payment_methods: {', '.join(unknown)} not among "
                               f"{', '.join(PAYMENT_METHODS)}", field="payment_methods",
                               codes=unknown)
    for index, leg in enumerate(spec.legs):
        if leg.recipient.startswith(PARTY_PREFIX):
            code = leg.recipient[len(PARTY_PREFIX):]
            if _missing(session, Party.code, [code]):
                raise InvalidInput(f"no party {code!r}", field=f"legs[{index}].recipient")


def _checked(session: Session, *, code: Any, priority: Any, legs: Any, trade_modes: Any,
             categories: Any, sellers: Any, buyers: Any, payment_methods: Any,
             valid_from: datetime, valid_to: Any, status: Any) -> ClearingRuleSpec:
    """The rule as ``ClearingRuleSpec``, every rule checked; raises
    ``InvalidInput`` naming the field (``legs[1].value``, ``sellers``...)."""
    spec = ClearingRuleSpec(
        code=code, priority=priority,
        trade_modes=_codes(trade_modes, "trade_modes"), categories=_codes(categories, "categories"),
        sellers=_codes(sellers, "sellers"), buyers=_codes(buyers, "buyers"),
        payment_methods=_codes(payment_methods, "payment_methods"),
        valid_from=_aware(valid_from, "valid_from"),
        valid_to=None if valid_to is None else _aware(valid_to, "valid_to"),
        legs=_legs(legs), status=status)
    try:
        validate_rule(spec)
    except RuleError as exc:
        raise InvalidInput(str(exc), field=exc.field) from None
    _check_references(session, spec)
    return spec


# -- rows, specs and documents ---------------------------------------------------------

def _leg_doc(leg: Leg) -> dict[str, Any]:
    return {"recipient": leg.recipient, "basis": leg.basis, "value": leg.value,
            "timing": {"kind": leg.timing.kind, "days": leg.timing.days,
                       "anchor": leg.timing.anchor}}


def _leg_of(doc: Mapping[str, Any]) -> Leg:
    timing = doc["timing"]
    return Leg(doc["recipient"], doc["basis"], doc["value"],
               Timing(timing["kind"], timing["days"], timing["anchor"]))


def _sorted(codes: frozenset[str] | None) -> list[str] | None:
    return None if codes is None else sorted(codes)


def _doc(spec: ClearingRuleSpec, name: str) -> dict[str, Any]:
    """A rule's content as JSON (what the audit keeps, and what a retry of
    a create is compared by)."""
    return {"name": name, "priority": spec.priority, "status": spec.status,
            **{c: _sorted(getattr(spec, c)) for c in CRITERIA},
            "valid_from": spec.valid_from.isoformat(),
            "valid_to": spec.valid_to.isoformat() if spec.valid_to else None,
            "legs": [_leg_doc(leg) for leg in spec.legs]}


def _frozen(codes: list[str] | None) -> frozenset[str] | None:
    return None if codes is None else frozenset(codes)


def _spec(row: ClearingRule) -> ClearingRuleSpec:
    return ClearingRuleSpec(
        code=row.code, priority=row.priority, trade_modes=_frozen(row.trade_modes),
        categories=_frozen(row.categories), sellers=_frozen(row.sellers),
        buyers=_frozen(row.buyers), payment_methods=_frozen(row.payment_methods),
        valid_from=as_utc(row.valid_from),
        valid_to=as_utc(row.valid_to) if row.valid_to else None,
        legs=tuple(_leg_of(doc) for doc in row.legs), status=row.status)


def _write(row: ClearingRule, spec: ClearingRuleSpec, name: str) -> None:
    row.name, row.priority, row.status = name, spec.priority, spec.status
    for criterion in CRITERIA:
        setattr(row, criterion, _sorted(getattr(spec, criterion)))
    row.valid_from, row.valid_to = spec.valid_from, spec.valid_to
    row.legs = [_leg_doc(leg) for leg in spec.legs]


def _view(row: ClearingRule) -> RuleView:
    spec = _spec(row)
    codes = {c: tuple(sorted(getattr(spec, c))) if getattr(spec, c) is not None else None
             for c in CRITERIA}
    return RuleView(row.code, row.name, row.priority, row.status, **codes,
                    valid_from=spec.valid_from, valid_to=spec.valid_to, legs=spec.legs,
                    version=row.version, created_at=as_utc(row.created_at),
                    updated_at=as_utc(row.updated_at), actor=row.actor)


def _row(session: Session, code: Any, *, lock: bool = False) -> ClearingRule | None:
    if not isinstance(code, str):
        return None
    query = select(ClearingRule).where(ClearingRule.code == code)
    if lock:
        query = query.with_for_update()
    return session.scalars(query).one_or_none()


def _found(session: Session, code: Any, *, lock: bool = False) -> ClearingRule:
    row = _row(session, code, lock=lock)
    if row is None:
        raise ClearingRuleNotFound(f"no clearing rule {code!r}", field="rule", code=code)
    return row


# -- rules ------------------------------------------------------------------------------

def _same_or_refuse(row: ClearingRule, spec: ClearingRuleSpec, name: str,
                    keep_valid_from: bool) -> RuleView:
    stored = _spec(row)
    if keep_valid_from:  # a retry without valid_from means "from when it was made"
        spec = replace(spec, valid_from=stored.valid_from)
    if _doc(spec, name) != _doc(stored, row.name):
        raise ClearingRuleExists(f"clearing rule {row.code!r} exists with other content; "
                                 "change it with an update", field="code", code=row.code)
    return _view(row)


def create_rule(session: Session, *, code: str, name: str, legs: list[dict[str, Any]],
                priority: int = 0, trade_modes: list[str] | None = None,
                categories: list[str] | None = None, sellers: list[str] | None = None,
                buyers: list[str] | None = None, payment_methods: list[str] | None = None,
                valid_from: datetime | None = None, valid_to: datetime | None = None,
                status: str = "active", actor: str) -> RuleView:
    """A clearing rule (version 1), valid from ``valid_from`` (default now).
    The same code with the same content returns the stored rule (safe to
    retry); other content is ``clearing_rule_exists``."""
    actor = _actor(actor)
    name = validate_name(name)
    spec = _checked(session, code=code, priority=priority, legs=legs, trade_modes=trade_modes,
                    categories=categories, sellers=sellers, buyers=buyers,
                    payment_methods=payment_methods,
                    valid_from=utcnow() if valid_from is None else valid_from,
                    valid_to=valid_to, status=status)
    existing = _row(session, spec.code)
    if existing is not None:
        return _same_or_refuse(existing, spec, name, valid_from is None)
    now = utcnow()
    row = ClearingRule(code=spec.code, version=1, created_at=now, updated_at=now, actor=actor)
    _write(row, spec, name)
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        # A concurrent create of the same code committed first: answer as a retry.
        return _same_or_refuse(_found(session, spec.code), spec, name, valid_from is None)
    audit.record(session, actor=actor, action="clearing_rule.create",
                 subject_type="clearing_rule", subject=spec.code,
                 details={"version": 1, "after": _doc(spec, name)})
    session.flush()
    return _view(row)


def update_rule(session: Session, code: str, *, name: str = _KEEP, priority: int = _KEEP,
                legs: list[dict[str, Any]] = _KEEP, trade_modes: list[str] | None = _KEEP,
                categories: list[str] | None = _KEEP, sellers: list[str] | None = _KEEP,
                buyers: list[str] | None = _KEEP, payment_methods: list[str] | None = _KEEP,
                valid_from: datetime = _KEEP, valid_to: datetime | None = _KEEP,
                status: str = _KEEP, version: int | None = None, actor: str) -> RuleView:
    """Change what is given (None for a criterion: any; for ``valid_to``:
    open-ended); the rest stays. When anything changed the version goes up
    by one and the audit keeps the content before and after. ``version``,
    when given, must be the current one (``clearing_rule_version_conflict``
    otherwise), so two editors cannot overwrite each other unseen. Cash
    already cleared keeps the split it got."""
    actor = _actor(actor)
    row = _found(session, code, lock=True)
    if version is not None and version != row.version:
        raise ClearingRuleVersionConflict(
            f"clearing rule {row.code!r} is at version {row.version}, not {version}",
            field="version", current=row.version)
    stored = _spec(row)
    given = {k: v for k, v in dict(
        priority=priority, legs=legs, trade_modes=trade_modes, categories=categories,
        sellers=sellers, buyers=buyers, payment_methods=payment_methods, valid_from=valid_from,
        valid_to=valid_to, status=status).items() if v is not _KEEP}
    current = {"priority": stored.priority, "legs": stored.legs, "status": stored.status,
               "valid_from": stored.valid_from, "valid_to": stored.valid_to,
               **{c: getattr(stored, c) for c in CRITERIA}}
    new_name = row.name if name is _KEEP else validate_name(name)
    spec = _checked(session, code=row.code, **{**current, **given})
    before, after = _doc(stored, row.name), _doc(spec, new_name)
    if before == after:
        return _view(row)
    _write(row, spec, new_name)
    row.version, row.updated_at, row.actor = row.version + 1, utcnow(), actor
    audit.record(session, actor=actor, action="clearing_rule.update",
                 subject_type="clearing_rule", subject=row.code,
                 details={"version": row.version,
                          "changed": sorted(k for k in after if after[k] != before[k]),
                          "before": before, "after": after})
    session.flush()
    return _view(row)


def get_rule(session: Session, code: str) -> RuleView:
    return _view(_found(session, code))


def list_rules(session: Session, *, status: str | None = None, after: str | None = None,
               limit: int = 100) -> tuple[list[RuleView], str | None]:
    """In code order; ``after`` is the cursor (the last code seen)."""
    limit = validate_limit(limit)
    query = select(ClearingRule)
    if status is not None:
        if status not in ("active", "inactive"):
            raise InvalidInput("status must be active or inactive", field="status")
        query = query.where(ClearingRule.status == status)
    if after is not None:
        query = query.where(ClearingRule.code > after)
    rows = list(session.scalars(query.order_by(ClearingRule.code).limit(limit + 1)))
    views = [_view(r) for r in rows[:limit]]
    return views, (views[-1].code if len(rows) > limit else None)


# -- an order's split -------------------------------------------------------------------

@dataclass(frozen=True)
class _Line:
    line_no: int
    quantity: int
    total_minor: int
    path: tuple[str, ...]


def _order_lines(session: Session, order: Order) -> list[_Line]:
    tree = paths(session, Category)
    return [_Line(line_no, quantity, total, tree[category_id])
            for line_no, quantity, total, category_id in session.execute(
                select(OrderLine.line_no, OrderLine.quantity, OrderLine.line_total_minor,
                       Product.category_id)
                .join(Sku, Sku.id == OrderLine.sku_id)
                .join(Product, Product.id == Sku.product_id)
                .where(OrderLine.order_id == order.id).order_by(OrderLine.line_no))]


class _Recipients:
    """Resolves a leg's recipient to a party code for one order (module
    docstring: recipients)."""

    def __init__(self, session: Session, order: Order, seller: Party):
        self.session, self.seller = session, seller
        self.upstream = sorted(set(session.scalars(
            select(Party.code).join(Order, Order.seller_id == Party.id)
            .join(OrderLink, OrderLink.upstream_id == Order.id)
            .where(OrderLink.downstream_id == order.id))))

    def _one(self, codes: list[str], none: str, several: str) -> tuple[str | None, str | None]:
        if len(codes) == 1:
            return codes[0], None
        return None, (none if not codes else f"{several}: {', '.join(codes)}")

    def _brands_above(self) -> list[str]:
        """The brands the seller's supply chain reaches, walking up its
        relationships (of any status: a suspended one still says whose goods
        the seller sells) level by level."""
        seen, level, brands = {self.seller.id}, {self.seller.id}, set()
        for _ in range(MAX_CHAIN_LEVELS):
            rows = self.session.execute(
                select(Party.id, Party.code, Party.role)
                .join(SupplyRelationship, SupplyRelationship.seller_id == Party.id)
                .where(SupplyRelationship.buyer_id.in_(level))).all()
            brands |= {code for _, code, role in rows if role == "brand"}
            level = {party_id for party_id, _, role in rows if role != "brand"} - seen
            if not level:
                break
            seen |= level
        return sorted(brands)

    def brand(self) -> tuple[str | None, str | None]:
        if self.seller.role == "brand":
            return self.seller.code, None
        brands = self._brands_above() or list(self.session.scalars(
            select(Party.code).where(Party.role == "brand").order_by(Party.code).limit(2)))
        return self._one(brands, "no brand above the seller, nor in the network",
                         "several brands above the seller")

    def buyer_upstream(self) -> tuple[str | None, str | None]:
        if self.upstream:
            return self._one(self.upstream, "", "upstream orders of several sellers")
        suppliers = sorted(self.session.scalars(
            select(Party.code).join(SupplyRelationship, SupplyRelationship.seller_id == Party.id)
            .where(SupplyRelationship.buyer_id == self.seller.id,
                   SupplyRelationship.status == "active")))
        return self._one(suppliers, f"no upstream order, and {self.seller.code} buys from no one",
                         f"no upstream order, and {self.seller.code} buys from several")

    def resolve(self, recipient: str) -> tuple[str | None, str | None]:
        if recipient == "seller":
            return self.seller.code, None
        if recipient == "brand":
            return self.brand()
        if recipient == "buyer_upstream":
            return self.buyer_upstream()
        if recipient == "platform":
            return PLATFORM, None
        return recipient[len(PARTY_PREFIX):], None


def _candidate(c: RuleCandidate, versions: Mapping[str, int]) -> CandidateView:
    criteria, depth = c.specificity if c.specificity is not None else (None, None)
    return CandidateView(c.code, versions[c.code], c.eligible, c.reason, c.rank, criteria, depth,
                         c.matched_category, c.decided_by)


def _part(rule: ClearingRuleSpec | None, version: int | None, lines: list[_Line], cash: int,
          explanations: list[PathExplanation], recipients: _Recipients,
          whole: int | None = None) -> PreviewPart:
    """``cash`` of the part's ``whole`` (default: all of it) is split; fixed
    legs are prorated when only some of the part's money is cleared."""
    numbers = tuple(line.line_no for line in lines)
    units = sum(line.quantity for line in lines)
    if rule is None:
        return PreviewPart(None, None, numbers, cash, units, (), tuple(explanations),
                           "no clearing rule applies")
    try:
        shares = split(cash, rule.legs, order_total_minor=whole if whole is not None else cash,
                       units=units)
    except SplitError as exc:
        return PreviewPart(rule.code, version, numbers, cash, units, (), tuple(explanations),
                           str(exc))
    views = []
    for share in shares:
        party, unresolved = recipients.resolve(share.recipient)
        views.append(ShareView(share.leg_index, share.recipient, party, share.basis,
                               share.amount_minor, share.timing, unresolved))
    return PreviewPart(rule.code, version, numbers, cash, units, tuple(views),
                       tuple(explanations))


def _portions(cash: int, wholes: dict[str | None, int]) -> dict[str | None, int]:
    """``cash`` shared among parts in proportion to their wholes (rounded
    down, the rest to the largest part): the same rule as refunds."""
    total = sum(wholes.values())
    if not 0 <= cash <= total:
        raise InvalidInput(f"cannot clear {cash} of an order of {total}", field="cash_minor")
    shares = {code: cash * whole // total if total else 0 for code, whole in wholes.items()}
    largest = max(wholes, key=lambda code: wholes[code])
    shares[largest] += cash - sum(shares.values())
    return shares


def explain_for_order(session: Session, order_public_id: str, payment_method: str, *,
                      at: datetime | None = None,
                      cash_minor: int | None = None) -> ClearingPreview:
    """Which rule would split the order's cash paid by ``payment_method`` at
    ``at`` (default now), why (every rule with its rank or its reason), and
    the shares with their recipients resolved (module docstring). With
    ``cash_minor``, only that much of the order's total is split (the cash
    of one part of its plan, a repayment): shared among the rules' parts in
    proportion to their lines, fixed legs prorated."""
    if payment_method not in PAYMENT_METHODS:
        raise InvalidInput(f"payment_method must be one of {', '.join(PAYMENT_METHODS)}",
                           field="payment_method")
    at = utcnow() if at is None else _aware(at, "at")
    order = order_row(session, order_public_id)
    seller, buyer = session.get(Party, order.seller_id), session.get(Party, order.buyer_id)
    recipients = _Recipients(session, order, seller)
    try:
        mode = trade_mode(seller.role, buyer.role, bool(recipients.upstream))
    except ValueError as exc:
        raise InvalidInput(f"no trade mode for this order: {exc}", field="order") from None
    rows = list(session.scalars(select(ClearingRule).order_by(ClearingRule.code)))
    specs, versions = [_spec(r) for r in rows], {r.code: r.version for r in rows}
    lines = _order_lines(session, order)

    by_path: dict[tuple[str, ...], list[_Line]] = {}
    for line in lines:
        by_path.setdefault(line.path, []).append(line)
    # chosen rule's code -> (the rule, its lines, the explanation of each path)
    groups: dict[str | None, tuple[ClearingRuleSpec | None, list[_Line],
                                   list[PathExplanation]]] = {}
    for path, path_lines in by_path.items():
        ranked = explain(specs, RuleFacts(mode, path, seller.code, buyer.code, payment_method, at))
        chosen = ranked[0].rule if ranked and ranked[0].eligible else None
        group = groups.setdefault(chosen.code if chosen else None, (chosen, [], []))
        group[1].extend(path_lines)
        group[2].append(PathExplanation(path, tuple(l.line_no for l in path_lines),
                                        tuple(_candidate(c, versions) for c in ranked)))

    one_part = len(groups) == 1
    wholes = {code: order.total_minor if one_part else sum(l.total_minor for l in group[1])
              for code, group in groups.items()}
    portions = _portions(cash_minor, wholes) if cash_minor is not None else wholes
    parts = []
    for code, (rule, part_lines, explanations) in groups.items():
        part_lines.sort(key=lambda l: l.line_no)
        parts.append(_part(rule, versions.get(code) if code else None, part_lines,
                           portions[code], explanations, recipients, whole=wholes[code]))
    parts.sort(key=lambda p: p.lines[0] if p.lines else 0)
    if cash_minor is None and sum(p.cash_minor for p in parts) != order.total_minor:
        # Promotions allocate an order's discount to its lines, so this holds.
        raise InvalidInput("the order's lines do not add up to its total", field="order")
    return ClearingPreview(order.public_id, seller.code, buyer.code, mode, payment_method, at,
                           order.currency, order.total_minor,
                           sum(l.quantity for l in lines), tuple(parts))
