"""Marshmallow schemas of the channel API: request bodies and query
arguments in, the channel use cases' frozen views out.

Shapes only (types, lengths, unknown fields refused): the use cases own the
business rules and name the offending field themselves, so the API, the CSV
import and the jobs refuse the same things the same way.
"""
from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from service.fast_dump import FastDumpSchema
from service.schemas_ledger import LIMIT_DEFAULT, LIMIT_MAX, UtcDateTime

CODE = {"validate": validate.Length(min=1, max=64)}
NAME = {"validate": validate.Length(min=1, max=200)}
CURSOR = {"validate": validate.Length(min=1, max=200),
          "metadata": {"description": "The `next_cursor` of the previous page."}}


class StrictSchema(ma.Schema):
    """Bodies and query strings refuse unknown fields: a misspelt field is a
    422 naming it, never silently ignored."""

    class Meta:
        unknown = ma.RAISE


class PageArgs(StrictSchema):
    limit = fields.Integer(load_default=LIMIT_DEFAULT, validate=validate.Range(min=1, max=LIMIT_MAX))
    after = fields.String(**CURSOR)


# --- master data ---------------------------------------------------------------


class RegionIn(StrictSchema):
    code = fields.String(required=True, **CODE)
    name = fields.String(required=True, **NAME)
    parent = fields.String(load_default=None, allow_none=True, **CODE)
    level = fields.String(load_default="", validate=validate.Length(max=32))


class RegionOut(ma.Schema):
    public_id = fields.String()
    code = fields.String()
    name = fields.String()
    level = fields.String()
    parent_code = fields.String(allow_none=True)


class CustomerTypeIn(StrictSchema):
    code = fields.String(required=True, **CODE)
    name = fields.String(required=True, **NAME)
    parent = fields.String(load_default=None, allow_none=True, **CODE)


class CustomerTypeOut(ma.Schema):
    public_id = fields.String()
    code = fields.String()
    name = fields.String()
    parent_code = fields.String(allow_none=True)


class GradeIn(StrictSchema):
    code = fields.String(required=True, **CODE)
    name = fields.String(required=True, **NAME)
    rank = fields.Integer(load_default=0, strict=True)


class GradeOut(ma.Schema):
    public_id = fields.String()
    code = fields.String()
    name = fields.String()
    rank = fields.Integer()


class GroupIn(StrictSchema):
    code = fields.String(required=True, **CODE)
    name = fields.String(required=True, **NAME)


class GroupOut(ma.Schema):
    public_id = fields.String()
    code = fields.String()
    name = fields.String()


def _list_of(item_schema, name: str):
    return type(name, (ma.Schema,), {"items": fields.List(fields.Nested(item_schema))})


RegionList = _list_of(RegionOut, "RegionList")
CustomerTypeList = _list_of(CustomerTypeOut, "CustomerTypeList")
GradeList = _list_of(GradeOut, "GradeList")
GroupList = _list_of(GroupOut, "GroupList")


# --- parties ---------------------------------------------------------------------


class PartyIn(StrictSchema):
    code = fields.String(required=True, **CODE)
    name = fields.String(required=True, **NAME)
    role = fields.String(required=True, validate=validate.OneOf(("brand", "distributor", "store")))
    region = fields.String(required=True, **CODE)
    customer_type = fields.String(required=True, **CODE)
    grade = fields.String(load_default=None, allow_none=True, **CODE)
    owner_name = fields.String(load_default="", validate=validate.Length(max=200))
    contact_phone = fields.String(load_default="", validate=validate.Length(max=32))
    address = fields.String(load_default="", validate=validate.Length(max=500))
    quality_customer = fields.Boolean(load_default=False)
    status = fields.String(load_default="active", validate=validate.OneOf(("active", "frozen")))
    metadata = fields.Dict(load_default=dict)


class PartyPatch(StrictSchema):
    """Only the fields given change; ``grade: null`` clears the grade."""

    name = fields.String(**NAME)
    owner_name = fields.String(validate=validate.Length(max=200))
    contact_phone = fields.String(validate=validate.Length(max=32))
    address = fields.String(validate=validate.Length(max=500))
    status = fields.String(validate=validate.OneOf(("active", "frozen")))
    region = fields.String(**CODE)
    customer_type = fields.String(**CODE)
    grade = fields.String(allow_none=True, **CODE)
    quality_customer = fields.Boolean()


