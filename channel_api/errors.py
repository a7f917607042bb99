"""Named failures of the channel network.

Like ``ledger.errors`` (and on the same ``DomainError`` base): each failure
is a subclass of :class:`ChannelError`
with a stable machine-readable ``code`` and an HTTP status hint for the edge;
``details`` names the offending field where there is one.
"""
from __future__ import annotations

from ledger import DomainError


class ChannelError(DomainError):
    code = "channel_error"


class InvalidParty(ChannelError):
    """Bad input for a party, region, customer type, grade, group or tag;
    ``details["field"]`` names the field."""

    code = "invalid_party"


class PartyNotFound(ChannelError):
    code = "party_not_found"
    http_status = 404


class PartyExists(ChannelError):
    """The code is taken by a party with different attributes."""

    code = "party_exists"
    http_status = 409


class RegionNotFound(ChannelError):
    code = "region_not_found"
    http_status = 404


class RegionExists(ChannelError):
    code = "region_exists"
    http_status = 409


class CustomerTypeNotFound(ChannelError):
    code = "customer_type_not_found"
    http_status = 404


class CustomerTypeExists(ChannelError):
    code = "customer_type_exists"
    http_status = 409


class GradeNotFound(ChannelError):
    code = "grade_not_found"
    http_status = 404


class GradeExists(ChannelError):
    code = "grade_exists"
    http_status = 409


class GroupNotFound(ChannelError):
    code = "group_not_found"
    http_status = 404


class GroupExists(ChannelError):
    code = "group_exists"
    http_status = 409


class InvalidInput(ChannelError):
    """Bad input for the catalog, relationships, coverage, permissions,
    strategies, tags or keys; ``details["field"]`` names the field."""

    code = "invalid_input"


class NotFound(ChannelError):
    """Base of the "no such record" errors below (HTTP 404)."""

    code = "not_found"
    http_status = 404


class Exists(ChannelError):
    """Base of the "code taken with other attributes" errors (HTTP 409)."""

    code = "exists"
    http_status = 409


class CategoryNotFound(NotFound):
    code = "category_not_found"


class CategoryExists(Exists):
    code = "category_exists"


class UnitNotFound(NotFound):
    code = "unit_not_found"


class UnitExists(Exists):
    code = "unit_exists"


class ProductNotFound(NotFound):
    code = "product_not_found"


class ProductExists(Exists):
    code = "product_exists"


class SkuNotFound(NotFound):
    code = "sku_not_found"


class SkuExists(Exists):
    code = "sku_exists"


class RelationshipNotFound(NotFound):
    code = "relationship_not_found"


class StrategyNotFound(NotFound):
    code = "strategy_not_found"


class StrategyExists(Exists):
    code = "strategy_exists"


class DynamicTagNotFound(NotFound):
    code = "dynamic_tag_not_found"


class DynamicTagExists(Exists):
    code = "dynamic_tag_exists"


class NotPurchasable(ChannelError):
    """The buyer may not buy this SKU from this seller (no active
    relationship, outside the purchase or sale permission, inactive SKU or
    party); ``details["reason"]`` says which."""

    code = "not_purchasable"
    http_status = 422


class ImportRejected(ChannelError):
    """A CSV file with bad rows: nothing was written; ``details["errors"]``
    lists every bad row as ``{line, field, reason}``."""

    code = "import_rejected"
    http_status = 422


class AuthenticationFailed(ChannelError):
    code = "authentication_failed"
    http_status = 401


class AccessDenied(ChannelError):
    """The caller's key may not do this (wrong scope, or another party's data)."""

    code = "access_denied"
    http_status = 403


class IdempotencyKeyReused(ChannelError):
    """The Idempotency-Key was used before for a different request."""

    code = "idempotency_key_reused"
    http_status = 409


class OrderNotFound(NotFound):
    code = "order_not_found"


class OrderExists(Exists):
    """The buyer's client_reference names another order with other content."""

    code = "order_exists"


class CreditUnavailable(ChannelError):
    """The plan's credit part cannot be used: no line, a frozen line, or one
    not valid now; ``details["reason"]`` says which."""

    code = "credit_unavailable"
    http_status = 422


class RemittanceExists(Exists):
    """A live remittance already carries this bank reference at this seller."""

    code = "remittance_exists"


class GatewayDown(ChannelError):
    """The payment gateway did not accept a request; try again later."""

    code = "gateway_unavailable"
    http_status = 503


class GatewayCannotCollect(ChannelError):
    """The gateway, as configured here, cannot collect a payment in the
    payee's own merchant (WeChat Pay as a direct merchant, an Alipay seller
    that has not authorised the platform's app): nothing is collected in
    the platform's name instead."""

    code = "sub_merchant_unsupported"
    http_status = 409


class PayoutNotFound(NotFound):
    code = "payout_not_found"


class BankAccountMissing(ChannelError):
    """A payout needs the party's registered bank account in its currency."""

    code = "bank_account_missing"
    http_status = 422


class PayoutRefused(ChannelError):
    """A payout cannot be requested: a frozen party, a wallet without the
    money, the same request key for another amount."""

    code = "payout_refused"
    http_status = 422
