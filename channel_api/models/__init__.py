"""ORM rows of channel_api, one module per area; they never leave the
package (use cases return the values of ``values.py``)."""
from .access import ApiKey, CacheVersion, IdempotencyRecord, ImportRun
from .catalog import CATALOG_STATUSES, Category, Product, Sku, Unit
from .network import (
    PARTY_ROLES,
    PARTY_STATUSES,
    SUPPLY_ORIGINS,
    SUPPLY_STATUSES,
    AuditRecord,
    CustomerType,
    DynamicTag,
    Grade,
    Party,
    PartyGroup,
    PartyGroupMember,
    PartyTag,
    PurchaseHabit,
    Region,
    SalePermission,
    SupplyRelationship,
)
from .credit import (
    POLICY_ACTIONS,
    TERMS_KINDS,
    CreditDebt,
    CreditDefault,
    CreditIncrease,
    CreditLine,
    CreditPolicy,
    OrderHold,
)
from .events import (
    DELIVERY_STATES,
    ENDPOINT_STATUSES,
    EventParty,
    OutboxEvent,
    WebhookDelivery,
    WebhookEndpoint,
)
from .orders import (
    PART_METHODS,
    Order,
    OrderEvent,
    OrderLine,
    OrderLink,
    PaymentPart,
    RebateRule,
)
from .returns import (
    REMITTANCE_PURPOSES,
    REMITTANCE_STATES,
    RETURN_STATES,
    OrderReturn,
    Remittance,
    ReturnLine,
)
from .pricing import STRATEGY_RULES, STRATEGY_STATUSES, PriceStrategy, PriceTier

__all__ = [
    "ApiKey", "CacheVersion", "IdempotencyRecord", "ImportRun",
    "CATALOG_STATUSES", "Category", "Product", "Sku", "Unit",
    "PARTY_ROLES", "PARTY_STATUSES", "SUPPLY_ORIGINS", "SUPPLY_STATUSES", "AuditRecord",
    "CustomerType", "DynamicTag", "Grade", "Party", "PartyGroup", "PartyGroupMember",
    "PartyTag", "PurchaseHabit", "Region", "SalePermission", "SupplyRelationship",
    "STRATEGY_RULES", "STRATEGY_STATUSES", "PriceStrategy", "PriceTier",
    "PART_METHODS", "Order", "OrderEvent", "OrderLine", "OrderLink", "PaymentPart",
    "RebateRule",
    "POLICY_ACTIONS", "TERMS_KINDS", "CreditDebt", "CreditDefault", "CreditIncrease",
    "CreditLine", "CreditPolicy", "OrderHold",
    "REMITTANCE_PURPOSES", "REMITTANCE_STATES", "RETURN_STATES", "OrderReturn", "Remittance",
    "ReturnLine",
    "DELIVERY_STATES", "ENDPOINT_STATUSES", "EventParty", "OutboxEvent", "WebhookDelivery",
    "WebhookEndpoint",
]