class PartyOut(ma.Schema):
    public_id = fields.String()
    code = fields.String()
    name = fields.String()
    role = fields.String()
    status = fields.String()
    region_code = fields.String()
    customer_type_code = fields.String()
    grade_code = fields.String(allow_none=True)
    owner_name = fields.String()
    contact_phone = fields.String()
    address = fields.String()
    quality_customer = fields.Boolean()
    created_at = UtcDateTime()
    groups = fields.List(fields.String())
    tags = fields.List(fields.String())
    metadata = fields.Dict()


class PartyListArgs(PageArgs):
    role = fields.String(validate=validate.OneOf(("brand", "distributor", "store")))
    status = fields.String(validate=validate.OneOf(("active", "frozen")))
    region = fields.String(**CODE, metadata={"description": "Region code; includes its subtree."})
    customer_type = fields.String(**CODE, metadata={"description": "Includes its subtree."})
    grade = fields.String(**CODE)
    group = fields.String(**CODE)
    tag = fields.String(validate=validate.Length(min=1, max=64))
    buyer_of = fields.String(**CODE, metadata={"description": "Only buyers of this seller."})


class PartyPage(ma.Schema):
    items = fields.List(fields.Nested(PartyOut))
    next_cursor = fields.String(allow_none=True)


# --- API keys --------------------------------------------------------------------


class ApiKeyIn(StrictSchema):
    party = fields.String(required=True, **CODE)
    scopes = fields.List(fields.String(validate=validate.OneOf(("storefront", "manage", "finance"))),
                         required=True, validate=validate.Length(min=1, max=2))
    name = fields.String(load_default="", validate=validate.Length(max=200))


class ApiKeyOut(ma.Schema):
    key_id = fields.String()
    party_code = fields.String()
    name = fields.String()
    scopes = fields.List(fields.String())
    created_at = UtcDateTime()
    revoked_at = UtcDateTime(allow_none=True)


class IssuedKeyOut(ma.Schema):
    key = fields.Nested(ApiKeyOut)
    token = fields.String(metadata={"description": "Shown once: send as `Authorization: Bearer <token>`."})


ApiKeyList = _list_of(ApiKeyOut, "ApiKeyList")


class AuditOut(ma.Schema):
    id = fields.Integer()
    at = UtcDateTime()
    actor = fields.String()
    action = fields.String()
    subject_type = fields.String()
    subject = fields.String()
    details = fields.Dict()


class AuditArgs(StrictSchema):
    limit = fields.Integer(load_default=LIMIT_DEFAULT, validate=validate.Range(min=1, max=LIMIT_MAX))
    after = fields.Integer(metadata={"description": "The `next_cursor` of the previous page."})
    subject_type = fields.String(validate=validate.Length(min=1, max=32))
    subject = fields.String(validate=validate.Length(min=1, max=80))
    action = fields.String(validate=validate.Length(min=1, max=64))


class AuditPage(ma.Schema):
    items = fields.List(fields.Nested(AuditOut))
    next_cursor = fields.Integer(allow_none=True)


# --- imports and exports ------------------------------------------------------------


class RowErrorOut(ma.Schema):
    line = fields.Integer()
    field = fields.String()
    reason = fields.String()


class ImportReportOut(ma.Schema):
    import_id = fields.String()
    kind = fields.String()
    status = fields.String(metadata={"description": "applied, or rejected (nothing written)."})
    rows = fields.Integer()
    created = fields.Integer()
    updated = fields.Integer()
    unchanged = fields.Integer()
    error_count = fields.Integer()
    errors = fields.List(fields.Nested(RowErrorOut))


class ImportListArgs(StrictSchema):
    kind = fields.String(validate=validate.Length(min=1, max=32))
    after = fields.String(**CURSOR)
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=LIMIT_MAX))


