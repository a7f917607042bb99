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
