"""CSV of price strategies: one row per tier, keyed by strategy ``code``.

Columns: ``code, owner, name, rule, priority, currency, status, valid_from,
valid_to, product_all, product_categories, product_skus`` (the strategy; every
row of one code must repeat the same values), the customer scope
``parties, regions, customer_types, grades, groups, tags`` (``|``-separated
codes; empty = not restricted), and the tier ``tier_sku`` (empty: every SKU
in scope, percent rule only), ``min_qty`` (default 1), ``price`` (decimal,
fixed rule) or ``percent`` (of list price, up to two decimals: ``92.5``).

Each strategy is checked by ``prices.check_strategy``, the API's own check,
answered from maps loaded once (``_Preloaded``). A strategy identical to the
stored one is unchanged; a different one is updated (version + 1, its
tiers replaced); an empty ``valid_from`` means now for a new strategy and
the stored value for an existing one. ``restrict_to`` (a seller importing
its own): every owner must be that seller.
"""
from __future__ import annotations

from decimal import Decimal, InvalidOperation

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from ledger import DomainError, as_utc, new_uuid7, utcnow

from .. import prices, snapshots
from ..catalog import sku_facts, validate_code, validate_currency
from ..models import (
    Category,
    CustomerType,
    Grade,
    Party,
    PartyGroup,
    PriceStrategy,
    PriceTier,
    Region,
)
from ..pricing import STRATEGY_STATUSES
from ..scopes import CUSTOMER_DIMENSIONS
from .framework import (
    CellError,
    Progress,
    Rows,
    chunks,
    codes,
    codes_text,
    instant,
    instant_text,
    integer,
    money_minor,
    money_text,
)

HEAD = ("code", "owner", "name", "rule", "priority", "currency", "status", "valid_from",
        "valid_to", "product_all", "product_categories", "product_skus", *CUSTOMER_DIMENSIONS)
COLUMNS = (*HEAD, "tier_sku", "min_qty", "price", "percent")
REQUIRED = ("code", "owner", "name", "rule")
EXPORT_FILTERS = ("owner",)


class _Preloaded:
    """``prices.Lookup`` answered from maps loaded once per file."""

    def __init__(self, session: Session):
        self.codes = {
            "categories": set(session.scalars(select(Category.code))),
            "parties": set(session.scalars(select(Party.code))),
            "regions": set(session.scalars(select(Region.code))),
            "customer_types": set(session.scalars(select(CustomerType.code))),
            "grades": set(session.scalars(select(Grade.code))),
            "groups": set(session.scalars(select(PartyGroup.code))),
        }
        self.skus = {s.code: (s.sku_id, s.category_path) for s in sku_facts(session, status=None)}
        self.codes["skus"] = set(self.skus)

    def missing(self, dimension: str, wanted: frozenset[str]) -> list[str]:
        return sorted(wanted - self.codes[dimension])

    def sku_paths(self, wanted: set[str]) -> dict[str, tuple[int, tuple[str, ...]]]:
        return {code: self.skus[code] for code in wanted if code in self.skus}


def _percent_bp(text: str) -> int:
    try:
        value = Decimal(text) * 100
    except InvalidOperation:
        raise CellError("percent must be a number such as 92.5", "percent") from None
    if not value.is_finite() or value != value.to_integral_value():
        raise CellError("percent takes at most two decimals", "percent")
    return int(value)


def _scope(row: dict[str, str]) -> dict:
    flag = row.get("product_all", "").lower()
    if flag in ("true", "yes", "1", "y"):
        return {"all": True}
    return {"categories": codes(row.get("product_categories", "")),
            "skus": codes(row.get("product_skus", ""))}


def _tier(rows: Rows, line: int, row: dict[str, str], currency: str) -> dict | None:
    tier = {"sku": row.get("tier_sku") or None,
            "min_qty": rows.check(line, integer, row.get("min_qty") or "1", "min_qty"),
            "price_minor": None, "percent_bp": None}
    if row.get("price"):
        tier["price_minor"] = rows.check(line, money_minor, row["price"], currency, "price")
    if row.get("percent"):
        tier["percent_bp"] = rows.check(line, _percent_bp, row["percent"])
    return None if tier["min_qty"] is None else tier