class ImportPage(ma.Schema):
    items = fields.List(fields.Nested(ImportReportOut))
    next_cursor = fields.String(allow_none=True)


class ExportArgs(StrictSchema):
    role = fields.String(validate=validate.OneOf(("brand", "distributor", "store")),
                         metadata={"description": "parties only: one role."})
    owner = fields.String(**CODE, metadata={"description": "strategies: one owner's."})
    seller = fields.String(**CODE, metadata={"description": "relationships, coverage: one seller's."})


# --- catalog -------------------------------------------------------------------------

class CategoryIn(StrictSchema):
    code = fields.String(required=True, **CODE)
    name = fields.String(required=True, **NAME)
    parent = fields.String(load_default=None, allow_none=True, **CODE)
    sort = fields.Integer(load_default=0, strict=True)


class CategoryOut(ma.Schema):
    public_id = fields.String()
    code = fields.String()
    name = fields.String()
    parent_code = fields.String(allow_none=True)
    sort = fields.Integer()


class UnitIn(StrictSchema):
    code = fields.String(required=True, **CODE)
    name = fields.String(required=True, **NAME)


class UnitOut(ma.Schema):
    public_id = fields.String()
    code = fields.String()
    name = fields.String()


CategoryList = _list_of(CategoryOut, "CategoryList")
UnitList = _list_of(UnitOut, "UnitList")

STATUS = {"validate": validate.OneOf(("active", "inactive"))}


class ProductIn(StrictSchema):
    code = fields.String(required=True, **CODE)
    name = fields.String(required=True, **NAME)
    category = fields.String(required=True, **CODE)
    description = fields.String(load_default="", validate=validate.Length(max=1000))
    status = fields.String(load_default="active", **STATUS)


class ProductPatch(StrictSchema):
    name = fields.String(**NAME)
    category = fields.String(**CODE)
    description = fields.String(validate=validate.Length(max=1000))
    status = fields.String(**STATUS)


class ProductOut(ma.Schema):
    public_id = fields.String()
    code = fields.String()
    name = fields.String()
    category_code = fields.String()
    status = fields.String()
    description = fields.String()


class ProductListArgs(PageArgs):
    category = fields.String(**CODE, metadata={"description": "Includes its subtree."})
    status = fields.String(**STATUS)


class ProductPage(ma.Schema):
    items = fields.List(fields.Nested(ProductOut))
    next_cursor = fields.String(allow_none=True)


class SkuIn(StrictSchema):
    code = fields.String(required=True, **CODE)
    name = fields.String(required=True, **NAME)
    product = fields.String(required=True, **CODE)
    unit = fields.String(required=True, **CODE)
    list_price_minor = fields.Integer(required=True, strict=True,
                                      metadata={"description": "Integer minor units (fen)."})
    currency = fields.String(load_default="CNY", validate=validate.Length(equal=3))
    spec = fields.String(load_default="", validate=validate.Length(max=200))
    barcode = fields.String(load_default="", validate=validate.Length(max=64))
    status = fields.String(load_default="active", **STATUS)


class SkuPatch(StrictSchema):
    name = fields.String(**NAME)
    list_price_minor = fields.Integer(strict=True)
    spec = fields.String(validate=validate.Length(max=200))
    barcode = fields.String(validate=validate.Length(max=64))
    status = fields.String(**STATUS)


class SkuOut(ma.Schema):
    public_id = fields.String()
    code = fields.String()
    name = fields.String()
    product_code = fields.String()
    unit_code = fields.String()
    spec = fields.String()
    barcode = fields.String()
    list_price_minor = fields.Integer()
    currency = fields.String()
    status = fields.String()
    updated_at = UtcDateTime()


class SkuListArgs(PageArgs):
    category = fields.String(**CODE, metadata={"description": "Includes its subtree."})
    product = fields.String(**CODE)
    status = fields.String(**STATUS)


class SkuPage(ma.Schema):
    items = fields.List(fields.Nested(SkuOut))
    next_cursor = fields.String(allow_none=True)


# --- relationships, sale permissions, coverage ------------------------------------------

