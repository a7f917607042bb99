"""Parties, coverage, catalog, prices, promotions, credit policies, orders and
the storefront REST API. May import: ledger, payments, clearing. (Later issue.)"""
from ledger import DomainError

from .errors import (
    AccessDenied,
    AuthenticationFailed,
    ChannelError,
    CustomerTypeExists,
    CustomerTypeNotFound,
    GradeExists,
    GradeNotFound,
    GroupExists,
    GroupNotFound,
    InvalidParty,
    PartyExists,
    PartyNotFound,
    RegionExists,
    RegionNotFound,
)
from .parties import (
    add_to_group,
    create_customer_type,
    create_grade,
    create_group,
    create_party,
    create_region,
    get_party,
    is_buyer_of,
    list_customer_types,
    list_grades,
    list_groups,
    list_parties,
    list_regions,
    remove_from_group,
    tag_party,
    untag_party,
    update_party,
)
from .values import CustomerTypeView, GradeView, GroupView, PartyView, RegionView

__all__ = [
    "DomainError",
    "AccessDenied", "AuthenticationFailed", "is_buyer_of", "list_customer_types",
    "list_grades", "list_groups", "list_regions",
    "ChannelError", "CustomerTypeExists", "CustomerTypeNotFound", "GradeExists",
    "GradeNotFound", "GroupExists", "GroupNotFound", "InvalidParty", "PartyExists",
    "PartyNotFound", "RegionExists", "RegionNotFound",
    "add_to_group", "create_customer_type", "create_grade", "create_group", "create_party",
    "create_region", "get_party", "list_parties", "remove_from_group", "tag_party",
    "untag_party", "update_party",
    "CustomerTypeView", "GradeView", "GroupView", "PartyView", "RegionView",
]