def check(session: Session, rows: Rows, restrict_to: str | None = None) -> dict:
    lookup = _Preloaded(session)
    owners = {code: (pid, role) for pid, code, role in
              session.execute(select(Party.id, Party.code, Party.role))}
    # Like update_strategy, an import never changes a strategy's rule or
    # currency: that is a new strategy, with a new code.
    fixed = {code: (rule, currency) for code, rule, currency in
             session.execute(select(PriceStrategy.code, PriceStrategy.rule, PriceStrategy.currency))}
    groups: dict[str, dict] = {}
    for line, row in rows.records:
        code = row.get("code", "")
        head = {key: row.get(key, "") for key in HEAD}
        group = groups.get(code)
        if group is None:
            group = groups[code] = {"line": line, "head": head, "tiers": [], "lines": []}
        else:
            differing = [k for k in HEAD if head[k] != group["head"][k]]
            if differing:
                rows.error(line, differing[0], f"differs from line {group['line']} of strategy {code!r}")
                continue
        tier = _tier(rows, line, row, head.get("currency") or "CNY")
        if tier is not None:
            group["tiers"].append(tier)
            group["lines"].append(line)
    planned = []
    for code, group in groups.items():
        line, head = group["line"], group["head"]
        if restrict_to is not None and head["owner"] != restrict_to:
            rows.error(line, "owner", f"you may import only {restrict_to}'s strategies")
            continue
        owner = owners.get(head["owner"])
        if owner is None or owner[1] not in ("brand", "distributor"):
            rows.error(line, "owner", "the owner must be the brand or a distributor"
                       if owner else f"no owner {head['owner']!r}")
            continue
        if len(group["tiers"]) != len(group["lines"]):
            continue
        if code in fixed and fixed[code] != (head["rule"], head["currency"] or "CNY"):
            rows.error(line, "rule", f"strategy {code!r} exists with rule and currency "
                                     f"{' '.join(fixed[code])}; a new rule needs a new code")
            continue
        try:
            priority = integer(head["priority"] or "0", "priority")
            valid_from = instant(head["valid_from"], "valid_from")
            valid_to = instant(head["valid_to"], "valid_to")
            status = head["status"] or "active"
            if status not in STRATEGY_STATUSES:
                raise CellError("status must be active or inactive", "status")
            name, strategy, sku_ids = prices.check_strategy(
                lookup, code=validate_code(code), owner_code=head["owner"],
                name=head["name"], rule=head["rule"], tiers=group["tiers"], priority=priority,
                currency=validate_currency(head["currency"] or "CNY"),
                product_scope=_scope(head),
                customer_scope={d: codes(head[d]) for d in CUSTOMER_DIMENSIONS if head[d]},
                valid_from=valid_from or utcnow(), valid_to=valid_to, status=status, version=1)
        except CellError as error:
            rows.error(line, error.field, str(error))
            continue
        except DomainError as error:
            field = str(error.details.get("field", ""))
            # A tier's problem points at the tier's own line.
            if field.startswith("tiers[") and "]" in field:
                index = int(field[6:field.index("]")])
                rows.error(group["lines"][index], field, error.message)
            else:
                rows.error(line, field, error.message)
            continue
        planned.append({"owner_id": owner[0], "name": name, "strategy": strategy,
                        "sku_ids": sku_ids, "explicit_from": valid_from is not None})
    return {"planned": planned}


def _stored(session: Session, strategy_codes: list[str]) -> dict[str, dict]:
    found: dict[str, dict] = {}
    for part in chunks(strategy_codes):
        for row in session.execute(select(PriceStrategy).where(PriceStrategy.code.in_(part))).scalars():
            found[row.code] = {"row": row, "tiers": []}
    by_id = {entry["row"].id: entry for entry in found.values()}
    for part in chunks(list(by_id)):
        for strategy_id, sku_id, min_qty, price, percent in session.execute(
                select(PriceTier.strategy_id, PriceTier.sku_id, PriceTier.min_qty,
                       PriceTier.price_minor, PriceTier.percent_bp)
                .where(PriceTier.strategy_id.in_(part))):
            by_id[strategy_id]["tiers"].append((sku_id or 0, min_qty, price, percent))
    return found


def _tier_rows(item: dict) -> list[tuple]:
    return sorted((item["sku_ids"][t.sku] if t.sku else 0, t.min_qty, t.price_minor, t.percent_bp)
                  for t in item["strategy"].tiers)


def _same(stored: dict, item: dict) -> bool:
    row, s = stored["row"], item["strategy"]
    return ((row.owner_id, row.name, row.status, row.priority, row.rule, row.currency,
             row.product_scope, row.customer_scope, as_utc(row.valid_from) if item["explicit_from"]
             else s.valid_from, as_utc(row.valid_to) if row.valid_to else None,
             sorted(stored["tiers"]))
            == (item["owner_id"], item["name"], s.status, s.priority, s.rule, s.currency,
                s.product_scope.to_json(), s.customer_scope.to_json(), s.valid_from, s.valid_to,
                _tier_rows(item)))