PRODUCT_SCOPE = {"metadata": {"description": 'What may be bought or sold: {"all": true}, or '
                              '{"categories": [codes], "skus": [codes]} (categories with subtrees).'}}


class RelationshipIn(StrictSchema):
    seller = fields.String(required=True, **CODE)
    buyer = fields.String(required=True, **CODE)
    product_scope = fields.Dict(load_default=None, allow_none=True, **PRODUCT_SCOPE)
    valid_from = UtcDateTime(load_default=None, allow_none=True)
    valid_to = UtcDateTime(load_default=None, allow_none=True)


class RelationshipPatch(StrictSchema):
    status = fields.String(validate=validate.OneOf(("active", "suspended", "ended")))
    product_scope = fields.Dict(**PRODUCT_SCOPE)
    valid_from = UtcDateTime()
    valid_to = UtcDateTime(allow_none=True)


class RelationshipOut(ma.Schema):
    public_id = fields.String()
    seller_code = fields.String()
    buyer_code = fields.String()
    status = fields.String()
    origin = fields.String()
    product_scope = fields.Dict()
    valid_from = UtcDateTime()
    valid_to = UtcDateTime(allow_none=True)
    created_at = UtcDateTime()
    updated_at = UtcDateTime()


class RelationshipListArgs(PageArgs):
    seller = fields.String(**CODE)
    buyer = fields.String(**CODE)
    status = fields.String(validate=validate.OneOf(("active", "suspended", "ended")))
    origin = fields.String(validate=validate.OneOf(("manual", "coverage")))


class RelationshipPage(ma.Schema):
    items = fields.List(fields.Nested(RelationshipOut))
    next_cursor = fields.String(allow_none=True)


class SalePermissionIn(StrictSchema):
    product_scope = fields.Dict(required=True, **PRODUCT_SCOPE)
    regions = fields.List(fields.String(**CODE), load_default=list,
                          metadata={"description": "Region codes (with subtrees); [] = anywhere."})


class SalePermissionOut(ma.Schema):
    party_code = fields.String()
    product_scope = fields.Dict()
    regions = fields.List(fields.String())
    updated_at = UtcDateTime(allow_none=True)
    implicit = fields.Boolean()


class CoverageIn(StrictSchema):
    distributor = fields.String(required=True, **CODE)
    stores = fields.List(fields.String(**CODE), load_default=None, allow_none=True,
                         validate=validate.Length(max=100_000))
    region = fields.String(load_default=None, allow_none=True, **CODE)
    customer_type = fields.String(load_default=None, allow_none=True, **CODE)
    product_scope = fields.Dict(load_default=None, allow_none=True, **PRODUCT_SCOPE)


class CoverageOut(ma.Schema):
    matched = fields.Integer()
    created = fields.Integer()
    reactivated = fields.Integer()
    updated = fields.Integer()
    ended = fields.Integer()
    unchanged = fields.Integer()


class CoverageListArgs(PageArgs):
    distributor = fields.String(required=True, **CODE)
    status = fields.String(validate=validate.OneOf(("active", "suspended", "ended")))


# --- price strategies and prices -------------------------------------------------------

class TierSchema(StrictSchema):
    sku = fields.String(load_default=None, allow_none=True, **CODE,
                        metadata={"description": "null: every SKU in scope (percent rule only)."})
    min_qty = fields.Integer(load_default=1, strict=True)
    price_minor = fields.Integer(load_default=None, allow_none=True, strict=True,
                                 metadata={"description": "fixed rule: unit price in minor units."})
    percent_bp = fields.Integer(load_default=None, allow_none=True, strict=True,
                                metadata={"description": "percent rule: basis points of list price."})


CUSTOMER_SCOPE = {"metadata": {"description": "Buyers it applies to: any of parties, regions, "
                               "customer_types, grades, groups, tags (lists of codes); a buyer must "
                               "match every dimension given; {} = every buyer."}}