def apply(session: Session, plan: dict, progress: Progress | None) -> tuple[int, int, int]:
    planned = plan["planned"]
    stored = _stored(session, [p["strategy"].code for p in planned])
    now = utcnow()
    inserts, updates, replaced, unchanged = [], [], [], 0
    for item in planned:
        s = item["strategy"]
        current = stored.get(s.code)
        values = {"name": item["name"], "owner_id": item["owner_id"], "status": s.status,
                  "priority": s.priority, "product_scope": s.product_scope.to_json(),
                  "customer_scope": s.customer_scope.to_json(), "valid_to": s.valid_to,
                  "updated_at": now}
        if current is None:
            inserts.append({**values, "public_id": prices.STRATEGY_PREFIX + new_uuid7().hex,
                            "code": s.code, "rule": s.rule, "currency": s.currency,
                            "valid_from": s.valid_from, "created_at": now, "version": 1})
            replaced.append(item)
        elif not _same(current, item):
            row = current["row"]
            updates.append({**values, "id": row.id, "version": row.version + 1,
                            "valid_from": s.valid_from if item["explicit_from"] else row.valid_from})
            replaced.append(item)
        else:
            unchanged += 1
    total, done = len(planned), 0
    for part in chunks(inserts):
        session.execute(insert(PriceStrategy), list(part))
        done += len(part)
        if progress:
            progress("strategies", done, total)
    for part in chunks(updates):
        session.execute(update(PriceStrategy), list(part))
        done += len(part)
        if progress:
            progress("strategies", done, total)
    ids: dict[str, int] = {}
    for part in chunks([item["strategy"].code for item in replaced]):
        ids.update(session.execute(select(PriceStrategy.code, PriceStrategy.id)
                                   .where(PriceStrategy.code.in_(part))).all())
    for part in chunks([ids[item["strategy"].code] for item in replaced if item["strategy"].code
                        in stored]):
        session.execute(delete(PriceTier).where(PriceTier.strategy_id.in_(part)))
    tier_rows = [{"strategy_id": ids[item["strategy"].code],
                  "sku_id": item["sku_ids"][t.sku] if t.sku else None, "min_qty": t.min_qty,
                  "price_minor": t.price_minor, "percent_bp": t.percent_bp}
                 for item in replaced for t in item["strategy"].tiers]
    written = 0
    for part in chunks(tier_rows):
        session.execute(insert(PriceTier), list(part))
        written += len(part)
        if progress:
            progress("tiers", written, len(tier_rows))
    snapshots.bump(session, *{snapshots.strategies_key(item["owner_id"]) for item in replaced})
    return len(inserts), len(updates), unchanged


def export(session: Session, *, owner: str | None = None):
    """Every strategy (or one owner's), one row per tier, in code order."""
    query = select(PriceStrategy).order_by(PriceStrategy.code)
    if owner is not None:
        query = query.where(PriceStrategy.owner_id == prices._seller(session, owner).id)
    last = ""
    while True:
        page = list(session.scalars(query.where(PriceStrategy.code > last).limit(1000)))
        if not page:
            return
        for view in prices._views(session, page):
            head = {
                "code": view.code, "owner": view.owner_code, "name": view.name, "rule": view.rule,
                "priority": view.priority, "currency": view.currency, "status": view.status,
                "valid_from": instant_text(view.valid_from),
                "valid_to": instant_text(view.valid_to),
                "product_all": "true" if view.product_scope.get("all") else "false",
                "product_categories": codes_text(view.product_scope.get("categories", ())),
                "product_skus": codes_text(view.product_scope.get("skus", ())),
                **{d: codes_text(view.customer_scope.get(d, ())) for d in CUSTOMER_DIMENSIONS},
            }
            for tier in view.tiers:
                yield {**head, "tier_sku": tier.sku or "", "min_qty": tier.min_qty,
                       "price": "" if tier.price_minor is None
                       else money_text(tier.price_minor, view.currency),
                       "percent": "" if tier.percent_bp is None else _percent_text(tier.percent_bp)}
        last = page[-1].code


def _percent_text(bp: int) -> str:
    return f"{Decimal(bp) / 100:.2f}".rstrip("0").rstrip(".")