class StrategyIn(StrictSchema):
    code = fields.String(required=True, **CODE)
    owner = fields.String(required=True, **CODE)
    name = fields.String(required=True, **NAME)
    rule = fields.String(required=True, validate=validate.OneOf(("fixed", "percent")))
    priority = fields.Integer(load_default=0, strict=True)
    currency = fields.String(load_default="CNY", validate=validate.Length(equal=3))
    product_scope = fields.Dict(required=True, **PRODUCT_SCOPE)
    customer_scope = fields.Dict(load_default=dict, **CUSTOMER_SCOPE)
    valid_from = UtcDateTime(load_default=None, allow_none=True)
    valid_to = UtcDateTime(load_default=None, allow_none=True)
    status = fields.String(load_default="active", **STATUS)
    tiers = fields.List(fields.Nested(TierSchema), required=True,
                        validate=validate.Length(min=1, max=10_000))


class StrategyPatch(StrictSchema):
    name = fields.String(**NAME)
    status = fields.String(**STATUS)
    priority = fields.Integer(strict=True)
    product_scope = fields.Dict(**PRODUCT_SCOPE)
    customer_scope = fields.Dict(**CUSTOMER_SCOPE)
    valid_from = UtcDateTime()
    valid_to = UtcDateTime(allow_none=True)
    tiers = fields.List(fields.Nested(TierSchema), validate=validate.Length(min=1, max=10_000))


class TierOut(ma.Schema):
    sku = fields.String(allow_none=True)
    min_qty = fields.Integer()
    price_minor = fields.Integer(allow_none=True)
    percent_bp = fields.Integer(allow_none=True)


class StrategyOut(ma.Schema):
    public_id = fields.String()
    code = fields.String()
    name = fields.String()
    owner_code = fields.String()
    status = fields.String()
    priority = fields.Integer()
    rule = fields.String()
    currency = fields.String()
    product_scope = fields.Dict()
    customer_scope = fields.Dict()
    valid_from = UtcDateTime()
    valid_to = UtcDateTime(allow_none=True)
    tiers = fields.List(fields.Nested(TierOut))
    version = fields.Integer()
    created_at = UtcDateTime()
    updated_at = UtcDateTime()


class StrategyListArgs(PageArgs):
    owner = fields.String(**CODE)
    status = fields.String(**STATUS)


class StrategyPage(ma.Schema):
    items = fields.List(fields.Nested(StrategyOut))
    next_cursor = fields.String(allow_none=True)


class PriceListArgs(StrictSchema):
    buyer = fields.String(**CODE, metadata={"description": "Managers: which buyer (default: you)."})
    at = UtcDateTime(metadata={"description": "Prices at this instant (default now)."})
    after = fields.String(**CURSOR)
    limit = fields.Integer(load_default=None, allow_none=True,
                           validate=validate.Range(min=1, max=20_000),
                           metadata={"description": "Page size; default the whole list."})


class PriceArgs(StrictSchema):
    buyer = fields.String(**CODE, metadata={"description": "Managers: which buyer (default: you)."})
    at = UtcDateTime(metadata={"description": "Price at this instant (default now)."})
    quantity = fields.Integer(load_default=1, validate=validate.Range(min=1, max=2**31 - 1))


class PriceLineOut(ma.Schema):
    sku = fields.String()
    unit_price_minor = fields.Integer()
    currency = fields.String()
    source = fields.String(metadata={"description": "strategy, or list_price when none applies."})
    strategy_code = fields.String(allow_none=True)
    strategy_version = fields.Integer(allow_none=True)
    list_price_minor = fields.Integer()


class PriceListOut(ma.Schema):
    seller = fields.String()
    buyer = fields.String()
    at = UtcDateTime()
    relationship = fields.String()
    lines = fields.List(fields.Nested(PriceLineOut))
    next_cursor = fields.String(allow_none=True)


class CandidateOut(ma.Schema):
    code = fields.String()
    version = fields.Integer()
    eligible = fields.Boolean()
    reason = fields.String(allow_none=True, metadata={"description": "Why it could not apply."})
    rank = fields.Integer(allow_none=True)
    unit_price_minor = fields.Integer(allow_none=True)
    tier = fields.Nested(TierOut, allow_none=True)
    product_specificity = fields.Integer(allow_none=True)
    customer_specificity = fields.List(fields.Integer(), allow_none=True)


class ResolutionOut(ma.Schema):
    sku = fields.String()
    quantity = fields.Integer()
    unit_price_minor = fields.Integer()
    line_total_minor = fields.Integer()
    currency = fields.String()
    list_price_minor = fields.Integer()
    source = fields.String()
    strategy_code = fields.String(allow_none=True)
    strategy_version = fields.Integer(allow_none=True)
    tier = fields.Nested(TierOut, allow_none=True)
    decided_by = fields.String(allow_none=True, metadata={
        "description": "The criterion that put the winner ahead of the runner-up."})
    candidates = fields.List(fields.Nested(CandidateOut), metadata={
        "description": "The winner first, then the other eligible strategies in rank order, "
                       "then those that could not apply, with their reason."})


class PriceQuoteOut(ma.Schema):
    seller = fields.String()
    buyer = fields.String()
    at = UtcDateTime()
    relationship = fields.String()
    resolution = fields.Nested(ResolutionOut)


# --- dynamic tags and purchase habits -----------------------------------------------------

class DynamicTagIn(StrictSchema):
    code = fields.String(required=True, validate=validate.Length(min=1, max=64))
    name = fields.String(required=True, **NAME)
    rule = fields.Dict(required=True, metadata={"description": '{"all": [{"field", "op", "value"}, …]}'})


class DynamicTagPatch(StrictSchema):
    name = fields.String(**NAME)
    rule = fields.Dict()


class DynamicTagOut(ma.Schema):
    public_id = fields.String()
    code = fields.String()
    name = fields.String()
    rule = fields.Dict()
    created_at = UtcDateTime()
    computed_at = UtcDateTime(allow_none=True)
    member_count = fields.Integer()


DynamicTagList = _list_of(DynamicTagOut, "DynamicTagList")


class RecomputeOut(ma.Schema):
    tag = fields.Nested(DynamicTagOut)
    matched = fields.Integer()
    added = fields.Integer()
    removed = fields.Integer()


class HabitOut(ma.Schema):
    party_code = fields.String()
    currency = fields.String()
    order_count = fields.Integer()
    total_minor = fields.Integer()
    average_order_minor = fields.Integer()
    first_order_at = UtcDateTime()
    last_order_at = UtcDateTime()
    orders_per_month = fields.Decimal(as_string=True, allow_none=True)
    top_categories = fields.List(fields.Tuple((fields.String(), fields.Integer())))
    category_totals = fields.Dict(keys=fields.String(), values=fields.Integer())
    updated_at = UtcDateTime()


# --- orders ----------------------------------------------------------------------------------

ORDER_STATES = ("placed", "held", "awaiting_payment", "paid", "shipped", "delivered",
                "completed", "cancelled")


class OrderLineIn(StrictSchema):
    """Only what the buyer chooses: the server sets every price and total."""

    sku = fields.String(required=True, **CODE)
    quantity = fields.Integer(required=True, strict=True,
                              validate=validate.Range(min=1, max=1_000_000))


class OrderIn(StrictSchema):
    seller = fields.String(required=True, **CODE)
    lines = fields.List(fields.Nested(OrderLineIn), required=True,
                        validate=validate.Length(min=1, max=500))
    client_reference = fields.String(load_default=None, allow_none=True,
                                      validate=validate.Length(min=1, max=64),
                                      metadata={"description": "Your order number: placing "
                                                "the same one again returns the first order."})
    note = fields.String(load_default="", validate=validate.Length(max=500))
    plan = fields.List(fields.Nested("PlanPartIn"), load_default=None, allow_none=True,
                       validate=validate.Length(min=1, max=4), metadata={
                           "description": "Fund it at once: the payment plan's parts, adding "
                                          "up to the total the server computes."})


class OrderLineOut(FastDumpSchema):
    line_no = fields.Integer()
    sku = fields.String()
    quantity = fields.Integer()
    unit_price_minor = fields.Integer()
    list_price_minor = fields.Integer()
    price_source = fields.String()
    strategy_code = fields.String(allow_none=True)
    strategy_version = fields.Integer(allow_none=True)
    discount_minor = fields.Integer()
    line_total_minor = fields.Integer()


class OrderOut(FastDumpSchema):
    public_id = fields.String()
    buyer_code = fields.String()
    seller_code = fields.String()
    relationship = fields.String()
    state = fields.String()
    currency = fields.String()
    subtotal_minor = fields.Integer()
    discount_minor = fields.Integer()
    total_minor = fields.Integer()
    client_reference = fields.String(allow_none=True)
    note = fields.String()
    placed_at = UtcDateTime()
    updated_at = UtcDateTime()
    version = fields.Integer()
    lines = fields.List(fields.Nested(OrderLineOut))
    allowed_actions = fields.List(fields.String())


class OrderListArgs(PageArgs):
    role = fields.String(load_default="buyer", validate=validate.OneOf(("buyer", "seller")),
                         metadata={"description": "Your orders as buyer, or your sales as seller."})
    state = fields.String(validate=validate.OneOf(ORDER_STATES))
    party = fields.String(**CODE, metadata={"description": "Brand managers: whose orders."})


class OrderPage(FastDumpSchema):
    items = fields.List(fields.Nested(OrderOut))
    next_cursor = fields.String(allow_none=True)


class CancelIn(StrictSchema):
    reason = fields.String(load_default="", validate=validate.Length(max=500))


class OrderEventOut(ma.Schema):
    action = fields.String()
    from_state = fields.String(allow_none=True)
    to_state = fields.String()
    actor = fields.String()
    at = UtcDateTime()
    details = fields.Dict()


OrderEventList = _list_of(OrderEventOut, "OrderEventList")
OrderList = _list_of(OrderOut, "OrderList")


class OrderLinkIn(StrictSchema):
    downstream = fields.String(required=True, validate=validate.Length(min=1, max=40))


class BalanceOut(ma.Schema):
    posted_minor = fields.Integer()
    reserved_minor = fields.Integer(metadata={"description": "Held by orders not yet captured."})
    available_minor = fields.Integer()


class CreditBalanceOut(ma.Schema):
    limit_minor = fields.Integer(metadata={"description": "The effective limit: the line's own "
                                                          "plus unexpired temporary increases."})
    base_limit_minor = fields.Integer()
    increases_minor = fields.Integer()
    used_minor = fields.Integer(metadata={"description": "Owed on captured orders."})
    reserved_minor = fields.Integer(metadata={"description": "Held by orders not yet captured."})
    available_minor = fields.Integer()
    valid_to = UtcDateTime(allow_none=True)
    status = fields.String(allow_none=True, metadata={"description": "null: no credit line."})
    terms_kind = fields.String(allow_none=True)
    terms_days = fields.Integer(allow_none=True)
    due_day = fields.Integer(allow_none=True)
    source = fields.String(allow_none=True, metadata={
        "description": "manual, or grade_default: follows the seller's default for the grade."})
    due_minor = fields.Integer(metadata={"description": "Owed on delivered orders, not yet overdue."})
    overdue_minor = fields.Integer(metadata={"description": "Owed past its due date."})
    next_due_at = UtcDateTime(allow_none=True)


class BalancesOut(ma.Schema):
    buyer = fields.String()
    seller = fields.String()
    currency = fields.String()
    prepaid = fields.Nested(BalanceOut)
    rebate = fields.Nested(BalanceOut)
    credit = fields.Nested(CreditBalanceOut)


class CreditLineIn(StrictSchema):
    limit_minor = fields.Integer(required=True, strict=True)
    terms_kind = fields.String(load_default="days_after_delivery",
                               validate=validate.OneOf(("days_after_delivery", "day_of_month")))
    terms_days = fields.Integer(load_default=30, strict=True, metadata={
        "description": "Due this many days after delivery (day_of_month: the first due_day "
                       "on or after delivery + terms_days)."})
    due_day = fields.Integer(load_default=None, allow_none=True, strict=True,
                             metadata={"description": "1-28, with day_of_month terms."})
    valid_to = UtcDateTime(load_default=None, allow_none=True)
    block_overdue_days = fields.Integer(
        load_default=None, allow_none=True, strict=True,
        metadata={"description": "Refuse new credit while a debt is overdue by more days than this."})
    status = fields.String(load_default="active", validate=validate.OneOf(("active", "frozen")))
    currency = fields.String(load_default="CNY", validate=validate.Length(equal=3))


class BalanceArgs(StrictSchema):
    buyer = fields.String(**CODE, metadata={"description": "Managers: which buyer (default: you)."})


class DepositIn(StrictSchema):
    buyer = fields.String(required=True, **CODE)
    seller = fields.String(required=True, **CODE)
    amount_minor = fields.Integer(required=True, strict=True)
    currency = fields.String(load_default="CNY", validate=validate.Length(equal=3))
    bank_reference = fields.String(required=True, validate=validate.Length(min=1, max=64),
                                   metadata={"description": "Credited once per seller."})


class CreditedOut(ma.Schema):
    buyer = fields.String()
    seller = fields.String()
    amount_minor = fields.Integer()
    currency = fields.String()
    reference = fields.String()
    entry_id = fields.String()
    balances = fields.Nested(BalancesOut)


class RebateGrantIn(StrictSchema):
    buyer = fields.String(required=True, **CODE)
    seller = fields.String(required=True, **CODE)
    amount_minor = fields.Integer(required=True, strict=True)
    currency = fields.String(load_default="CNY", validate=validate.Length(equal=3))
    reference = fields.String(required=True, validate=validate.Length(min=1, max=64),
                              metadata={"description": "Granted once per seller."})
    reason = fields.String(required=True, validate=validate.Length(min=1, max=500))


class RebateRuleIn(StrictSchema):
    max_percent_bp = fields.Integer(load_default=None, allow_none=True, strict=True)
    max_amount_minor = fields.Integer(load_default=None, allow_none=True, strict=True)


class RebateRuleOut(ma.Schema):
    seller = fields.String()
    max_percent_bp = fields.Integer(allow_none=True)
    max_amount_minor = fields.Integer(allow_none=True)


class PlanPartIn(StrictSchema):
    method = fields.String(required=True,
                           validate=validate.OneOf(("prepaid", "rebate", "credit", "offline", "gateway")))
    amount_minor = fields.Integer(required=True, strict=True)


class PlanIn(StrictSchema):
    parts = fields.List(fields.Nested(PlanPartIn), required=True,
                        validate=validate.Length(min=1, max=4),
                        metadata={"description": "Must add up to the order total to the fen."})


class TransferIn(StrictSchema):
    amount_minor = fields.Integer(required=True, strict=True)
    bank_reference = fields.String(required=True, validate=validate.Length(min=1, max=64))


class ShipIn(StrictSchema):
    tracking = fields.String(load_default="", validate=validate.Length(max=100))


class DebtOut(ma.Schema):
    order = fields.String()
    amount_minor = fields.Integer()
    repaid_minor = fields.Integer()
    refunded_minor = fields.Integer(metadata={"description": "Forgiven by returns."})
    outstanding_minor = fields.Integer()
    delivered_at = UtcDateTime(allow_none=True)
    due_at = UtcDateTime(allow_none=True)
    bucket = fields.String(metadata={"description": "not_due, 0-30, 31-60, 61-90 or 90+ days overdue."})


class CreditAgingOut(ma.Schema):
    buyer = fields.String()
    seller = fields.String()
    at = UtcDateTime()
    outstanding_minor = fields.Integer()
    buckets = fields.Dict(keys=fields.String(), values=fields.Integer())
    debts = fields.List(fields.Nested(DebtOut))


class AgingArgs(StrictSchema):
    buyer = fields.String(**CODE, metadata={"description": "Managers: which buyer (default: you)."})
    at = UtcDateTime(metadata={"description": "Aged at this instant (default now)."})


class RepaymentIn(StrictSchema):
    buyer = fields.String(required=True, **CODE)
    seller = fields.String(required=True, **CODE)
    amount_minor = fields.Integer(required=True, strict=True)
    bank_reference = fields.String(required=True, validate=validate.Length(min=1, max=64))
